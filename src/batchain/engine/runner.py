"""Drives one job: items run in a window, batch rounds flush and poll, results are
recorded, and a stop is graceful. The parts it drives are wired by
:mod:`batchain.engine.session`; each owns its state (lease and lifecycle, inputs, feeding,
rounds, results), and the run loop's own state is :class:`~batchain.engine.lifecycle.RunControl`.

Items run as ordinary ``chain.ainvoke`` coroutines (in batch mode, ``prompt | model |
parser`` items are rows instead: see :mod:`batchain.engine.bulk`). A resumed run first
re-runs the stored items that have no result (their finished model calls replay from the
store), then reads on from the input iterator where the job stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import socket
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig

from batchain.chains.fastpath import FastChain
from batchain.engine.batching import BatchCoordinator, CallCancelled
from batchain.engine.bulk import BulkItems
from batchain.engine.calls import CallManager
from batchain.engine.claims import Claims
from batchain.engine.feed import Feeder, Returns, Window
from batchain.engine.history import ProgressHistory
from batchain.engine.hook import ACTIVE, CallContext, Eviction, install
from batchain.engine.inputs import Inputs, InputSource
from batchain.engine.lifecycle import JobLifecycle, Lease, Purpose, RunControl
from batchain.engine.results import Results
from batchain.engine.rounds import Rounds
from batchain.engine.scheduler import Scheduler
from batchain.errors import InvalidPriority, LeaseLost, StoreError
from batchain.priority import PriorityRule
from batchain.providers.base import redact
from batchain.states import JobStatus
from batchain.store.base import Store

__all__ = ["JobRunner", "RunParts"]


@dataclass(slots=True)
class RunParts:
    """What :func:`batchain.engine.session.wire` builds for a run, from its options."""

    store: Store
    job_id: str
    chain: Runnable[Any, Any]
    mode: str
    control: RunControl
    lease: Lease
    changed: asyncio.Event
    scheduler: Scheduler
    calls: CallManager
    batch: BatchCoordinator | None
    fast: FastChain | None
    results: Results
    window: Window
    inputs: Inputs
    #: auto mode: epoch seconds by which everything should be done, and the margin
    deadline: float | None
    deadline_margin: float
    #: which path items take and, when not the fastest, why (recorded in the job's stats)
    paths: dict[str, str]
    callbacks: list[Any]
    #: what each item's chain is invoked with (tags, metadata, run_name, configurable...)
    item_config: RunnableConfig
    threads: int
    timeout: float
    #: auto mode: where each item's level comes from (None: every item normal)
    priority: PriorityRule | None
    #: batch mode: items evicted from the window while their calls are at a provider
    returns: Returns | None = None
    #: realtime: the chunks of items this run holds (other processes may hold others)
    claims: Claims | None = None


class JobRunner:
    """Runs (or resumes) one job to the end, or until stopped."""

    def __init__(self, parts: RunParts) -> None:
        install()
        p = parts
        self.parts = p
        self.store = p.store
        self.job_id = p.job_id
        self.chain = p.chain
        self.control = p.control
        self.scheduler = p.scheduler
        self.calls = p.calls
        self.batch = p.batch
        self.fast = p.fast
        self.results = p.results
        self.window = p.window
        #: batch mode on the fast path: items as rows, no task each (set by the session)
        self.bulk: BulkItems | None = None
        self.lease = p.lease
        self.lifecycle = JobLifecycle(p.store, p.job_id)
        #: the run's progress over time, for the dashboard
        self.history = ProgressHistory(self)
        self._tasks: set[asyncio.Task[None]] = set()
        #: the store failed under this run (a full disk): what the run raises
        self.store_failure: StoreError | None = None

    # -- what the progress display reads ---------------------------------------------------

    @property
    def done(self) -> int:
        return self.results.done

    @property
    def failed(self) -> int:
        return self.results.failed

    @property
    def started(self) -> int:
        return self.window.started

    def request_stop(self) -> None:
        """Stop starting items and calls; calls on the wire finish and are recorded."""
        self.control.stop()

    # -- the run ---------------------------------------------------------------------------

    async def run(self, inputs: InputSource | None) -> JobStatus:
        self.lease.claim()
        executor = LoopExecutor.of(asyncio.get_running_loop())
        executor.add_job(self.calls, self.parts.threads)
        self.store.watch(self.job_id, self._store_failed)
        heartbeat = asyncio.create_task(self.lease.keep())
        history = asyncio.create_task(self.history.keep())
        _gc_freeze()
        try:
            try:
                return await self._run(inputs)
            except LeaseLost as exc:
                # another process runs the job now: leave everything to it, write nothing
                await self._abandon()
                raise (self.lease.lost or exc) from None
            except StoreError:
                if self.store_failure is None:
                    raise
                # the store undid its writes since the last commit and takes no more: stop
                # at once (answers still on the wire could not be stored anyway)
                await self._abandon()
                raise self.store_failure from None
        finally:
            _gc_unfreeze()
            heartbeat.cancel()
            history.cancel()
            try:
                if self.store_failure is None and self.lease.lost is None:
                    self.lease.release()
                else:  # the lease cannot be written, or is not ours: the store writes again
                    self.store.unfence(self.job_id)
            finally:
                self.store.unwatch(self.job_id)
                await self.calls.aclose()
                executor.remove_job(self.calls)

    def _store_failed(self, exc: StoreError) -> None:
        """The store failed (told by the store): stop, and raise one line that says so."""
        if self.store_failure is not None:
            return
        fix = "free space on that disk, then resume it" if exc.disk_full else "resume it once the store works"
        self.store_failure = StoreError(
            f"{exc}; job {self.job_id} stopped with nothing lost: {fix}", disk_full=exc.disk_full
        )
        self.control.fail(self.store_failure)

    async def _run(self, inputs: InputSource | None) -> JobStatus:
        if self.control.purpose is Purpose.ASSIST:
            return await self._assist()
        self.lifecycle.enter(self.lease.runner)
        try:
            await self._drive(inputs)
        except asyncio.CancelledError:
            if self.store_failure is None:  # else nothing more can be recorded
                await self._stop_gracefully()
                self._leave()
            raise
        except Exception as exc:
            if self.store_failure is not None:
                raise self.store_failure from None
            # e.g. the input iterator failed: stop cleanly, keep everything, say why
            self.control.pause_note = f"stopped: {type(exc).__name__}: {redact(str(exc))}"
            await self._stop_gracefully()
            self._leave()
            raise
        if self.store_failure is not None:
            raise self.store_failure
        if self.control.stopping:
            await self._stop_gracefully()
        if self.lease.lost is not None:
            raise self.lease.lost
        status = self._leave()
        if self.control.fatal is not None:
            raise self.control.fatal
        return status

    async def _assist(self) -> JobStatus:
        """Run free chunks of the job's items beside the process that runs the job, until
        none is left; the job's status stays that process's to change."""
        try:
            await self._drive(None)
        except asyncio.CancelledError:
            if self.store_failure is None:
                await self._stop_gracefully()
                self._note_assist()
            raise
        except Exception:
            if self.store_failure is not None:
                raise self.store_failure from None
            await self._stop_gracefully()
            raise
        if self.store_failure is not None:
            raise self.store_failure
        if self.control.stopping:
            await self._stop_gracefully()
        if self.lease.lost is not None:
            raise self.lease.lost
        self._note_assist()
        if self.control.fatal is not None:
            raise self.control.fatal
        job = self.store.get_job(self.job_id)
        assert job is not None
        return job.status

    def _note_assist(self) -> None:
        self.results.flush()
        self.lifecycle.note_items(self.lease.owner, self.results.ended)

    async def _abandon(self) -> None:
        """Stop every item without recording anything: the job is another process's now,
        or its store takes no more writes."""
        self.control.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _leave(self) -> JobStatus:
        self.results.flush()
        self.history.sample(final=True)
        return self.lifecycle.leave(self.control, self._stats(), self.lease.owner, self.results.ended)

    def _realtime_endpoints(self) -> dict[str, dict[str, Any]]:
        """Batch mode: the calls sent realtime because their endpoint has no Batch API (or
        the user chose so), by model and endpoint, over every run of the job."""
        job = self.store.get_job(self.job_id)
        before = job.stats.get("realtime_endpoints", {}) if job is not None else {}
        out: dict[str, dict[str, Any]] = {k: dict(v) for k, v in before.items()}
        for label, (why, n) in self.calls.realtime_endpoints.items():
            entry = out.setdefault(label, {"why": why, "calls": 0})
            entry["why"], entry["calls"] = why, int(entry["calls"]) + n
        return out

    def _langchain_cache_hits(self) -> int:
        """Calls answered from LangChain's LLM cache, over every run of the job (they leave
        no row in the store: the job's stats are where the report finds them)."""
        job = self.store.get_job(self.job_id)
        before = job.stats.get("langchain_cache_hits", 0) if job is not None else 0
        return int(before) + self.calls.stats.langchain_cache

    def _no_flex(self) -> dict[str, int]:
        """Flex mode: calls sent at the standard tier because their model has no flex, by
        provider/model, over every run of the job."""
        job = self.store.get_job(self.job_id)
        out: dict[str, int] = dict(job.stats.get("no_flex", {})) if job is not None else {}
        for label, n in self.calls.no_flex.items():
            out[label] = int(out.get(label, 0)) + n
        return out

    def _estimated_usage(self) -> list[str]:
        """The models (provider/model) whose answers carried no token count, over every run."""
        job = self.store.get_job(self.job_id)
        before = job.stats.get("estimated_usage", []) if job is not None else []
        return sorted(set(before) | set(self.calls.estimated_usage))

    def _stats(self) -> dict[str, Any]:
        s, c = self.scheduler.stats, self.calls.stats
        stats: dict[str, Any] = {
            "sent": s.sent,
            "succeeded": s.succeeded,
            "retries": s.retries,
            "rate_limited": s.rate_limited,
            "flex_unavailable": s.unavailable,
            "flex_fallbacks": c.flex_fallbacks,
            "no_flex": self._no_flex(),
            "failed_calls": s.failed,
            "peak_in_flight": s.peak_in_flight,
            "paid": c.paid + (self.batch.stats.paid if self.batch is not None else 0),
            "cached": c.cached,
            "shared": c.shared,
            "langchain_cache_hits": self._langchain_cache_hits(),
            "realtime_endpoints": self._realtime_endpoints(),
            "estimated_usage": self._estimated_usage(),
            **self.parts.paths,
        }
        if self.batch is not None:
            b = self.batch.stats
            stats.update(
                rounds=b.rounds,
                calls_by_round=b.by_round,
                batches_created=b.batches_created,
                batches_collected=b.batches_collected,
                batches_reconciled=b.reconciled,
                batches_lost=b.lost,
                batches_refused=b.refused,
                capacity_waits=b.capacity_waits,
                prompt_cache_primed=self.batch.cache.primed,
                prompt_cache_marked=self.batch.cache.marked_calls,
                calls_requeued=b.requeued,
                polls=b.polls,
                poll_errors=b.poll_errors,
            )
        returns = self.parts.returns
        if returns is not None:
            stats.update(
                items_left_window=returns.left,
                items_fed_again=returns.fed_again,
                items_finished_out_of_window=self.bulk.finished_out if self.bulk is not None else 0,
                items_built_during_uploads=self.window.borrowed,
            )
        return stats

    async def _drive(self, inputs: InputSource | None) -> None:
        p = self.parts
        feeder = Feeder(
            p.inputs, self.window, self.control, p.changed, self._start_item, self.bulk, p.returns
        )
        if self.batch is None:
            await feeder.feed(inputs)
        else:
            rounds = Rounds(
                batch=self.batch,
                calls=self.calls,
                control=self.control,
                window=self.window,
                changed=p.changed,
                tasks=self.tasks,
                live=self.live,
                deadline=p.deadline,
                deadline_margin=p.deadline_margin,
                threads=p.threads,
                feeder=feeder,
            )
            feeding = asyncio.create_task(feeder.feed(inputs))
            try:
                await rounds.run(feeding)
            finally:
                if not feeding.done():
                    feeding.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeding
            if feeding.done() and not feeding.cancelled():
                error = feeding.exception()
                if error is not None:
                    raise error
            if self.control.stopping:
                return
        # asyncio.wait, not gather: cancelling a gather cancels the items too, aborting
        # calls on the wire instead of letting a graceful stop drain them
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    # -- items -----------------------------------------------------------------------------

    def live(self) -> bool:
        """Does any item still run or wait?"""
        return bool(self._tasks) or (self.bulk is not None and self.bulk.outstanding > 0)

    def tasks(self) -> int:
        return len(self._tasks)

    def _start_item(self, idx: int, value: Any) -> None:
        task = asyncio.create_task(self._run_item(idx, value))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.parts.changed.set()

    def spill(self, idx: int, value: Any) -> None:
        """An item the bulk path cannot build goes the ordinary way (its place goes with it)."""
        self._start_item(idx, value)

    def evict_row(self, idx: int, batch: str) -> None:
        """A bulk item's call is at a provider: the item leaves the window until it ends."""
        assert self.parts.returns is not None
        self.parts.returns.evicted(idx, batch)
        self.window.release()
        self.parts.changed.set()

    def settle_evicted(self, idx: int, value: Any, output: Any, exc: BaseException | None) -> None:
        """A bulk item out of the window ended (see :meth:`BulkItems.answered`)."""
        if exc is None:
            self.results.output(idx, value, output)
        else:
            self.results.error(idx, value, exc)
        self.parts.changed.set()

    def settle_item(self, idx: int, value: Any, output: Any, exc: BaseException | None) -> None:
        """A bulk item ended: record its output or error, free its place."""
        try:
            if exc is None:
                self.results.output(idx, value, output)
            else:
                self.results.error(idx, value, exc)
        finally:
            self.window.release()
            self.parts.changed.set()

    def _leveled(self, idx: int, value: Any) -> bool:
        """Auto mode: note the item's level for its calls' routes; False (and the item's
        error recorded) if its priority is not a level."""
        rule = self.parts.priority
        if rule is None:
            return True
        try:
            self.calls.set_level(idx, rule.level_of(idx, value))
        except InvalidPriority as exc:
            self.results.error(idx, value, exc, where="priority")
            return False
        return True

    async def _run_item(self, idx: int, value: Any) -> None:
        if not self._leveled(idx, value):
            self.window.release()
            if self.parts.claims is not None:
                self.parts.claims.settled(idx)
            return
        eviction = Eviction(asyncio.current_task())
        token = ACTIVE.set(CallContext(self.calls, idx, asyncio.get_running_loop(), eviction))
        try:
            if self.fast is not None:
                output = await self._fast_invoke(self.fast, idx, value)
            else:
                config: RunnableConfig = {**self.parts.item_config}
                if self.parts.callbacks:
                    config["callbacks"] = self.parts.callbacks
                output = await self.chain.ainvoke(value, config)
        except asyncio.CancelledError:
            # stopped: the item stays pending and runs again on resume. Or evicted: its
            # calls are at a provider, and it is fed again (replaying what it did so far
            # from the store) once that batch has ended
            if eviction.batch is not None and self.parts.returns is not None:
                self.parts.returns.evicted(idx, eviction.batch)
            return
        except Exception as exc:
            if self.control.stopping and not isinstance(exc, CallCancelled):
                return
            self.results.error(idx, value, exc)
        else:
            self.results.output(idx, value, output)
        finally:
            self.calls.forget_level(idx)
            ACTIVE.reset(token)
            self.window.release()
            if self.parts.claims is not None:
                self.parts.claims.settled(idx)

    async def _fast_invoke(self, fast: FastChain, idx: int, value: Any) -> Any:
        stop, kwargs = fast.call_args()
        result = await self.calls.generate(fast.model, fast.messages(value), stop, None, kwargs, idx)
        generations = result.generations
        return fast.parse(generations[0].message, generations)

    async def _stop_gracefully(self) -> None:
        self.control.stop()
        # let calls on the wire land in the store, so a resume does not pay for them again
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.scheduler.wait_idle(), self.parts.timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.results.flush()
        self.store.commit()


