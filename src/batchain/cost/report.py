"""What a job cost: pure functions over a store and a job id.

Definitions
-----------
* **paid** - the distinct calls this job paid for (``job_calls.source = 'paid'``, call
  succeeded), each priced at the tier it actually ran in (``calls.tier``: realtime, batch,
  or flex: an OpenAI realtime call its answer says flex served) and, for OpenAI realtime
  calls, the ``service_tier`` the response reports (flex, priority). Anthropic 1-hour
  cache writes are read from the response's ``usage.cache_creation.ephemeral_1h_input_tokens``.
* **list price** - the same paid calls at the realtime list price (standard tier).
  ``savings = list price - paid``: what batch / flex saved.
* **avoided** - every use of a call this job did not pay for, per (call, item) link:
  ``cache`` (a result stored by another job, or earlier in this one), ``shared`` (an identical
  call in flight, deduplicated) and ``replay`` (this job's own earlier result, after a
  resume), each priced at the realtime list price: what the cache and dedup avoided.
* Models without a price are never counted as zero: their lines have ``known=False``, they
  are left out of the totals and listed in :attr:`JobCost.unknown`, and
  :attr:`JobCost.complete` is False.
* **rounds** - paid batch calls grouped by the provider batch that returned them; batches are
  grouped into rounds by ``provider_batches.info["round"]`` when the engine records it, else
  inferred: a batch created after a batch of the current round was collected starts a new
  round (a round is flushed only once results of the previous one came back).

Totals are aggregated by the store (grouped by provider, model, tier, service tier and, for
models with long-context prices, prompt-size bucket: the "reports" methods of
:class:`~batchain.store.sqlite.SQLiteStore`), so a 100k-call job is priced from a handful of
rows; this module only prices them. Per-item costs (``per_item=True``) are one more query.
Rendering (rich table, JSON) is in :mod:`batchain.cost.render`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from batchain.cost.prices import (
    PER_MILLION,
    Cost,
    PriceBook,
    Rates,
    default_pricebook,
    normalize_service_tier,
    price_usage,
)
from batchain.options import Tier
from batchain.states import LinkSource
from batchain.store import open_store
from batchain.store.base import Store
from batchain.store.records import BatchRecord, PaidCallGroup, Usage

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "AvoidedLine",
    "BatchCost",
    "CostLine",
    "ItemCost",
    "JobCost",
    "RoundCost",
    "job_cost",
    "realtime_notes",
]

_ZERO = Decimal(0)
AVOIDED_SOURCES: tuple[str, ...] = (LinkSource.CACHE, LinkSource.SHARED, LinkSource.REPLAY)


# -- result records -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostLine:
    """Paid calls of one (provider, model, tier, service tier)."""

    provider: str
    model: str
    tier: str
    service_tier: str | None
    calls: int
    usage: Usage
    #: at the price actually paid (tier and service tier)
    cost: Cost
    #: the same usage at the realtime list price
    list_cost: Cost
    #: what prompt caching saved: the same calls at the same tier with no cache read or
    #: written, less ``cost`` (negative if the writes cost more than the reads saved);
    #: None when unknown
    cache_saved: Decimal | None = _ZERO

    @property
    def known(self) -> bool:
        return self.cost.known and self.list_cost.known

    @property
    def savings(self) -> Decimal | None:
        if self.cost.total is None or self.list_cost.total is None:
            return None
        return self.list_cost.total - self.cost.total


@dataclass(frozen=True, slots=True)
class AvoidedLine:
    """Uses of calls this job did not pay for, by source, priced at the realtime list price."""

    source: str
    provider: str
    model: str
    calls: int
    usage: Usage
    list_cost: Cost

    @property
    def known(self) -> bool:
        return self.list_cost.known


@dataclass(frozen=True, slots=True)
class BatchCost:
    """Paid calls returned by one provider batch."""

    id: str
    provider_batch_id: str | None
    provider: str
    model: str
    status: str
    round: int
    calls: int
    usage: Usage
    cost: Cost
    list_cost: Cost


@dataclass(frozen=True, slots=True)
class RoundCost:
    round: int
    batches: tuple[BatchCost, ...]
    calls: int
    usage: Usage
    cost: Decimal | None
    list_cost: Decimal | None


@dataclass(frozen=True, slots=True)
class ItemCost:
    idx: int
    #: calls this item paid for, and their cost
    paid_calls: int
    cost: Decimal | None
    #: calls it reused (cache, shared, replay), at list price
    reused_calls: int
    avoided: Decimal | None

    @property
    def known(self) -> bool:
        return self.cost is not None and self.avoided is not None


def _sum_known(values: Iterable[Decimal | None]) -> Decimal:
    return sum((v for v in values if v is not None), _ZERO)


@dataclass(frozen=True, slots=True)
class JobCost:
    """The cost report of one job (see the module docstring for definitions)."""

    job_id: str
    mode: str | None
    lines: tuple[CostLine, ...]
    avoided_lines: tuple[AvoidedLine, ...]
    rounds: tuple[RoundCost, ...]
    failed_calls: int
    failed_items: int
    link_counts: Mapping[str, int] = field(default_factory=dict)
    items: Mapping[int, ItemCost] | None = None
    currency: str = "USD"
    #: one line each: why some of a batch-mode job's calls ran realtime (a model whose
    #: endpoint has no Batch API, or that the user chose to run realtime)
    notes: tuple[str, ...] = ()
    #: calls answered from LangChain's LLM cache (``set_llm_cache``): not paid, and not
    #: priced, since they leave no row in the store (only their count, in the job's stats)
    langchain_cache_hits: int = 0

    # -- totals (known prices only; see `complete`) ---------------------------------------------

    @property
    def paid(self) -> Decimal:
        """What the job paid, over lines with a known price."""
        return _sum_known(line.cost.total for line in self.lines if line.known)

    @property
    def list_price(self) -> Decimal:
        """The same paid calls at the realtime list price."""
        return _sum_known(line.list_cost.total for line in self.lines if line.known)

    @property
    def savings(self) -> Decimal:
        """``list_price - paid``: what batch / flex saved."""
        return self.list_price - self.paid

    @property
    def avoided(self) -> Decimal:
        """What cache hits, dedup and replays avoided, at the realtime list price."""
        return _sum_known(line.list_cost.total for line in self.avoided_lines if line.known)

    @property
    def cache_saved(self) -> Decimal:
        """What the providers' prompt caches saved (:attr:`CostLine.cache_saved`), over
        lines with a known price."""
        return _sum_known(line.cache_saved for line in self.lines if line.known)

    @property
    def avoided_by_source(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for line in self.avoided_lines:
            if line.known and line.list_cost.total is not None:
                out[line.source] = out.get(line.source, _ZERO) + line.list_cost.total
        return out

    @property
    def complete(self) -> bool:
        """False when some model had no price (its cost is missing from the totals)."""
        return all(line.known for line in self.lines) and all(a.known for a in self.avoided_lines)

    @property
    def unknown(self) -> tuple[CostLine, ...]:
        """Paid lines whose price is unknown (not counted in the totals)."""
        return tuple(line for line in self.lines if not line.known)

    @property
    def unknown_models(self) -> tuple[tuple[str, str], ...]:
        keys = {(x.provider, x.model) for x in self.lines if not x.known}
        keys |= {(a.provider, a.model) for a in self.avoided_lines if not a.known}
        return tuple(sorted(keys))

    @property
    def usage(self) -> Usage:
        """Usage of the paid calls."""
        return sum((line.usage for line in self.lines), Usage())

    @property
    def paid_calls(self) -> int:
        return sum(line.calls for line in self.lines)

    @property
    def cache_hits(self) -> int:
        """Calls served from results stored earlier (``source = 'cache'``)."""
        return sum(a.calls for a in self.avoided_lines if a.source == LinkSource.CACHE)

    @property
    def shared_calls(self) -> int:
        """Identical in-flight calls deduplicated (``source = 'shared'``)."""
        return sum(a.calls for a in self.avoided_lines if a.source == LinkSource.SHARED)

    @property
    def replayed_calls(self) -> int:
        """Own earlier results replayed after a resume (``source = 'replay'``)."""
        return sum(a.calls for a in self.avoided_lines if a.source == LinkSource.REPLAY)

    # -- groupings ----------------------------------------------------------------------------

    def by_model(self) -> dict[tuple[str, str], CostLine]:
        """Paid lines merged per (provider, model) across tiers."""
        return _group(self.lines, lambda x: (x.provider, x.model))

    def by_tier(self) -> dict[str, CostLine]:
        """Paid lines merged per tier (``realtime`` / ``batch`` / ``flex``)."""
        return _group(self.lines, lambda x: x.tier)

    # -- output -------------------------------------------------------------------------------

    def table(self) -> Table:
        """:func:`~batchain.cost.render.render_table` of this report (``rich.print(report.table())``)."""
        from batchain.cost.render import render_table

        return render_table(self)

    def to_json(self) -> dict[str, Any]:
        """:func:`~batchain.cost.render.to_json` of this report."""
        from batchain.cost.render import to_json

        return to_json(self)


def _merge(a: CostLine, b: CostLine) -> CostLine:
    return CostLine(
        provider=a.provider if a.provider == b.provider else "*",
        model=a.model if a.model == b.model else "*",
        tier=a.tier if a.tier == b.tier else "*",
        service_tier=a.service_tier if a.service_tier == b.service_tier else None,
        calls=a.calls + b.calls,
        usage=a.usage + b.usage,
        cost=a.cost + b.cost,
        list_cost=a.list_cost + b.list_cost,
        cache_saved=None if a.cache_saved is None or b.cache_saved is None else a.cache_saved + b.cache_saved,
    )


K = TypeVar("K")


def _group(lines: Iterable[CostLine], key: Callable[[CostLine], K]) -> dict[K, CostLine]:
    out: dict[K, CostLine] = {}
    for line in lines:
        k: K = key(line)
        out[k] = _merge(out[k], line) if k in out else line
    return out


# -- pricing the store's aggregates -------------------------------------------------------------


class _Pricer:
    """Prices aggregated rows, with long-context buckets mapped back to a prompt size."""

    def __init__(self, book: PriceBook, thresholds: tuple[int, ...]) -> None:
        self.book = book
        self.thresholds = thresholds

    def prompt_size(self, bucket: int) -> int:
        return 0 if bucket <= 0 else self.thresholds[bucket - 1] + 1

    def cost(
        self, provider: str, model: str, tier: str, st: str | None, usage: Usage, w1h: int, bucket: int
    ) -> Cost:
        sheet = self.book.sheet(provider, model, tier, st)
        return price_usage(sheet, usage, w1h, self.prompt_size(bucket), self.book.warn_unknown)

    def list_cost(self, provider: str, model: str, usage: Usage, w1h: int, bucket: int) -> Cost:
        return self.cost(provider, model, Tier.REALTIME, None, usage, w1h, bucket)


def _open(store: Any) -> tuple[Store, str | None, bool]:
    """(store, job id if a Job was given, whether we opened it)."""
    if hasattr(store, "id") and isinstance(getattr(store, "store", None), Store):
        return store.store, str(store.id), False
    if isinstance(store, Store):
        return store, None, False
    if isinstance(store, str | os.PathLike):
        return open_store(store), None, True
    raise TypeError(f"job_cost needs a store, a store path or a Job, got {type(store).__name__}")


def job_cost(
    store: Store | str | os.PathLike[str] | Any,
    job_id: str | None = None,
    pricebook: PriceBook | None = None,
    *,
    per_item: bool = False,
) -> JobCost:
    """The cost report of ``job_id`` in ``store`` (a :class:`SQLiteStore`, a path, or a ``Job``).

    ``per_item=True`` also fills :attr:`JobCost.items` (one more grouped query).
    """
    st, implied_id, opened = _open(store)
    try:
        jid = job_id or implied_id
        if jid is None:
            raise TypeError("job_cost: job_id is required unless a Job is given")
        return _job_cost(st, jid, pricebook or default_pricebook(), per_item)
    finally:
        if opened:
            st.close()


def _job_cost(store: Store, job_id: str, book: PriceBook, per_item: bool) -> JobCost:
    job = store.get_job(job_id)
    if job is None:
        raise KeyError(f"no job {job_id!r} in this store")

    # long-context thresholds of the models this job touched
    thresholds: set[int] = set()
    for provider, model in store.job_models(job_id):
        for tier in (Tier.REALTIME, Tier.BATCH):
            thresholds.update(book.sheet(provider, model, tier).thresholds)
    pricer = _Pricer(book, tuple(sorted(thresholds)))

    paid_groups = store.paid_call_groups(job_id, pricer.thresholds)
    failures = store.job_failures(job_id)
    return JobCost(
        job_id=job_id,
        mode=job.mode,
        lines=_paid_lines(paid_groups, pricer),
        avoided_lines=_avoided_lines(store, job_id, pricer),
        rounds=_rounds(store.job_batches(job_id), paid_groups, pricer),
        failed_calls=failures.calls,
        failed_items=failures.items,
        link_counts=store.job_link_counts(job_id),
        items=_item_costs(store, job_id, pricer) if per_item else None,
        notes=realtime_notes(job.stats),
        langchain_cache_hits=int(job.stats.get("langchain_cache_hits", 0)),
    )


def realtime_notes(stats: Mapping[str, Any]) -> tuple[str, ...]:
    """One line per model whose calls a batch-mode job sent realtime, and why; one per model
    a flex-mode job sent at the standard tier for want of flex; and one per model whose
    token counts are batchain's estimate (its answers carry none)."""
    found = stats.get("realtime_endpoints") or {}
    notes = [
        f"{label}: {int(v.get('calls', 0)):,} calls ran realtime at full price ({v.get('why', '')})"
        for label, v in sorted(found.items())
        if isinstance(v, Mapping)
    ]
    no_flex = stats.get("no_flex") or {}
    notes.extend(
        f"{label}: {int(n):,} calls ran at the standard tier and price (flex mode: it has no flex tier)"
        for label, n in sorted(no_flex.items())
    )
    notes.extend(
        f"{label}: input tokens estimated at ~4 characters a token (its answers carry no token count)"
        for label in stats.get("estimated_usage") or ()
    )
    return tuple(notes)


