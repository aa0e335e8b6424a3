"""The public entry points: ``run``/``arun`` and ``as_completed``/``aas_completed``."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import signal
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

from langchain_core.runnables import Runnable

from batchain.chains.inspection import check_batchable
from batchain.chains.ref import resolve_chain
from batchain.engine.progress import ProgressDisplay, wants_progress
from batchain.engine.runner import ItemEvent, ItemListener, JobRunner, RunOptions
from batchain.errors import InvalidOption
from batchain.job import ItemResult, Job, StoreArg, new_job_id, open_store
from batchain.options import MODES as MODES  # still importable from here
from batchain.options import Mode
from batchain.states import JobStatus
from batchain.store.records import JobRecord

__all__ = ["aas_completed", "arun", "as_completed", "asubmit", "run", "submit"]

T = TypeVar("T")


def run(
    chain: Runnable[Any, Any] | str,
    inputs: Iterable[Any],
    *,
    mode: str = Mode.REALTIME,
    store: StoreArg = None,
    job_id: str | None = None,
    max_concurrency: int = 64,
    rpm: float | None = None,
    tpm: float | None = None,
    max_retries: int = 6,
    timeout: float = 120.0,
    cache: bool = True,
    progress: bool = True,
    window: int | None = None,
    chain_ref: str | None = None,
    callbacks: list[Any] | None = None,
    fallback: str | None = None,
    poll_min: float = 1.0,
    poll_max: float = 60.0,
    max_batch_size: int | None = None,
    priority: str | Callable[[Any], Any] | None = None,
    deadline: float | datetime | timedelta | None = None,
    deadline_margin: float = 300.0,
    budget: float | None = None,
    prices: Any = None,
) -> Job:
    """Run ``chain`` over every input and return the finished :class:`Job` (blocking).

    ``mode="realtime"`` sends every model call now, under ``max_concurrency`` and the
    provider's rate limits; ``mode="batch"`` sends every model call through the provider's
    Batch API (half price) and waits for the results, round after round. ``mode="auto"``
    decides per item: items whose ``priority`` (an input field or a function of the input)
    is positive or true run realtime, the rest batch; ``deadline`` (seconds from now, a
    ``timedelta`` or a ``datetime``) moves calls still at a provider to realtime
    ``deadline_margin`` seconds before it.
    """
    opts = _options(locals())
    return _run_sync(_start(chain, inputs, opts, store, job_id, chain_ref, until=None))


async def arun(
    chain: Runnable[Any, Any] | str,
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    mode: str = Mode.REALTIME,
    store: StoreArg = None,
    job_id: str | None = None,
    max_concurrency: int = 64,
    rpm: float | None = None,
    tpm: float | None = None,
    max_retries: int = 6,
    timeout: float = 120.0,
    cache: bool = True,
    progress: bool = True,
    window: int | None = None,
    chain_ref: str | None = None,
    callbacks: list[Any] | None = None,
    fallback: str | None = None,
    poll_min: float = 1.0,
    poll_max: float = 60.0,
    max_batch_size: int | None = None,
    priority: str | Callable[[Any], Any] | None = None,
    deadline: float | datetime | timedelta | None = None,
    deadline_margin: float = 300.0,
    budget: float | None = None,
    prices: Any = None,
    _listener: ItemListener | None = None,
) -> Job:
    """Async twin of :func:`run`."""
    opts = _options(locals())
    return await _start(chain, inputs, opts, store, job_id, chain_ref, until=None, listener=_listener)


def submit(chain: Runnable[Any, Any] | str, inputs: Iterable[Any], **kwargs: Any) -> Job:
    """Start a batch job and return once its first round is at the provider.

    Later, from any process: ``Job.open(job.id).poll()`` advances it once without blocking,
    ``.wait()`` runs it to the end.
    """
    return _run_sync(asubmit(chain, inputs, **kwargs))


async def asubmit(
    chain: Runnable[Any, Any] | str, inputs: Iterable[Any] | AsyncIterable[Any], **kwargs: Any
) -> Job:
    kwargs.setdefault("mode", Mode.BATCH)
    kwargs.setdefault("progress", False)
    if kwargs["mode"] != Mode.BATCH:
        raise InvalidOption("submit() is for batch mode; use run() for realtime")
    store, job_id, chain_ref = (
        kwargs.pop("store", None),
        kwargs.pop("job_id", None),
        kwargs.pop("chain_ref", None),
    )
    opts = _options(kwargs)
    return await _start(chain, inputs, opts, store, job_id, chain_ref, until="submitted")


_OPTION_NAMES = {
    "mode",
    "max_concurrency",
    "rpm",
    "tpm",
    "max_retries",
    "timeout",
    "cache",
    "progress",
    "window",
    "callbacks",
    "fallback",
    "poll_min",
    "poll_max",
    "max_batch_size",
    "priority",
    "deadline",
    "deadline_margin",
    "budget",
    "prices",
}


def _deadline_epoch(deadline: Any) -> float | None:
    if deadline is None:
        return None
    if isinstance(deadline, datetime):
        when = deadline if deadline.tzinfo else deadline.astimezone()
        return when.timestamp()
    if isinstance(deadline, timedelta):
        return time.time() + deadline.total_seconds()
    if isinstance(deadline, int | float):
        return time.time() + float(deadline)
    raise TypeError("deadline must be seconds from now, a timedelta or a datetime")


def _options(given: dict[str, Any]) -> RunOptions:
    unknown = set(given) - _OPTION_NAMES - {"chain", "inputs", "store", "job_id", "chain_ref", "_listener"}
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    opts = {k: v for k, v in given.items() if k in _OPTION_NAMES}
    opts["callbacks"] = list(opts.get("callbacks") or [])
    opts["deadline"] = _deadline_epoch(opts.get("deadline"))
    options = RunOptions(**opts)
    options.mode = Mode.parse(options.mode)
    if options.fallback not in (None, Mode.REALTIME):
        raise InvalidOption("fallback must be None or 'realtime'")
    return options


async def _start(
    chain: Runnable[Any, Any] | str,
    inputs: Iterable[Any] | AsyncIterable[Any],
    options: RunOptions,
    store: StoreArg,
    job_id: str | None,
    chain_ref: str | None,
    *,
    until: str | None,
    listener: ItemListener | None = None,
) -> Job:
    job = _create_job(chain, store, job_id, options, chain_ref)
    await _execute(job, inputs, {}, listener, options, until=until)
    return job


def _create_job(
    chain: Runnable[Any, Any] | str,
    store: StoreArg,
    job_id: str | None,
    options: RunOptions,
    chain_ref: str | None,
) -> Job:
    if isinstance(chain, str):
        chain_ref = chain_ref or chain
    runnable = resolve_chain(chain)
    if options.mode in (Mode.BATCH, Mode.AUTO) and options.fallback != Mode.REALTIME:
        check_batchable(runnable)
    st = open_store(store)
    jid = job_id or new_job_id()
    if st.get_job(jid) is not None:
        raise ValueError(f"job {jid!r} already exists in {st.path}; use Job.open(...).resume()")
    now = time.time()
    st.create_job(
        JobRecord(
            id=jid,
            status=JobStatus.CREATED,
            mode=options.mode,
            created_at=now,
            updated_at=now,
            chain_ref=chain_ref,
            options=options.to_record(),
        )
    )
    return Job(jid, st, runnable)


async def _execute(
    job: Job,
    inputs: Iterable[Any] | AsyncIterable[Any] | None,
    overrides: dict[str, Any],
    listener: ItemListener | None = None,
    options: RunOptions | None = None,
    *,
    until: str | None = None,
    cancelling: bool = False,
) -> JobStatus:
    if options is None:
        stored = dict(job.record.options)
        stored.update({k: v for k, v in overrides.items() if k != "callbacks"})
        known = set(RunOptions.__slots__)  # type: ignore[attr-defined]
        options = RunOptions(**{k: v for k, v in stored.items() if k in known})
        options.callbacks = list(overrides.get("callbacks") or [])
    runner = JobRunner(store=job.store, job_id=job.id, chain=job.chain, options=options, listener=listener)
    runner.stop_when = until
    runner.cancelling = cancelling
    display: asyncio.Task[None] | None = None
    if wants_progress(options.progress):
        display = asyncio.create_task(ProgressDisplay(runner, job.id, _total(job, inputs)).run())
    restore = _on_sigterm(runner)
    try:
        return await runner.run(inputs)
    finally:
        restore()
        if display is not None:
            display.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await display


def _total(job: Job, inputs: Any) -> int | None:
    if hasattr(inputs, "__len__"):
        return len(inputs)
    rec = job.record
    return rec.n_items if rec.inputs_complete else None


def _on_sigterm(runner: JobRunner) -> Any:
    """SIGTERM stops like the first Ctrl-C: calls on the wire land, then the job pauses."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, runner.request_stop)
    except (NotImplementedError, RuntimeError):
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGTERM)


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end, also from inside a running loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="batchain-run")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _to_result(event: ItemEvent) -> ItemResult:
    return ItemResult(event.idx, event.status, event.input, event.output, event.error)


