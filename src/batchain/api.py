"""The public entry points: ``run``/``arun`` and ``as_completed``/``aas_completed``."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from langchain_core.runnables import Runnable, RunnableConfig

from batchain._sync import iterate_sync, run_sync
from batchain.chains.inspection import check_batchable, check_priced
from batchain.chains.ref import resolve_chain
from batchain.engine.inputs import Inputs
from batchain.engine.lifecycle import Purpose, RunControl
from batchain.engine.results import ItemEvent, ItemListener
from batchain.engine.session import execute, expected_total, pricebook_for
from batchain.errors import InvalidOption
from batchain.job import ItemResult, Job, new_job_id
from batchain.options import MODES as MODES  # still importable from here
from batchain.options import FlexFallback, Mode, PromptCache, RunOptions, take_config
from batchain.priority import PriorityRule, auto_routes
from batchain.states import JobStatus
from batchain.store import StoreArg, open_store
from batchain.store.records import JobRecord

#: what a job id may be: safe on a command line, in a file name and in a terminal
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

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
    input_ref: str | None = None,
    callbacks: list[Any] | None = None,
    config: RunnableConfig | None = None,
    fallback: str | None = None,
    batch_only: bool = False,
    endpoint_modes: Mapping[str, str] | None = None,
    poll_min: float = 1.0,
    poll_max: float = 60.0,
    lost_after: float | None = None,
    max_batch_size: int | None = None,
    max_open_batches: int | None = None,
    max_enqueued_tokens: int | None = None,
    prompt_cache: str = PromptCache.AUTO,
    priority: str | int | Callable[[Any], Any] | None = None,
    priority_field: str | None = None,
    auto_routes: Mapping[str, str] | None = None,
    deadline: float | datetime | timedelta | None = None,
    deadline_margin: float = 300.0,
    budget: float | None = None,
    prices: Any = None,
    threads: int = 256,
    flex_timeout: float = 900.0,
    flex_patience: float = 300.0,
    flex_fallback: str = "standard",
    flex_models: Sequence[str] | None = None,
) -> Job:
    """Run ``chain`` over every input and return the finished :class:`Job` (blocking).

    ``mode="realtime"`` sends every model call now, under ``max_concurrency`` and the
    provider's rate limits; ``mode="batch"`` sends every model call through the provider's
    Batch API (half price) and waits for the results, round after round. ``mode="auto"``
    decides per item by its priority level (``high``, ``normal``, ``low``; a number:
    positive high, 0 normal, negative low; true/false: high/normal): high runs realtime,
    normal and low batch (normal goes flex where the model offers it), or as
    ``auto_routes`` (e.g. ``{"normal": "realtime"}``) says. The level is ``priority``
    (one level for every item, or a function of the input that returns one) or the input
    field ``priority_field`` (missing: normal); an item whose value is not a level fails
    with :class:`~batchain.errors.InvalidPriority`, the others run on. ``deadline``
    (seconds from now, a ``timedelta`` or a ``datetime``) moves every call still waiting
    on a provider to realtime ``deadline_margin`` seconds before it. ``threads`` is the
    pool for sync steps (a sync lambda that calls a model holds a thread while it waits;
    in batch mode a round is flushed when every one of them waits). ``lost_after``:
    seconds a provider batch may be unknown to its provider before it is declared lost and
    its calls sent again (default ``$BATCHAIN_LOST_AFTER_S``, else 600).
    ``max_open_batches`` and ``max_enqueued_tokens`` cap, per model, the provider batches open at once and the
    input tokens they hold (default: no cap of ours; a provider's refusal for its queue or
    a batch's size makes the calls wait or go in smaller batches, never fail).
    ``prompt_cache="auto"`` (batch mode) puts calls that share a long system prompt in the
    same provider batches and, for Anthropic, marks it for the prompt cache after one
    priming batch per prompt; ``"off"`` sends every request as the chain built it.

    Batch mode parks a model's calls only where its endpoint has a Batch API: a model sent
    to an OpenAI-compatible server without one (Gemini's, vLLM...) runs realtime, noted in
    the report, or with ``batch_only=True`` is refused before anything is sent.
    ``endpoint_modes`` chooses for a model name, base URL or host: ``"batch"`` or
    ``"realtime"`` (see :mod:`batchain.providers.endpoints`).

    ``mode="flex"`` sends every call now, like realtime, but an OpenAI model that offers
    flex processing (the price catalog has a flex price for it, or it is one of
    ``flex_models``) is asked at ``service_tier="flex"``: batch price, slower answers
    (``flex_timeout`` per request, default 15 minutes), and refusals for lack of capacity,
    retried with backoff for ``flex_patience`` seconds. A call that cannot go at flex
    (another provider, a model without flex, or flex's patience run out) goes by
    ``flex_fallback``: ``"standard"`` (sent at the standard tier and price) or ``"fail"``
    (see :mod:`batchain.engine.flex`).

    ``chain_ref`` and ``input_ref`` are recorded with the job: where its chain and its
    inputs came from (the CLI records the chain's ``file.py:name`` and the input file, so
    ``batchain resume`` can load and reopen them).
    """
    opts = _options(locals())
    refs = _Refs(chain_ref, input_ref)
    return run_sync(_start(chain, inputs, opts, store, job_id, refs, until=None))


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
    input_ref: str | None = None,
    callbacks: list[Any] | None = None,
    config: RunnableConfig | None = None,
    fallback: str | None = None,
    batch_only: bool = False,
    endpoint_modes: Mapping[str, str] | None = None,
    poll_min: float = 1.0,
    poll_max: float = 60.0,
    lost_after: float | None = None,
    max_batch_size: int | None = None,
    max_open_batches: int | None = None,
    max_enqueued_tokens: int | None = None,
    prompt_cache: str = PromptCache.AUTO,
    priority: str | int | Callable[[Any], Any] | None = None,
    priority_field: str | None = None,
    auto_routes: Mapping[str, str] | None = None,
    deadline: float | datetime | timedelta | None = None,
    deadline_margin: float = 300.0,
    budget: float | None = None,
    prices: Any = None,
    threads: int = 256,
    flex_timeout: float = 900.0,
    flex_patience: float = 300.0,
    flex_fallback: str = "standard",
    flex_models: Sequence[str] | None = None,
    _listener: ItemListener | None = None,
) -> Job:
    """Async twin of :func:`run`."""
    opts = _options(locals())
    refs = _Refs(chain_ref, input_ref)
    return await _start(chain, inputs, opts, store, job_id, refs, until=None, listener=_listener)


def submit(chain: Runnable[Any, Any] | str, inputs: Iterable[Any], **kwargs: Any) -> Job:
    """Start a batch job and return once its first round is at the provider.

    Later, from any process: ``Job.open(job.id).poll()`` advances it once without blocking,
    ``.wait()`` runs it to the end. In another mode (``mode="realtime"``, ``"auto"``,
    ``"flex"``) the job is queued: its inputs are stored, nothing runs, and a worker
    (:func:`batchain.work`, ``batchain worker``) or ``.wait()`` runs it.
    """
    return run_sync(asubmit(chain, inputs, **kwargs))


async def asubmit(
    chain: Runnable[Any, Any] | str, inputs: Iterable[Any] | AsyncIterable[Any], **kwargs: Any
) -> Job:
    kwargs.setdefault("mode", Mode.BATCH)
    kwargs.setdefault("progress", False)
    store, job_id = kwargs.pop("store", None), kwargs.pop("job_id", None)
    refs = _Refs(kwargs.pop("chain_ref", None), kwargs.pop("input_ref", None))
    opts = _options(kwargs)
    until = "submitted" if opts.mode == Mode.BATCH else "stored"
    return await _start(chain, inputs, opts, store, job_id, refs, until=until)


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
    "config",
    "fallback",
    "batch_only",
    "endpoint_modes",
    "poll_min",
    "poll_max",
    "lost_after",
    "max_batch_size",
    "max_open_batches",
    "max_enqueued_tokens",
    "prompt_cache",
    "priority",
    "priority_field",
    "auto_routes",
    "deadline",
    "deadline_margin",
    "budget",
    "prices",
    "threads",
    "flex_timeout",
    "flex_patience",
    "flex_fallback",
    "flex_models",
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
    named = {"chain", "inputs", "store", "job_id", "chain_ref", "input_ref", "_listener"}
    unknown = set(given) - _OPTION_NAMES - named
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    opts = {k: v for k, v in given.items() if k in _OPTION_NAMES}
    opts["callbacks"] = list(opts.get("callbacks") or [])
    take_config(opts)
    opts["deadline"] = _deadline_epoch(opts.get("deadline"))
    options = RunOptions(**opts)
    options.mode = Mode.parse(options.mode)
    options.prompt_cache = PromptCache.parse(options.prompt_cache)
    if options.fallback not in (None, Mode.REALTIME):
        raise InvalidOption("fallback must be None or 'realtime'")
    if options.batch_only and options.fallback == Mode.REALTIME:
        raise InvalidOption("batch_only=True and fallback='realtime' contradict each other: choose one")
    options.endpoint_modes = _endpoint_modes(options.endpoint_modes)
    _check_priority(options)
    _check_flex(options)
    for name in ("max_batch_size", "max_open_batches", "max_enqueued_tokens"):
        value = getattr(options, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise InvalidOption(f"{name} must be a whole number of at least 1, or None; got {value!r}")
    return options


def _check_priority(options: RunOptions) -> None:
    """Auto mode's options, refused now (before a job exists) when they mean nothing."""
    rule = PriorityRule.of(options.priority, options.priority_field)
    auto_routes(options.auto_routes)
    options.auto_routes = {str(k): str(v) for k, v in (options.auto_routes or {}).items()}
    if options.mode != Mode.AUTO and (rule is not None or options.auto_routes):
        raise InvalidOption("priority, priority_field and auto_routes apply to mode='auto'")
    if rule is not None and rule.level is not None:
        options.priority = rule.level.value  # stored as the level it means


def _check_flex(options: RunOptions) -> None:
    """Flex options: a known fallback, a positive timeout, a patience, model names."""
    options.flex_fallback = FlexFallback.parse(options.flex_fallback)
    timeout, patience = options.flex_timeout, options.flex_patience
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidOption(f"flex_timeout must be a number of seconds above 0; got {timeout!r}")
    if isinstance(patience, bool) or not isinstance(patience, int | float) or patience < 0:
        raise InvalidOption(f"flex_patience must be a number of seconds, 0 or more; got {patience!r}")
    models: Any = options.flex_models
    if models is None:
        return
    if isinstance(models, str) or not all(isinstance(m, str) and m for m in models):
        raise InvalidOption(f"flex_models must be a list of model names or patterns; got {models!r}")
    options.flex_models = list(models)


def _endpoint_modes(given: Any) -> dict[str, str]:
    from batchain.providers.endpoints import ENDPOINT_MODES

    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise InvalidOption("endpoint_modes must map a model name, base URL or host to 'batch' or 'realtime'")
    out: dict[str, str] = {}
    for target, mode in given.items():
        value = {True: "batch", False: "realtime"}.get(mode, mode) if isinstance(mode, bool) else mode
        if not isinstance(target, str) or not target or value not in ENDPOINT_MODES:
            raise InvalidOption(
                f"endpoint_modes[{target!r}] = {mode!r}: use a model name, base URL or host, "
                "and 'batch' or 'realtime'"
            )
        out[target.rstrip("/")] = value
    return out


class _Refs(NamedTuple):
    """Where a job's chain and inputs came from, as recorded with it."""

    chain: str | None
    inputs: str | None


async def _start(
    chain: Runnable[Any, Any] | str,
    inputs: Iterable[Any] | AsyncIterable[Any],
    options: RunOptions,
    store: StoreArg,
    job_id: str | None,
    refs: _Refs,
    *,
    until: str | None,
    listener: ItemListener | None = None,
) -> Job:
    if isinstance(chain, str):
        refs = _Refs(refs.chain or chain, refs.inputs)
    runnable = resolve_chain(chain)
    # a model the price catalog does not know is named now, before anything is paid
    check_priced(runnable, pricebook_for(options))
    if options.mode in (Mode.BATCH, Mode.AUTO) and options.fallback != Mode.REALTIME:
        # may ask an endpoint whether it has a Batch API: off the event loop
        await asyncio.to_thread(
            check_batchable, runnable, options.endpoint_modes, batch_only=options.batch_only
        )
    job = _create_job(runnable, store, job_id, options, refs)
    await _execute(job, inputs, options, listener, until=until)
    return job


def _create_job(
    runnable: Runnable[Any, Any],
    store: StoreArg,
    job_id: str | None,
    options: RunOptions,
    refs: _Refs,
) -> Job:
    jid = job_id or new_job_id()
    if not _JOB_ID.fullmatch(jid):
        raise InvalidOption(
            f"job id {jid!r}: use letters, digits and . _ : - (at most 128, starting with a "
            "letter or digit), so it can be typed on a command line"
        )
    st = open_store(store)
    owned = st is not store
    if st.get_job(jid) is not None:
        if owned:
            st.close()
        raise ValueError(f"job {jid!r} already exists in {st.name}; use Job.open(...).resume()")
    now = time.time()
    st.create_job(
        JobRecord(
            id=jid,
            status=JobStatus.CREATED,
            mode=options.mode,
            created_at=now,
            updated_at=now,
            chain_ref=refs.chain,
            input_ref=refs.inputs,
            options=options.to_record(),
        )
    )
    return Job(jid, st, runnable, owns_store=owned)


async def _execute(
    job: Job,
    inputs: Iterable[Any] | AsyncIterable[Any] | None,
    options: RunOptions,
    listener: ItemListener | None = None,
    *,
    until: str | None = None,
) -> JobStatus:
    if until == "stored":  # queued for a worker: the inputs only
        await Inputs(job.store, job.id, RunControl(), store_first=True).store_all(inputs or ())
        return job.status
    purpose = Purpose.SUBMIT if until == "submitted" else Purpose.FINISH
    return await execute(
        job.store,
        job.id,
        job.chain,
        inputs,
        options,
        total=expected_total(inputs, job.record),
        listener=listener,
        purpose=purpose,
    )


def _to_result(event: ItemEvent) -> ItemResult:
    return ItemResult(event.idx, event.status, event.input, event.output, event.error)


async def aas_completed(
    chain: Runnable[Any, Any] | str,
    inputs: Iterable[Any] | AsyncIterable[Any],
    **kwargs: Any,
) -> AsyncGenerator[tuple[int, ItemResult], None]:
    """Yield ``(index, result)`` as items finish. Leaving early pauses the job cleanly."""
    kwargs.setdefault("progress", False)
    start = lambda told: arun(chain, inputs, _listener=told, **kwargs)  # noqa: E731
    async with contextlib.aclosing(job_events(start, [])) as events:
        async for event in events:
            yield event.idx, _to_result(event)


async def job_events(
    start: Callable[[ItemListener], Coroutine[Any, Any, Job]], ended: list[Job]
) -> AsyncGenerator[ItemEvent, None]:
    """Run the job ``start(listener)`` as a task and yield its item events as they come;
    the job goes to ``ended`` after the last (its errors are raised). Leaving early
    cancels the task, and waits until it has stopped."""
    events: asyncio.Queue[ItemEvent | None] = asyncio.Queue()
    task = asyncio.create_task(start(events.put_nowait))
    task.add_done_callback(lambda _: events.put_nowait(None))
    try:
        while (event := await events.get()) is not None:
            yield event
        ended.append(await task)
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
    return iterate_sync(lambda: aas_completed(chain, inputs, **kwargs), "batchain-as-completed")