def _cache_saved(pricer: _Pricer, g: PaidCallGroup, st: str | None, cost: Cost) -> Decimal | None:
    """The group's calls with no cache read or written, at the same tier, less ``cost``."""
    u = g.usage
    if not (u.cache_read_tokens or u.cache_creation_tokens):
        return _ZERO
    plain = replace(u, cache_read_tokens=0, cache_creation_tokens=0)
    uncached = pricer.cost(g.provider, g.model, g.tier, st, plain, 0, g.bucket).total
    return None if uncached is None or cost.total is None else uncached - cost.total


def _paid_lines(groups: Sequence[PaidCallGroup], pricer: _Pricer) -> tuple[CostLine, ...]:
    merged: dict[tuple[str, str, str, str | None], CostLine] = {}
    for g in groups:
        st = normalize_service_tier(g.service_tier)
        w1h = g.cache_write_1h_tokens
        cost = pricer.cost(g.provider, g.model, g.tier, st, g.usage, w1h, g.bucket)
        line = CostLine(
            provider=g.provider,
            model=g.model,
            tier=g.tier,
            service_tier=st,
            calls=g.usage.requests,
            usage=g.usage,
            cost=cost,
            list_cost=pricer.list_cost(g.provider, g.model, g.usage, w1h, g.bucket),
            cache_saved=_cache_saved(pricer, g, st, cost),
        )
        key = (line.provider, line.model, line.tier, st)
        merged[key] = _merge(merged[key], line) if key in merged else line
    return tuple(merged[k] for k in sorted(merged, key=lambda k: (k[0], k[1], k[2], k[3] or "")))


