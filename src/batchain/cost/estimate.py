"""Cost estimates before a run: from the real request bodies, and from a pilot.

Without a pilot, every item's chain runs up to its first model calls, which are captured
(never sent): their input tokens are counted from the exact request bodies (with tiktoken
when its encoding is available offline, otherwise ~4 characters a token, and the estimate
says which) and their output is bounded by ``max_tokens``. Later stages of a multi-call
chain cannot be seen that way: ``pilot=N`` runs N items for real (realtime) in a job of
their own, measures what each item really used across all its stages, and extrapolates to
every item with a 95% interval. The pilot's answers stay in the store, so the real run
that follows reuses them instead of paying again.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from batchain.chains.ref import resolve_chain
from batchain.cost.prices import PriceBook, default_pricebook
from batchain.cost.tokens import CHARS_PER_TOKEN, input_texts, overhead
from batchain.engine.calls import build_request, embeddings_adapter, generic_adapter, is_generic
from batchain.engine.hook import ACTIVE, CallContext, install
from batchain.engine.inputs import aiter_inputs
from batchain.options import Mode, Tier
from batchain.providers.base import CallRequest
from batchain.store.records import Usage

__all__ = ["Estimate", "ModeCost", "aestimate", "count_tokens", "estimate"]

#: each mode priced, and its tier (keys plain strings: they name an Estimate's costs)
_TIERS = {Mode.REALTIME.value: Tier.REALTIME, Mode.BATCH.value: Tier.BATCH}


class _Captured(BaseException):
    """Stops a dry-run item at its model call (BaseException: fallbacks must not catch it)."""


@dataclass(slots=True)
class ModeCost:
    mode: str
    low: Decimal | None
    expected: Decimal | None
    high: Decimal | None
    known: bool


@dataclass(slots=True)
class Estimate:
    items: int
    #: first-stage calls seen in the dry run, and their input tokens
    calls: int
    input_tokens: int
    #: the most output tokens those calls allow (None: some call sets no max_tokens)
    max_output_tokens: int | None
    token_method: str
    models: dict[str, int] = field(default_factory=dict)
    #: cost by mode: from the dry run (first stage, output at its cap) or from the pilot
    costs: dict[str, ModeCost] = field(default_factory=dict)
    pilot_items: int = 0
    pilot_job: str | None = None
    pilot_usage: Usage | None = None
    notes: list[str] = field(default_factory=list)

    def table(self) -> Any:
        from rich.table import Table

        t = Table(title=f"Estimate for {self.items:,} items ({self.basis})")
        for col in ("mode", "low", "expected", "high"):
            t.add_column(col, justify="right" if col != "mode" else "left")
        for mc in self.costs.values():
            t.add_row(mc.mode, _usd(mc.low), _usd(mc.expected), _usd(mc.high))
        return t

    @property
    def basis(self) -> str:
        if self.pilot_items:
            return f"pilot of {self.pilot_items} items, 95% interval"
        return "first-stage requests; output between 0 and max_tokens"


def _usd(v: Decimal | None) -> str:
    return "unknown" if v is None else f"${v:,.4f}"


# -- token counting ----------------------------------------------------------------------------

_ENCODING: Any = None
_ENCODING_TRIED = False


def _encoding() -> Any:
    global _ENCODING, _ENCODING_TRIED
    if not _ENCODING_TRIED:
        _ENCODING_TRIED = True
        try:
            import tiktoken

            _ENCODING = tiktoken.get_encoding("o200k_base")
        except Exception:  # not installed, or its encoding cannot be downloaded offline
            _ENCODING = None
    return _ENCODING


def count_tokens(body: dict[str, Any]) -> tuple[int, str]:
    """Input tokens of a request body, and how they were counted."""
    texts = list(input_texts(body))
    extra = overhead(body)
    enc = _encoding()
    if enc is not None:
        return sum(len(enc.encode(t)) for t in texts) + extra, "tiktoken o200k_base"
    approx = sum(math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts) + extra
    return approx, "approximate: 4 characters a token"


# -- the dry run ---------------------------------------------------------------------------------


class _DryManager:
    """Stands in for a job's CallManager: captures each model call instead of sending it."""

    def __init__(self) -> None:
        self.requests: list[CallRequest] = []
        self.unsupported: set[str] = set()

    async def generate(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: Any,
        kwargs: dict[str, Any],
        item_idx: int,
        *,
        sync: bool = False,
    ) -> Any:
        try:
            adapter, request = build_request(model, messages, stop, kwargs, "")
        except Exception:  # the model's own payload builder refused: count it as generic
            adapter, request = generic_adapter(), generic_adapter().build(model, messages, stop, kwargs, "")
        if is_generic(adapter):
            self.unsupported.add(type(model).__name__)
        self.requests.append(request)
        raise _Captured()

    async def embed(
        self, resource: Any, params: dict[str, Any], item_idx: int, *, sync: bool = False
    ) -> dict[str, Any]:
        self.requests.append(embeddings_adapter(resource).request(resource, params, ""))
        raise _Captured()


