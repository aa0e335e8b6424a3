"""The one wiring point of the engine: from a job's options to its scheduler, price book,
budget, batch coordinator, call manager, fast and bulk paths, and the runner that drives
them; and the entry point that runs a job with them (used by ``run``/``submit`` and by the
``Job`` handle's ``resume``/``poll``/``cancel``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import weakref
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig

from batchain.chains.fastpath import (
    FastChain,
    RequestTemplate,
    compile_template,
    inspect_fast,
    inspect_stages,
)
from batchain.chains.inspection import find_models
from batchain.cost.prices import PriceBook, default_pricebook
from batchain.engine import lccache
from batchain.engine.batching import BatchCoordinator, lost_after_seconds
from batchain.engine.breaker import Breakers
from batchain.engine.budget import Budget
from batchain.engine.bulk import BulkItems
from batchain.engine.calls import BatchPrices, CallManager, build_request
from batchain.engine.capacity import Capacity
from batchain.engine.claims import Claims
from batchain.engine.feed import Returns, Window
from batchain.engine.flex import FlexPolicy
from batchain.engine.inputs import Inputs, InputSource
from batchain.engine.lifecycle import Lease, Purpose, RunControl, Seat
from batchain.engine.progress import ProgressDisplay, wants_progress
from batchain.engine.promptcache import PrefixCaches
from batchain.engine.results import ItemListener, Results
from batchain.engine.runner import JobRunner, RunParts
from batchain.engine.scheduler import Scheduler
from batchain.errors import InvalidOption
from batchain.options import PRIORITY_FUNCTION, FlexFallback, Mode, PromptCache, RunOptions, take_config
from batchain.priority import Priority, PriorityRule, Route, auto_routes, parse_level
from batchain.providers.base import remember_model_secrets
from batchain.states import JobStatus
from batchain.store.base import Store
from batchain.store.records import JobRecord

__all__ = ["execute", "expected_total", "not_shared", "pricebook_for", "resolve_options", "wire"]


def item_config(stored: dict[str, Any]) -> RunnableConfig:
    """What each item's chain is invoked with, from the job's stored ``config``."""
    config = RunnableConfig(max_concurrency=None)
    if stored.get("tags") is not None:
        config["tags"] = [str(t) for t in stored["tags"]]
    if stored.get("metadata") is not None:
        config["metadata"] = dict(stored["metadata"])
    if stored.get("run_name") is not None:
        config["run_name"] = str(stored["run_name"])
    if stored.get("configurable") is not None:
        config["configurable"] = dict(stored["configurable"])
    if stored.get("recursion_limit") is not None:
        config["recursion_limit"] = int(stored["recursion_limit"])
    return config


def pricebook_for(options: RunOptions) -> PriceBook:
    """The prices a run uses: its ``prices`` overrides, else the process's default book."""
    return PriceBook(options.prices) if options.prices else default_pricebook()