def _avoided_lines(store: Store, job_id: str, pricer: _Pricer) -> tuple[AvoidedLine, ...]:
    merged: dict[tuple[str, str, str], AvoidedLine] = {}
    for g in store.reused_call_groups(job_id, AVOIDED_SOURCES, pricer.thresholds):
        usage = g.usage
        cost = pricer.list_cost(g.provider, g.model, usage, g.cache_write_1h_tokens, g.bucket)
        key = (g.source, g.provider, g.model)
        if key in merged:
            old = merged[key]
            merged[key] = AvoidedLine(
                *key, old.calls + usage.requests, old.usage + usage, old.list_cost + cost
            )
        else:
            merged[key] = AvoidedLine(*key, usage.requests, usage, cost)
    order = {s: i for i, s in enumerate(AVOIDED_SOURCES)}
    return tuple(merged[k] for k in sorted(merged, key=lambda k: (order.get(k[0], 9), k[1], k[2])))


def _round_numbers(batches: Sequence[BatchRecord]) -> dict[str, int]:
    """Round of each provider batch: recorded in ``info["round"]``, else inferred (module doc)."""
    out: dict[str, int] = {}
    current = 0
    round_collected_at: float | None = None
    for b in batches:  # ordered by created_at
        info = b.info
        if isinstance(info, Mapping) and isinstance(info.get("round"), int):
            out[b.id] = int(info["round"])
            continue
        if current == 0 or (round_collected_at is not None and b.created_at > round_collected_at):
            current += 1
            round_collected_at = None
        out[b.id] = current
        if b.status in ("ended", "collected"):
            t = float(b.updated_at)
            round_collected_at = t if round_collected_at is None else min(round_collected_at, t)
    return out