async def _dry_run(
    chain: Runnable[Any, Any], inputs: Iterable[Any] | AsyncIterable[Any], concurrency: int
) -> tuple[int, _DryManager]:
    install()
    manager = _DryManager()
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    n = 0

    async def one(idx: int, value: Any) -> None:
        token = ACTIVE.set(CallContext(manager, idx, loop))
        try:
            await chain.ainvoke(value)
        except (_Captured, Exception):
            pass  # stopped at its first model call, or a step failed before it
        finally:
            ACTIVE.reset(token)
            slots.release()

    async for value in aiter_inputs(inputs):
        await slots.acquire()
        task = asyncio.create_task(one(n, value))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.wait(list(tasks))
    return n, manager


# -- pricing ----------------------------------------------------------------------------------------


def _price(book: PriceBook, req: CallRequest, usage: Usage, tier: str) -> Decimal | None:
    cost = book.cost_of(req.provider, req.model, usage, tier)
    return Decimal(cost.total) if cost.known and cost.total is not None else None


def _dry_costs(book: PriceBook, requests: list[CallRequest], counts: list[int]) -> dict[str, ModeCost]:
    costs: dict[str, ModeCost] = {}
    for mode, tier in _TIERS.items():
        low: Decimal | None = Decimal(0)
        high: Decimal | None = Decimal(0)
        for req, n_in in zip(requests, counts, strict=True):
            lo = _price(book, req, Usage(n_in, 0, requests=1), tier)
            hi = _price(book, req, Usage(n_in, req.max_output or 0, requests=1), tier)
            low = None if lo is None or low is None else low + lo
            if req.max_output is None or hi is None or high is None:
                high = None
            else:
                high += hi
        costs[mode] = ModeCost(mode, low, None, high, low is not None)
    return costs