#: what the event loop itself runs in its default executor for a connection
_LOOP_LOOKUPS = frozenset({socket.getaddrinfo, socket.getnameinfo})


class LoopExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor once a job has run on it: each running job's items'
    sync steps (LangChain runs them in the default executor) get that job's ``threads``
    threads; everything else (the event loop's own DNS lookups for provider connections,
    say) gets threads of its own.

    A sync step that calls a model holds its thread until the call is answered. When all
    of them wait, the round must still reach the provider, and its connection's lookup
    must not queue behind the sync steps that wait for it (nor must anything the engine
    runs for a call: see :meth:`CallManager.generate`). One per loop, shared by the
    jobs running on it: a job that ends shuts down only its own threads, and the loop's
    default executor keeps working for the jobs still running and for the loop's owner."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopExecutor] = weakref.WeakKeyDictionary()
    _by_loop_lock = threading.Lock()

    def __init__(self) -> None:
        # threads start only when needed; besides lookups, a generic model's sync sends
        # run here, up to the job's concurrency
        super().__init__(max_workers=64, thread_name_prefix="batchain-io")
        #: each running job's pool, by its call manager (the one an item's context names)
        self._jobs: dict[object, concurrent.futures.ThreadPoolExecutor] = {}

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopExecutor:
        """The loop's, made and installed as its default executor on first use."""
        with cls._by_loop_lock:
            executor = cls._by_loop.get(loop)
            if executor is None:
                executor = cls._by_loop[loop] = cls()
                loop.set_default_executor(executor)
            return executor

    def add_job(self, calls: CallManager, threads: int) -> None:
        self._jobs[calls] = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="batchain"
        )

    def remove_job(self, calls: CallManager) -> None:
        pool = self._jobs.pop(calls, None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        context = ACTIVE.get()
        # an item's step goes to its job's threads; the loop resolving a host for an
        # item's call, or anything else, to the loop's own
        pool = self._jobs.get(context.manager) if context is not None and fn not in _LOOP_LOOKUPS else None
        if pool is None:
            return super().submit(fn, *args, **kwargs)
        return pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for pool in list(self._jobs.values()):
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


_frozen = 0
_frozen_lock = threading.Lock()
#: the collector's thresholds while a job runs (young objects, then passes of each older
#: generation): at the default 700 a job of many items collects every few items, and each
#: full pass walks every live item's objects, so a 6,000-item three-stage batch job spent
#: a third of its CPU collecting (37 s against 25 s). A young pass walks the young objects
#: still alive, and a batch's answers are alive together while it is collected: at 50,000
#: a 50,000-item batch job still spent 0.3 s collecting, at 200,000 0.08 s. Cycles are
#: freed a little later (at most 200,000 young objects wait)
_JOB_GC_THRESHOLD = (200_000, 20, 100)
#: while jobs run: the thresholds found when the first one started (restored when the last
#: one ends), and those it set
_thresholds: tuple[tuple[int, ...], tuple[int, ...]] | None = None


def _gc_freeze() -> None:
    """Leave the objects that exist before a job (the imported libraries: ~10^6 objects)
    out of the cyclic collector's full passes while it runs, and collect less often (see
    ``_JOB_GC_THRESHOLD``). A full pass over them costs tens of milliseconds, and a job
    that creates objects per item triggers many."""
    global _frozen, _thresholds
    with _frozen_lock:
        if _frozen == 0:
            gc.freeze()
            saved = gc.get_threshold()
            raised = tuple(max(a, b) for a, b in zip(saved, _JOB_GC_THRESHOLD, strict=True))
            gc.set_threshold(*raised)
            _thresholds = (saved, raised)
        _frozen += 1


def _gc_unfreeze() -> None:
    """Hand the frozen objects back to the collector, and its thresholds (unless the
    program changed them meanwhile), once no job runs."""
    global _frozen, _thresholds
    with _frozen_lock:
        _frozen -= 1
        if _frozen == 0:
            gc.unfreeze()
            if _thresholds is not None and gc.get_threshold() == _thresholds[1]:
                gc.set_threshold(*_thresholds[0])
            _thresholds = None
