"""Drives one job: feeds items, runs each item's chain, records results, stops cleanly.

Items run as ordinary ``chain.ainvoke`` coroutines inside a bounded window, so memory
stays flat however many inputs there are (in batch mode, ``prompt | model | parser``
items are rows instead: see :mod:`batchain.engine.bulk`). Inputs are written to the store just before
their item starts, which is what makes a job resumable: a resumed run first re-runs the
stored items that have no result (their finished model calls replay from the store), then
reads on from the input iterator where the job stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import json
import logging
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig

from batchain import serialize
from batchain.chains.fastpath import FastChain, compile_template, inspect_fast
from batchain.cost.prices import PriceBook, default_pricebook
from batchain.engine.batching import BatchCoordinator, CallCancelled
from batchain.engine.budget import Budget, BudgetExhausted
from batchain.engine.bulk import BulkItems, Wait
from batchain.engine.calls import CallManager, build_request
from batchain.engine.hook import ACTIVE, CallContext, install
from batchain.engine.scheduler import Scheduler
from batchain.errors import JobBusy
from batchain.options import Mode
from batchain.providers.base import redact
from batchain.states import BatchStatus, CallStatus, IllegalTransition, ItemStatus, JobStatus
from batchain.store.sqlite import SQLiteStore, lease_owner

__all__ = ["ItemEvent", "JobBusy", "JobRunner", "RunOptions"]

log = logging.getLogger("batchain.engine.runner")

#: how long nothing may move before a batch round counts as complete
_SETTLE_S = 0.02
#: inputs stored per transaction when a batch job reads its whole dataset up front
_INGEST_CHUNK = 2000
#: a running job's lease: renewed every third of it, taken over when it lapses
_LEASE_S = 30.0
#: items the bulk path builds and parks at a time
_BULK_CHUNK = 1000


@dataclass(slots=True)
class RunOptions:
    mode: str = Mode.REALTIME
    max_concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 6
    timeout: float = 120.0
    cache: bool = True
    #: items running at once: realtime 4 x max_concurrency (at least 256), batch 50,000
    window: int | None = None
    progress: bool = True
    #: threads for sync steps (sync lambdas calling models hold one while they wait)
    threads: int = 256
    #: batch mode: first and longest wait between polls of a provider batch (seconds)
    poll_min: float = 1.0
    poll_max: float = 60.0
    #: batch mode: most requests in one provider batch (the provider's own limit applies too)
    max_batch_size: int | None = None
    #: batch mode: "realtime" lets models without a Batch API adapter run at full price
    fallback: str | None = None
    #: auto mode: an input field, or a function of the input; urgent (> 0 / true) items
    #: run realtime, the others batch
    priority: Any = None
    #: auto mode: epoch seconds by which everything should be done; ``deadline_margin``
    #: seconds before it, calls still at a provider are cancelled there and sent realtime
    deadline: float | None = None
    deadline_margin: float = 300.0
    #: a hard cap in USD across realtime and batch (None: no cap)
    budget: float | None = None
    #: price overrides: a dict, or the path of a JSON/TOML/YAML file (see batchain.cost)
    prices: Any = None
    callbacks: list[Any] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__ if k != "callbacks"}  # type: ignore[attr-defined]
        if not isinstance(d["priority"], str | None):
            d["priority"] = None  # a function cannot be stored: pass it again on resume
        return d


@dataclass(frozen=True, slots=True)
class ItemEvent:
    idx: int
    status: ItemStatus
    input: Any
    output: Any
    error: dict[str, Any] | None


ItemListener = Callable[[ItemEvent], None]


class JobRunner:
    """Runs (or resumes) one job to the end, or until stopped."""

    def __init__(
        self,
        *,
        store: SQLiteStore,
        job_id: str,
        chain: Runnable[Any, Any],
        options: RunOptions,
        listener: ItemListener | None = None,
    ) -> None:
        install()
        self.store = store
        self.job_id = job_id
        self.chain = chain
        self.options = options
        self.listener = listener
        self.scheduler = Scheduler(
            max_concurrency=options.max_concurrency,
            rpm=options.rpm,
            tpm=options.tpm,
            max_retries=options.max_retries,
            timeout=options.timeout,
        )
        self._changed = asyncio.Event()
        self.pricebook = PriceBook(options.prices) if options.prices else default_pricebook()
        self.budget: Budget | None = None
        if options.budget is not None:
            self.budget = Budget(Decimal(str(options.budget)), store.job_spent(job_id), self.pricebook)
        self.pause_note: str | None = None
        self.batch: BatchCoordinator | None = None
        if options.mode in (Mode.BATCH, Mode.AUTO):
            self.batch = BatchCoordinator(
                store=store,
                job_id=job_id,
                max_retries=options.max_retries,
                poll_min=options.poll_min,
                poll_max=options.poll_max,
                max_batch_size=options.max_batch_size,
                on_change=self._changed.set,
                usage_of=lambda adapter, body: adapter.usage(body),
                price_of=self._price,
                budget=self.budget,
            )
        self.calls = CallManager(
            store=store,
            job_id=job_id,
            scheduler=self.scheduler,
            cache=options.cache,
            timeout=options.timeout,
            batch=self.batch,
            fallback=options.fallback,
            on_fatal=self._on_fatal,
            pricebook=self.pricebook,
            budget=self.budget,
            on_budget=self._on_budget,
        )
        #: the fast path for `prompt | model | parser`, when nothing observes the run
        found = inspect_fast(chain, callbacks=options.callbacks)
        self.fast = found if isinstance(found, FastChain) else None
        #: which path items take and, when not the fastest, why (recorded in the job's stats)
        self.paths: dict[str, str] = {"fast_path": "on" if self.fast is not None else f"off: {found}"}
        #: batch mode on the fast path: items as rows, no task each (see batchain.engine.bulk)
        self.bulk = self._bulk_items()
        if options.mode == Mode.BATCH:
            self.paths["bulk_path"] = "on" if self.bulk is not None else f"off: {self._no_bulk}"
        self._slots = asyncio.Semaphore(self._window())
        #: "submitted": stop once a round is at the provider; "poll": advance once; None: finish
        self.stop_when: str | None = None
        self.cancelling = False
        self.fatal: BaseException | None = None
        self._feeder_blocked = False
        self.done = 0
        self.failed = 0
        self.started = 0
        self._stopping = False
        self._owner = lease_owner()
        self._lost_calls = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: items finished in this loop iteration, written together (see _flush_items)
        self._finished: list[tuple[int, ItemStatus, str | None, str | None]] = []

    def _bulk_items(self) -> BulkItems | None:
        fast = self.fast
        self._no_bulk = "the chain is not on the fast path"
        if self.options.mode != Mode.BATCH or fast is None or self.batch is None:
            return None
        stop, kwargs = fast.call_args()
        salt = self.calls.salt
        template = compile_template(fast, lambda msgs: build_request(fast.model, msgs, stop, kwargs, salt))
        if template is None:
            self._no_bulk = "the prompt or model admits no request template"
            return None
        return BulkItems(
            template=template,
            calls=self.calls,
            batch=self.batch,
            store=self.store,
            job_id=self.job_id,
            settle=self._settle_item,
            spill=self._spill,
            stubs=self.budget is None,
        )

    # -- public ----------------------------------------------------------------------------

    def _price(self, request: Any, usage: Any, tier: str, body: Any) -> Decimal | None:
        return self.calls.price(request, usage, tier, body)

    def _on_budget(self, exc: BaseException) -> None:
        """Out of budget: pause; nothing is lost, and a resume with more continues."""
        self.pause_note = str(exc)
        self.request_stop()

    def _on_fatal(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.request_stop()

    def request_stop(self) -> None:
        """Stop starting items and calls; calls on the wire finish and are recorded."""
        self._stopping = True
        self.scheduler.stop()

    async def run(self, inputs: Iterable[Any] | AsyncIterable[Any] | None) -> JobStatus:
        loop = asyncio.get_running_loop()
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.options.threads, thread_name_prefix="batchain"
        )
        loop.set_default_executor(executor)
        self._claim()
        heartbeat = asyncio.create_task(self._heartbeat())
        _gc_freeze()
        try:
            self._enter_running()
            try:
                await self._drive(inputs)
            except asyncio.CancelledError:
                await self._stop_gracefully()
                self._finish_status()
                raise
            except Exception as exc:
                # e.g. the input iterator failed: stop cleanly, keep everything, say why
                self.pause_note = f"stopped: {type(exc).__name__}: {redact(str(exc))}"
                await self._stop_gracefully()
                self._finish_status()
                raise
            if self._stopping:
                await self._stop_gracefully()
            status = self._finish_status()
            if self.fatal is not None:
                raise self.fatal
            return status
        finally:
            _gc_unfreeze()
            heartbeat.cancel()
            self.store.release_lease(self.job_id, self._owner)
            await self.calls.aclose()
            executor.shutdown(wait=False, cancel_futures=True)

    def _claim(self) -> None:
        holder = self.store.acquire_lease(self.job_id, self._owner, _LEASE_S)
        if holder is not None:
            raise JobBusy(
                f"job {self.job_id} is being run by another process ({holder}); wait for it or stop it first"
            )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(_LEASE_S / 3)
            self.store.renew_lease(self.job_id, self._owner, _LEASE_S)

    # -- internals -------------------------------------------------------------------------

    def _enter_running(self) -> None:
        job = self.store.get_job(self.job_id)
        assert job is not None
        self._lost_calls = int(job.stats.get("calls_lost_in_crashes", 0))
        if job.status == JobStatus.RUNNING:
            # left behind by a process that died. Its calls still marked as sent were on
            # the wire: the provider may have answered (and billed) them, but the answer
            # never reached the store, so they will be sent again.
            self._lost_calls += len(self.store.calls_in_status(CallStatus.SENT, self.job_id))
            self.store.update_job(self.job_id, stats={**job.stats, "calls_lost_in_crashes": self._lost_calls})
            self.store.set_job_status(self.job_id, JobStatus.PAUSED, "interrupted")
        self.store.set_job_status(self.job_id, JobStatus.RUNNING)

    def _finish_status(self) -> JobStatus:
        self._flush_items()
        s, c = self.scheduler.stats, self.calls.stats
        self.store.update_job(
            self.job_id,
            stats={
                "sent": s.sent,
                "succeeded": s.succeeded,
                "retries": s.retries,
                "rate_limited": s.rate_limited,
                "failed_calls": s.failed,
                "peak_in_flight": s.peak_in_flight,
                "paid": c.paid + (self.batch.stats.paid if self.batch is not None else 0),
                "cached": c.cached,
                "shared": c.shared,
                "calls_lost_in_crashes": self._lost_calls,
                **self.paths,
                **self._batch_stats(),
            },
        )
        self.store.commit()
        counts = self.store.item_counts(self.job_id)
        job = self.store.get_job(self.job_id)
        assert job is not None
        pending = counts.get(ItemStatus.PENDING.value, 0)
        note: str | None = None
        if self.cancelling:
            new = JobStatus.CANCELLED
        elif pending == 0 and job.inputs_complete:
            new = JobStatus.COMPLETED
        elif self.pause_note is not None:
            new, note = JobStatus.PAUSED, self.pause_note
        elif self.fatal is None and self._at_provider():
            new = JobStatus.WAITING
            note = "waiting for provider batches; poll() or wait() to continue"
        else:
            new = JobStatus.PAUSED
            note = str(self.fatal) if self.fatal else "stopped before the end; resume to continue"
        self.store.set_job_status(self.job_id, new, note)
        return new

    def _batch_stats(self) -> dict[str, Any]:
        if self.batch is None:
            return {}
        b = self.batch.stats
        return {
            "rounds": b.rounds,
            "calls_by_round": b.by_round,
            "batches_created": b.batches_created,
            "batches_collected": b.batches_collected,
            "batches_reconciled": b.reconciled,
            "calls_requeued": b.requeued,
            "polls": b.polls,
            "poll_errors": b.poll_errors,
        }

    def _at_provider(self) -> bool:
        return bool(self.store.job_batches(self.job_id, (BatchStatus.SUBMITTED, BatchStatus.ENDED)))

    async def _drive(self, inputs: Iterable[Any] | AsyncIterable[Any] | None) -> None:
        if self.batch is None:
            await self._feed(inputs)
        else:
            feeder = asyncio.create_task(self._feed(inputs))
            try:
                await self._rounds(feeder)
            finally:
                if not feeder.done():
                    feeder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeder
            if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
                raise feeder.exception()  # type: ignore[misc]
            if self._stopping:
                return
        # asyncio.wait, not gather: cancelling a gather cancels the items too, aborting
        # calls on the wire instead of letting a graceful stop drain them
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _switch_in(self) -> float | None:
        if self.options.deadline is None:
            return None
        return max(0.0, self.options.deadline - self.options.deadline_margin - time.time())

    def _deadline_near(self) -> bool:
        left = self._switch_in()
        return left is not None and left <= 0

    def _window(self) -> int:
        if self.options.window:
            return self.options.window
        if self.batch is not None:
            # every parked item holds its coroutine (~5 KB on the fast path, ~15 KB through
            # the full chain), but each window is a round that may wait hours at the
            # provider: park one OpenAI batch's worth at once
            return 50_000
        return max(256, 4 * self.options.max_concurrency)

    async def _feed(self, inputs: Iterable[Any] | AsyncIterable[Any] | None) -> None:
        if self.bulk is not None:
            await self._feed_bulk(self.bulk, inputs)
            return
        async for idx, value, stored, _wait in self._source(inputs):
            if not await self._take_slot():
                break
            task = asyncio.create_task(self._run_item(idx, value, stored, self._slots))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        self._changed.set()

    async def _feed_bulk(self, bulk: BulkItems, inputs: Iterable[Any] | AsyncIterable[Any] | None) -> None:
        """The feeder of the bulk path: items start a chunk at a time, as rows."""
        rows: list[tuple[int, Any, Wait | None]] = []

        async def start_rows() -> None:
            if rows:
                await bulk.add(rows[:])
                rows.clear()

        async for idx, value, _stored, wait in self._source(inputs, waits=True):
            # rows read before the window fills are parked first, or the round could never end
            if not await self._take_slot(before_waiting=start_rows):
                break
            rows.append((idx, value, wait))
            if len(rows) >= _BULK_CHUNK:
                await start_rows()
                self._changed.set()
        if not self._stopping:
            await start_rows()
        self._changed.set()

    async def _take_slot(self, before_waiting: Callable[[], Awaitable[None]] | None = None) -> bool:
        """A place in the window for the next item; False if the job is stopping."""
        slots = self._slots
        if slots.locked():
            if before_waiting is not None:
                await before_waiting()
            self._feeder_blocked = True
            self._changed.set()
        await slots.acquire()
        self._feeder_blocked = False
        if self._stopping:
            slots.release()
            return False
        self.started += 1
        return True

    def _spill(self, idx: int, value: Any) -> None:
        """An item the bulk path cannot build goes the ordinary way (its slot goes with it)."""
        task = asyncio.create_task(self._run_item(idx, value, True, self._slots))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _settle_item(self, idx: int, value: Any, output: Any, exc: BaseException | None) -> None:
        """A bulk item ended: record its output or error, free its slot."""
        try:
            if exc is None:
                self._store_output(idx, value, output)
            else:
                self._record_error(idx, value, exc)
        finally:
            self._slots.release()
            self._changed.set()

    def _live(self) -> bool:
        """Does any item still run or wait?"""
        return bool(self._tasks) or (self.bulk is not None and self.bulk.outstanding > 0)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._changed.set()

    async def _rounds(self, feeder: asyncio.Task[None]) -> None:
        """Batch mode: flush when every live item waits on a parked call; poll; repeat."""
        batch = self.batch
        assert batch is not None
        polled = False
        cancel_sent = False
        while not self._stopping:
            if feeder.done() and not self._live():
                return
            changed = self._changed.is_set()
            self._changed.clear()
            # with no item coroutines (the bulk path) nothing can still be on its way to a
            # parked call: a change is acted on at once instead of after a settle
            quiet = changed and not self._tasks and (feeder.done() or self._feeder_blocked)
            if not quiet:
                with contextlib.suppress(TimeoutError):
                    # settle: something still moving means the round is not complete yet
                    await asyncio.wait_for(self._changed.wait(), _SETTLE_S)
                    continue
            if self._deadline_near() and not batch.switched:
                await batch.switch_to_realtime()
                continue
            # urgent items run realtime and never wait on a batch: they do not hold a round
            blocking = len(self._tasks) - len(self.calls.urgent)
            all_waiting = len(self.calls.waiting) >= blocking and (feeder.done() or self._feeder_blocked)
            if not all_waiting:
                continue
            if self.cancelling and not cancel_sent:
                await batch.cancel_all()
                cancel_sent = True
                continue
            if batch.unsubmitted:
                try:
                    created = await batch.flush()
                except BudgetExhausted as exc:
                    self._on_budget(exc)
                    return
                if self.stop_when == "submitted" and batch.live and created:
                    self.request_stop()  # the round is at the provider: leave it there
                    return
                if created or not batch.live:
                    continue
                # the budget holds the rest back until live batches settle: poll them
            if not batch.live:
                continue
            if self.stop_when == "poll" and polled:
                self.request_stop()
                return
            if self.stop_when == "poll" or self.cancelling:
                await batch.poll_due(force=True)
                polled = True
                continue
            delay = batch.next_poll_in() or 0.0
            switch_in = self._switch_in()
            if switch_in is not None:
                delay = min(delay, switch_in)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), delay)
            await batch.poll_due()

    async def _source(
        self, inputs: Iterable[Any] | AsyncIterable[Any] | None, *, waits: bool = False
    ) -> AsyncIterator[tuple[int, Any, bool, Wait | None]]:
        """Stored items without a result first, then new inputs after the stored ones.

        Batch and auto mode store every input before running any: a submitted job must be
        able to finish in another process that never sees the inputs. With ``waits``, a
        stored item comes with the call an earlier run noted it waits for (bulk path).
        """
        if self.batch is not None and inputs is not None:
            await self._ingest_all(inputs)
        if waits:
            for idx, text, key, record in self.store.iter_pending_waits(self.job_id):
                if self._stopping:
                    return
                yield idx, serialize.loads(text), True, (key, record) if key is not None else None
        else:
            for item in self.store.iter_items(self.job_id, (ItemStatus.PENDING,)):
                if self._stopping:
                    return
                yield item.idx, serialize.loads(item.input), True, None
        job = self.store.get_job(self.job_id)
        assert job is not None
        if job.inputs_complete:
            return
        if inputs is None:
            raise RuntimeError(
                f"job {self.job_id} stopped before all of its inputs were read ({job.n_items} "
                "read); pass the same inputs again to continue it"
            )
        idx = 0
        skip = job.n_items
        async for value in _aiter(inputs):
            if idx < skip:  # already stored by an earlier run
                idx += 1
                continue
            if self._stopping:
                return
            self._ingest(idx, value)
            yield idx, value, False, None
            idx += 1
        self.store.update_job(self.job_id, n_items=idx, inputs_complete=True)
        self.store.commit_soon()

    async def _ingest_all(self, inputs: Iterable[Any] | AsyncIterable[Any]) -> None:
        job = self.store.get_job(self.job_id)
        assert job is not None
        if job.inputs_complete:
            return
        idx, rows = 0, []
        async for value in _aiter(inputs):
            if idx >= job.n_items:  # earlier runs stored the ones before
                try:
                    rows.append((idx, serialize.dumps(value)))
                except serialize.Unserializable:
                    self._ingest(idx, value)  # stored as a failed item, with the reason
                if len(rows) >= _INGEST_CHUNK:
                    self._store_rows(rows, idx + 1)
                    rows = []
            idx += 1
        self._store_rows(rows, idx)
        self.store.update_job(self.job_id, n_items=idx, inputs_complete=True)
        self.store.commit()

    def _store_rows(self, rows: list[tuple[int, str]], n_items: int) -> None:
        if rows:
            self.store.add_items(self.job_id, rows)
        self.store.update_job(self.job_id, n_items=n_items)
        self.store.commit()

    def _ingest(self, idx: int, value: Any) -> None:
        try:
            text = serialize.dumps(value)
        except serialize.Unserializable as exc:
            text = json.dumps({"__unstorable__": repr(value)[:500]})
            self.store.add_items(self.job_id, [(idx, text)])
            self.store.finish_item(self.job_id, idx, ItemStatus.FAILED, error=_error_json(exc, "input"))
        else:
            self.store.add_items(self.job_id, [(idx, text)])
        self.store.update_job(self.job_id, n_items=idx + 1)
        self.store.commit_soon()

    async def _run_item(self, idx: int, value: Any, stored: bool, slots: asyncio.Semaphore) -> None:
        token = ACTIVE.set(CallContext(self.calls, idx, asyncio.get_running_loop()))
        if self.options.mode == Mode.AUTO and self._urgent(value):
            self.calls.urgent.add(idx)
        try:
            if self.fast is not None:
                output = await self._fast_invoke(self.fast, idx, value)
            else:
                config: RunnableConfig = {"max_concurrency": None}
                if self.options.callbacks:
                    config["callbacks"] = self.options.callbacks
                output = await self.chain.ainvoke(value, config)
        except asyncio.CancelledError:
            return  # stopped: the item stays pending and runs again on resume
        except Exception as exc:
            if self._stopping and not isinstance(exc, CallCancelled):
                return
            self._record_error(idx, value, exc)
        else:
            self._store_output(idx, value, output)
        finally:
            self.calls.urgent.discard(idx)
            ACTIVE.reset(token)
            slots.release()

    def _record_error(self, idx: int, value: Any, exc: BaseException) -> None:
        """The item ends with ``exc``: cancelled with the job, else failed."""
        if isinstance(exc, CallCancelled):
            self._record(idx, value, ItemStatus.CANCELLED, None, _error_dict(exc, "cancel"))
        else:
            self._record(idx, value, ItemStatus.FAILED, None, _error_dict(exc, "chain"))

    def _store_output(self, idx: int, value: Any, output: Any) -> None:
        try:
            text = serialize.dumps(output)
        except serialize.Unserializable as exc:
            self._record(idx, value, ItemStatus.FAILED, None, _error_dict(exc, "output"))
        else:
            self._record(idx, value, ItemStatus.SUCCEEDED, text, None, output)

    async def _fast_invoke(self, fast: FastChain, idx: int, value: Any) -> Any:
        stop, kwargs = fast.call_args()
        result = await self.calls.generate(fast.model, fast.messages(value), stop, None, kwargs, idx)
        generations = result.generations
        return fast.parse(generations[0].message, generations)

    def _urgent(self, value: Any) -> bool:
        """Auto mode: does this item run realtime? (priority > 0, or a true value)"""
        p = self.options.priority
        if p is None:
            return False
        try:
            got = p(value) if callable(p) else value.get(p) if isinstance(value, dict) else None
        except Exception:  # a priority that cannot be computed is not urgent
            return False
        if isinstance(got, bool) or got is None:
            return bool(got)
        if isinstance(got, int | float):
            return got > 0
        text = str(got).strip().lower()
        try:
            return float(text) > 0  # CSV gives numbers as strings
        except ValueError:
            return text in ("true", "yes", "y", "urgent", "high", "realtime")

    def _record(
        self,
        idx: int,
        value: Any,
        status: ItemStatus,
        text: str | None,
        error: dict[str, Any] | None,
        output: Any = None,
    ) -> None:
        if not self._finished:
            asyncio.get_running_loop().call_soon(self._flush_items)
        self._finished.append((idx, status, text, json.dumps(error) if error is not None else None))
        if status == ItemStatus.SUCCEEDED:
            self.done += 1
        else:
            self.failed += 1
        if self.listener is not None:
            self.listener(ItemEvent(idx, status, value, output, error))

    def _flush_items(self) -> None:
        """Write the items finished in this loop iteration, in one statement per status."""
        rows, self._finished = self._finished, []
        if not rows:
            return
        try:
            self.store.finish_items(self.job_id, rows)
        except IllegalTransition as exc:  # an item finished twice: a bug, but keep the rest
            log.error("%s", exc)
        self.store.commit_soon()

    async def _stop_gracefully(self) -> None:
        self.request_stop()
        # let calls on the wire land in the store, so a resume does not pay for them again
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.scheduler.wait_idle(), self.options.timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._flush_items()
        self.store.commit()


_frozen = 0
_frozen_lock = threading.Lock()


def _gc_freeze() -> None:
    """Leave the objects that exist before a job (the imported libraries: ~10^6 objects)
    out of the cyclic collector's full passes while it runs. A full pass over them costs
    tens of milliseconds, and a job that creates objects per item triggers many."""
    global _frozen
    with _frozen_lock:
        if _frozen == 0:
            gc.freeze()
        _frozen += 1


def _gc_unfreeze() -> None:
    """Hand the frozen objects back to the collector once no job runs."""
    global _frozen
    with _frozen_lock:
        _frozen -= 1
        if _frozen == 0:
            gc.unfreeze()


async def _aiter(inputs: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(inputs, AsyncIterable):
        async for value in inputs:
            yield value
    else:
        for n, value in enumerate(inputs):
            yield value
            if n % 64 == 63:
                await asyncio.sleep(0)  # a long synchronous generator must not starve the loop


def _error_dict(exc: BaseException, where: str) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": redact(str(exc)), "where": where}


def _error_json(exc: BaseException, where: str) -> str:
    return json.dumps(_error_dict(exc, where))