def _rounds(
    batches: Sequence[BatchRecord], paid_groups: Sequence[PaidCallGroup], pricer: _Pricer
) -> tuple[RoundCost, ...]:
    if not batches:
        return ()
    numbers = _round_numbers(batches)
    meta = {b.id: b for b in batches}
    per_batch: dict[tuple[str, str, str], BatchCost] = {}
    for g in paid_groups:
        if g.tier != Tier.BATCH or g.batch_id not in meta:
            continue
        b = meta[g.batch_id]
        usage = g.usage
        w1h = g.cache_write_1h_tokens
        cost = pricer.cost(g.provider, g.model, Tier.BATCH, None, usage, w1h, g.bucket)
        lst = pricer.list_cost(g.provider, g.model, usage, w1h, g.bucket)
        key = (b.id, g.provider, g.model)
        if key in per_batch:
            old = per_batch[key]
            usage, cost, lst = old.usage + usage, old.cost + cost, old.list_cost + lst
        per_batch[key] = BatchCost(
            id=b.id,
            provider_batch_id=b.provider_batch_id,
            provider=g.provider,
            model=g.model,
            status=b.status,
            round=numbers[b.id],
            calls=usage.requests,
            usage=usage,
            cost=cost,
            list_cost=lst,
        )
    by_round: dict[int, list[BatchCost]] = {}
    for bc in per_batch.values():
        by_round.setdefault(bc.round, []).append(bc)
    out = []
    for n in sorted(by_round):
        members = tuple(sorted(by_round[n], key=lambda x: (meta[x.id].created_at, x.id)))
        costs = [m.cost.total for m in members]
        lists = [m.list_cost.total for m in members]
        out.append(
            RoundCost(
                round=n,
                batches=members,
                calls=sum(m.calls for m in members),
                usage=sum((m.usage for m in members), Usage()),
                cost=None if None in costs else _sum_known(costs),
                list_cost=None if None in lists else _sum_known(lists),
            )
        )
    return tuple(out)