async def aestimate(
    chain: Runnable[Any, Any] | str,
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    pilot: int = 0,
    store: Any = None,
    prices: Any = None,
    concurrency: int = 64,
    urgent_fraction: float = 0.0,
    **run_options: Any,
) -> Estimate:
    """Estimate what running ``chain`` over ``inputs`` costs in realtime, batch and auto mode.

    ``urgent_fraction`` is the share of items auto mode would run realtime (the ``high``
    priority level, by default); the rest are priced as batch (``normal`` and ``low``).
    """
    runnable = resolve_chain(chain)
    book = PriceBook(prices) if prices else default_pricebook()
    items = inputs if isinstance(inputs, list | AsyncIterable) else list(inputs)
    n, dry = await _dry_run(runnable, items, concurrency)
    counted = [count_tokens(r.body) if r.body else (r.est_tokens, "approximate") for r in dry.requests]
    counts = [c for c, _ in counted]
    method = counted[0][1] if counted else "no model calls seen"
    caps = [r.max_output for r in dry.requests]
    models: dict[str, int] = {}
    for r in dry.requests:
        models[f"{r.provider}/{r.model}"] = models.get(f"{r.provider}/{r.model}", 0) + 1
    est = Estimate(
        items=n,
        calls=len(dry.requests),
        input_tokens=sum(counts),
        max_output_tokens=None if any(c is None for c in caps) else sum(c or 0 for c in caps),
        token_method=method,
        models=models,
        costs=_dry_costs(book, dry.requests, counts),
    )
    if dry.unsupported:
        est.notes.append(
            "no Batch API adapter for " + ", ".join(sorted(dry.unsupported)) + ": batch mode "
            "runs them only with the realtime fallback (--realtime-fallback; in Python fallback='realtime')"
        )
    if pilot > 0 and n:
        if not isinstance(items, list):
            raise ValueError("a pilot needs the inputs as a list (it samples them)")
        await _pilot(est, runnable, items, pilot, store, book, run_options)
    else:
        est.notes.append("first-stage calls only: run a pilot to see later stages")
    est.costs[Mode.AUTO.value] = _mix(est.costs[Mode.REALTIME], est.costs[Mode.BATCH], urgent_fraction)
    return est


def _mix(realtime: ModeCost, batch: ModeCost, urgent: float) -> ModeCost:
    """Auto mode: the urgent share at realtime prices, the rest at batch prices."""
    share = Decimal(str(urgent))

    def blend(a: Decimal | None, b: Decimal | None) -> Decimal | None:
        return None if a is None or b is None else a * share + b * (1 - share)

    return ModeCost(
        Mode.AUTO.value,
        blend(realtime.low, batch.low),
        blend(realtime.expected, batch.expected),
        blend(realtime.high, batch.high),
        realtime.known and batch.known,
    )


def estimate(chain: Runnable[Any, Any] | str, inputs: Iterable[Any], **kwargs: Any) -> Estimate:
    """Sync twin of :func:`aestimate`."""
    from batchain._sync import run_sync

    return run_sync(aestimate(chain, inputs, **kwargs))


async def _pilot(
    est: Estimate,
    chain: Runnable[Any, Any],
    items: list[Any],
    pilot: int,
    store: Any,
    book: PriceBook,
    run_options: dict[str, Any],
) -> None:
    from batchain.api import arun

    step = max(1, len(items) // pilot)
    sample = items[::step][:pilot]  # spread over the dataset, not just its head
    run_options.setdefault("progress", False)
    job = await arun(chain, sample, store=store, mode=Mode.REALTIME, **run_options)
    est.pilot_items = len(sample)
    est.pilot_job = job.id
    per_item = job.store.item_usage(job.id)
    est.pilot_usage = sum(per_item.values(), Usage())
    for mode, tier in _TIERS.items():
        totals: list[Decimal] = []
        known = True
        for calls in job.store.item_calls(job.id).values():
            total = Decimal(0)
            for provider, model, usage in calls:
                cost = book.cost_of(provider, model, usage, tier)
                if not cost.known or cost.total is None:
                    known = False
                    break
                total += Decimal(cost.total)
            totals.append(total)
        if not known or not totals:
            est.costs[mode] = ModeCost(mode, None, None, None, False)
            continue
        mean = statistics.fmean(float(t) for t in totals)
        sd = statistics.stdev(float(t) for t in totals) if len(totals) > 1 else 0.0
        half = 1.96 * sd / math.sqrt(len(totals)) * est.items
        expected = mean * est.items
        est.costs[mode] = ModeCost(
            mode,
            Decimal(str(max(expected - half, 0.0))),
            Decimal(str(expected)),
            Decimal(str(expected + half)),
            True,
        )
    est.notes.append(f"pilot job {job.id}: its answers are in the store, so the real run reuses them")