def wire(
    store: Store,
    job_id: str,
    chain: Runnable[Any, Any],
    options: RunOptions,
    listener: ItemListener | None = None,
    purpose: Purpose = Purpose.FINISH,
) -> JobRunner:
    """A runner for one run of a job, with every part built from ``options``."""
    for model in find_models(chain):  # keys of any format never reach the store or logs
        remember_model_secrets(model)
    #: flex mode whose calls without flex go through the Batch API: routed as auto mode
    #: routes a level that goes flex (CallManager.route)
    flex_batch = _flex_batch(options)
    batched = options.mode in (Mode.BATCH, Mode.AUTO) or flex_batch
    control = RunControl(purpose=purpose)
    breakers = Breakers(job_id, on_open=control.pause_raising)
    scheduler = Scheduler(
        max_concurrency=options.max_concurrency,
        rpm=options.rpm,
        tpm=options.tpm,
        max_retries=options.max_retries,
        timeout=options.timeout,
        breakers=breakers,
        board=store,
    )
    control.on_stop.append(scheduler.stop)
    helping = purpose is Purpose.ASSIST
    if helping:
        refused = not_shared(options)
        if refused is not None:
            raise InvalidOption(f"job {job_id} is not shared among processes: {refused}")
    lease = (Seat if helping else Lease)(store, job_id, on_lost=control.fail)
    changed = asyncio.Event()
    pricebook = pricebook_for(options)
    budget = (
        Budget(Decimal(str(options.budget)), store.job_spent(job_id), pricebook)
        if options.budget is not None
        else None
    )
    batch = (
        BatchCoordinator(
            store=store,
            job_id=job_id,
            max_retries=options.max_retries,
            poll_min=options.poll_min,
            poll_max=options.poll_max,
            max_batch_size=options.max_batch_size,
            on_change=changed.set,
            usage_of=lambda adapter, body: adapter.usage(body),
            price_of=BatchPrices(pricebook),
            budget=budget,
            guard=lease.guard,
            lost_after=lost_after_seconds(options.lost_after),
            on_refused=control.pause,
            capacity=Capacity(
                max_open_batches=options.max_open_batches,
                max_enqueued_tokens=options.max_enqueued_tokens,
                backoff_min=options.poll_min,
                backoff_max=options.poll_max,
            ),
            breakers=breakers,
            prompt_cache=PrefixCaches(
                enabled=options.prompt_cache == PromptCache.AUTO, board=store, job_id=job_id
            ),
        )
        if batched
        else None
    )
    auto = options.mode == Mode.AUTO
    priority = PriorityRule.of(options.priority, options.priority_field) if auto else None
    calls = CallManager(
        routes=auto_routes(options.auto_routes) if auto else _ALL_FLEX if flex_batch else None,
        store=store,
        job_id=job_id,
        scheduler=scheduler,
        cache=options.cache,
        timeout=options.timeout,
        batch=batch,
        fallback=options.fallback,
        batch_only=options.batch_only,
        endpoint_modes=options.endpoint_modes,
        on_fatal=control.fail,
        pricebook=pricebook,
        budget=budget,
        on_budget=lambda exc: control.pause(str(exc)),
        guard=lease.guard,
        flex=FlexPolicy.of(options, pricebook),
    )
    if auto and calls.flex is not None:
        calls.flex_items = set()  # the items whose level chose flex (CallManager.admit)
    #: the fast path for `prompt | model | parser`, when nothing observes the run
    configurable = bool(options.config.get("configurable"))
    found = inspect_fast(chain, callbacks=options.callbacks, configurable=configurable)
    fast = found if isinstance(found, FastChain) else None
    paths = {"fast_path": "on" if fast is not None else f"off: {found}"}
    window = Window(_window_size(options), control, changed)
    control.on_stop.append(window.wake)
    returns = None
    if batch is not None and options.mode == Mode.BATCH:
        # every call of a stage goes to the provider at once: items whose calls are there
        # leave the window, and come back as their batches end
        returns = Returns(batch.live, changed)
        batch.on_ended = returns.ended
    results = Results(store, job_id, listener)
    # realtime items are taken a chunk at a time, so workers elsewhere can share them
    claims = Claims(store, job_id, lease, control, results.flush) if batch is None else None
    runner = JobRunner(
        RunParts(
            store=store,
            job_id=job_id,
            chain=chain,
            mode=options.mode,
            control=control,
            lease=lease,
            changed=changed,
            scheduler=scheduler,
            calls=calls,
            batch=batch,
            fast=fast,
            results=results,
            window=window,
            inputs=Inputs(store, job_id, control, store_first=batched, claims=claims, helping=helping),
            deadline=options.deadline,
            deadline_margin=options.deadline_margin,
            paths=paths,
            callbacks=options.callbacks,
            item_config=item_config(options.config),
            threads=options.threads,
            timeout=options.timeout,
            priority=priority,
            returns=returns,
            claims=claims,
        )
    )
    if options.mode == Mode.BATCH:
        stages = (
            (fast,) if fast else inspect_stages(chain, callbacks=options.callbacks, configurable=configurable)
        )
        runner.bulk, why = _bulk_items(runner, stages, calls, batch, store, job_id, budget is None)
        paths["bulk_path"] = _bulk_path(runner.bulk, why)
    return runner


def not_shared(options: RunOptions) -> str | None:
    """Why a job's items cannot be shared with other processes; None if they can. Its
    provider batches are one process's (the lease holder's), and a budget is held by one
    process's accounting: such a job runs in one process at a time."""
    if options.mode in (Mode.BATCH, Mode.AUTO) or _flex_batch(options):
        return (
            f"{options.mode} mode sends its calls through provider batches, which the job's "
            "runner alone submits"
        )
    if options.budget is not None:
        return "it has a budget, which one process at a time holds"
    return None


def _flex_batch(options: RunOptions) -> bool:
    return options.mode == Mode.FLEX and options.flex_fallback == FlexFallback.BATCH


#: flex mode with ``flex_fallback="batch"``: every level's calls go flex, else batch
_ALL_FLEX: dict[Priority, Route] = dict.fromkeys(Priority, Route.FLEX)


def _window_size(options: RunOptions) -> int:
    if options.window:
        return options.window
    if options.mode == Mode.BATCH:
        # items whose calls are at a provider leave the window, so it bounds memory and the
        # calls each flush sends, not the round: 10,000 rows or coroutines (measured at
        # 50,000 items: half the peak memory of 50,000, for the same client time)
        return 10_000
    if options.mode == Mode.AUTO or _flex_batch(options):
        # auto mode (and flex falling back to batches) keeps its items (its deadline may
        # send their calls realtime): every parked item holds its coroutine, and each window
        # is a round
        return 50_000
    return max(256, 4 * options.max_concurrency)