def _item_costs(store: Store, job_id: str, pricer: _Pricer) -> dict[int, ItemCost]:
    # one link per (call, item, source): rates looked up once per group
    rates: dict[tuple[Any, ...], Rates | None] = {}
    acc: dict[int, list[Any]] = {}  # idx -> [paid_calls, cost, reused_calls, avoided]
    for link in store.item_call_links(job_id, pricer.thresholds):
        source = link.source
        paid = source == LinkSource.PAID
        if not paid and source not in AVOIDED_SOURCES:
            continue
        tier, st = (link.tier, normalize_service_tier(link.service_tier)) if paid else (Tier.REALTIME, None)
        key = (link.provider, link.model, tier, st, link.bucket)
        if key not in rates:
            sheet = pricer.book.sheet(link.provider, link.model, tier, st)
            rates[key] = sheet.at(pricer.prompt_size(link.bucket)) if sheet.known else None
        total = _quick_total(
            rates[key],
            link.input_tokens,
            link.output_tokens,
            link.cache_read_tokens,
            link.cache_creation_tokens,
            link.cache_write_1h_tokens,
        )
        a = acc.setdefault(link.idx, [0, _ZERO, 0, _ZERO])
        slot = 0 if paid else 2
        a[slot] += 1
        a[slot + 1] = None if a[slot + 1] is None or total is None else a[slot + 1] + total
    return {idx: ItemCost(idx, a[0], a[1], a[2], a[3]) for idx, a in sorted(acc.items())}


def _quick_total(r: Rates | None, i: int, o: int, cr: int, cw: int, w1h: int) -> Decimal | None:
    """The same arithmetic as :func:`batchain.cost.prices.price_usage`, for one call."""
    if r is None:
        return None
    w1h = min(max(w1h, 0), cw)
    total = _ZERO
    for tokens, rate in (
        (max(i - cr - cw, 0), r.input),
        (cr, r.cache_read),
        (cw - w1h, r.cache_write_5m),
        (w1h, r.cache_write_1h),
        (o, r.output),
    ):
        if tokens:
            if rate is None:
                return None
            total += tokens * rate
    return total / PER_MILLION