async def aas_completed(
    chain: Runnable[Any, Any] | str,
    inputs: Iterable[Any] | AsyncIterable[Any],
    **kwargs: Any,
) -> AsyncIterator[tuple[int, ItemResult]]:
    """Yield ``(index, result)`` as items finish. Leaving early pauses the job cleanly."""
    events: asyncio.Queue[ItemEvent | None] = asyncio.Queue()
    kwargs.setdefault("progress", False)
    task = asyncio.create_task(arun(chain, inputs, _listener=events.put_nowait, **kwargs))
    task.add_done_callback(lambda _: events.put_nowait(None))
    try:
        while True:
            event = await events.get()
            if event is None:
                break
            yield event.idx, _to_result(event)
        await task  # surface errors
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def as_completed(
    chain: Runnable[Any, Any] | str,
    inputs: Iterable[Any],
    **kwargs: Any,
) -> Iterator[tuple[int, ItemResult]]:
    """Sync twin of :func:`aas_completed` (the job runs on a background thread)."""
    # unbounded: the producer is paced by the work itself, and a full queue must never
    # block the job's thread while the consumer is gone
    out: queue.Queue[tuple[int, ItemResult] | BaseException | None] = queue.Queue()
    stop = threading.Event()

    async def pump() -> None:
        agen: Any = aas_completed(chain, inputs, **kwargs)
        try:
            async for pair in agen:
                if stop.is_set():
                    break
                out.put(pair)
        finally:
            await agen.aclose()

    def target() -> None:
        try:
            asyncio.run(pump())
        except BaseException as exc:
            out.put(exc)
        finally:
            out.put(None)

    thread = threading.Thread(target=target, name="batchain-as-completed", daemon=True)
    thread.start()
    try:
        while True:
            got = out.get()
            if got is None:
                break
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        thread.join()