def _bulk_items(
    runner: JobRunner,
    stages: tuple[FastChain, ...] | str,
    calls: CallManager,
    batch: BatchCoordinator | None,
    store: Store,
    job_id: str,
    stubs: bool,
) -> tuple[BulkItems | None, str]:
    """Batch mode on the fast path (a chain of one or more ``prompt | model [| parser]``
    stages): items as rows, no task each; or why not."""
    if batch is None:
        return None, "no provider batches"
    if isinstance(stages, str):
        return None, f"the chain is not on the fast path: {stages}"
    templates: list[RequestTemplate] = []
    for n, fast in enumerate(stages, 1):
        template = _template_of(fast, calls)
        if isinstance(template, str):
            return None, template if len(stages) == 1 else f"stage {n} of {len(stages)}: {template}"
        templates.append(template)
    bulk = BulkItems(
        stages=templates,
        calls=calls,
        batch=batch,
        store=store,
        job_id=job_id,
        settle=runner.settle_item,
        spill=runner.spill,
        evict=runner.evict_row,
        stubs=stubs,
        returns=runner.parts.returns,
        settle_evicted=runner.settle_evicted,
        inputs_told=runner.parts.results.listener is not None,
    )
    if runner.parts.returns is not None and bulk.single:
        batch.on_answered = bulk.answered
    return bulk, ""


def _template_of(fast: FastChain, calls: CallManager) -> RequestTemplate | str:
    """The request template of a stage whose calls can wait for provider batches, or why
    there is none."""
    if lccache.applies(fast.model):
        # rows build no messages to key LangChain's cache by: items go the coroutine way
        return "a LangChain LLM cache applies to the model"
    stop, kwargs = fast.call_args()
    salt = calls.salt_for(fast.model)
    template = compile_template(fast, lambda msgs: build_request(fast.model, msgs, stop, kwargs, salt))
    if template is None:
        return "the prompt or model admits no request template"
    if not calls.parkable(template.adapter, fast.model, template.base).batch:
        return "the model's endpoint has no Batch API"
    return template


def _bulk_path(bulk: BulkItems | None, why: str) -> str:
    if bulk is None:
        return f"off: {why}"
    return "on" if bulk.single else f"on: {len(bulk.stages)} stages"


def expected_total(inputs: Any, record: JobRecord) -> int | None:
    """How many items the job will have, when known (for progress)."""
    if hasattr(inputs, "__len__"):
        return len(inputs)
    return record.n_items if record.inputs_complete else None


def resolve_options(stored: dict[str, Any], overrides: dict[str, Any]) -> RunOptions:
    """A job's stored options with ``overrides`` (callbacks are never stored)."""
    overrides = {**overrides, "callbacks": list(overrides.get("callbacks") or [])}
    if "config" in overrides:  # as run() takes it: its callbacks and max_concurrency spread out
        take_config(overrides)
    merged = _upgraded(stored)
    if (
        merged.get(PRIORITY_FUNCTION)
        and overrides.get("priority") is None
        and "priority_field" not in overrides
    ):
        raise InvalidOption(
            "this job ran with a priority function, which cannot be stored: pass it again"
            " (priority=...), or one level for the items left (priority='normal')"
        )
    merged.update({k: v for k, v in overrides.items() if k != "callbacks"})
    # a level or function given now replaces the stored field, and a field the stored level
    if overrides.get("priority") is not None:
        merged["priority_field"] = overrides.get("priority_field")
    elif overrides.get("priority_field") is not None:
        merged["priority"] = None
    known = RunOptions.names()
    options = RunOptions(**{k: v for k, v in merged.items() if k in known})
    options.callbacks = overrides["callbacks"]
    return options


def _upgraded(stored: dict[str, Any]) -> dict[str, Any]:
    """Stored options as this build reads them: before levels, ``priority`` named the
    input field of urgent items (an older job resumes with it as ``priority_field``)."""
    out = dict(stored)
    old = out.get("priority")
    if "priority_field" not in out and isinstance(old, str):
        try:
            parse_level(old)
        except ValueError:
            out["priority"], out["priority_field"] = None, old
    return out


async def execute(
    store: Store,
    job_id: str,
    chain: Runnable[Any, Any],
    inputs: InputSource | None,
    options: RunOptions,
    *,
    total: int | None = None,
    listener: ItemListener | None = None,
    purpose: Purpose = Purpose.FINISH,
) -> JobStatus:
    """Run a job once, for ``purpose``, with live progress if wanted."""
    runner = wire(store, job_id, chain, options, listener, purpose)
    display: asyncio.Task[None] | None = None
    if wants_progress(options.progress):
        display = asyncio.create_task(ProgressDisplay(runner, job_id, total).run())
    restore = _on_sigterm(runner.request_stop)
    try:
        return await runner.run(inputs)
    finally:
        restore()
        if display is not None:
            display.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await display


#: per loop, the stop of every job running on it: one SIGTERM handler stops them all
_STOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def _on_sigterm(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM stops like the first Ctrl-C: calls on the wire land, then the job pauses
    (every job running on this loop)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    stops = _STOPS.setdefault(loop, [])

    def stop_all() -> None:
        for each in list(stops):
            each()

    if not stops:
        try:
            loop.add_signal_handler(signal.SIGTERM, stop_all)
        except (NotImplementedError, RuntimeError):
            return lambda: None
    stops.append(stop)

    def restore() -> None:
        stops.remove(stop)
        if not stops:
            loop.remove_signal_handler(signal.SIGTERM)

    return restore
