"""What a job cost: pure functions over a store and a job id.

Definitions
-----------
* **paid** - the distinct calls this job paid for (``job_calls.source = 'paid'``, call
  succeeded), each priced at the tier it actually ran in (``calls.tier``: realtime or batch)
  and, for OpenAI realtime calls, the ``service_tier`` the response reports (flex,
  priority). Anthropic 1-hour cache writes are read from the response's
  ``usage.cache_creation.ephemeral_1h_input_tokens``.
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

Totals are aggregated in SQL (grouped by provider, model, tier, service tier and, for models
with long-context prices, prompt-size bucket), so a 100k-call job is priced from a handful
of rows. Per-item costs (``per_item=True``) are one more grouped query.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from rich.table import Table

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
from batchain.store.records import Usage
from batchain.store.sqlite import SQLiteStore

__all__ = [
    "AvoidedLine",
    "BatchCost",
    "CostLine",
    "ItemCost",
    "JobCost",
    "RoundCost",
    "job_cost",
    "render_table",
    "to_json",
]

_ZERO = Decimal(0)
AVOIDED_SOURCES: tuple[str, ...] = (LinkSource.CACHE, LinkSource.SHARED, LinkSource.REPLAY)

#: OpenAI realtime responses carry the tier that served them (default, flex, priority)
_ST = (
    "CASE WHEN c.provider = 'openai' AND COALESCE(c.tier, 'realtime') <> 'batch'"
    " AND json_valid(c.response) THEN json_extract(c.response, '$.service_tier') END"
)
#: Anthropic's 1-hour cache writes (the rest of cache_creation_tokens are 5-minute writes)
_W1H = (
    "CASE WHEN c.provider = 'anthropic' AND c.cache_creation_tokens > 0 AND json_valid(c.response)"
    " THEN COALESCE(json_extract(c.response, '$.usage.cache_creation.ephemeral_1h_input_tokens'), 0)"
    " ELSE 0 END"
)
_SUMS = (
    "COUNT(*) AS n, SUM(c.input_tokens) AS i, SUM(c.output_tokens) AS o,"
    " SUM(c.cache_read_tokens) AS cr, SUM(c.cache_creation_tokens) AS cw,"
    f" SUM(c.reasoning_tokens) AS rs, SUM({_W1H}) AS w1h"
)
_PAID_KEYS = "SELECT key FROM job_calls WHERE job_id = ? AND source = 'paid'"


class _Readable(Protocol):
    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...


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
        """Paid lines merged per tier (``realtime`` / ``batch``)."""
        return _group(self.lines, lambda x: x.tier)

    # -- output -------------------------------------------------------------------------------

    def table(self) -> Table:
        """:func:`render_table` of this report (``rich.print(report.table())``)."""
        return render_table(self)

    def to_json(self) -> dict[str, Any]:
        """:func:`to_json` of this report."""
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
    )


K = TypeVar("K")


def _group(lines: Iterable[CostLine], key: Callable[[CostLine], K]) -> dict[K, CostLine]:
    out: dict[K, CostLine] = {}
    for line in lines:
        k: K = key(line)
        out[k] = _merge(out[k], line) if k in out else line
    return out


# -- the query ----------------------------------------------------------------------------------


def _bucket_sql(thresholds: tuple[int, ...]) -> str:
    if not thresholds:
        return "0"
    whens = " ".join(
        f"WHEN c.input_tokens > {int(t)} THEN {k + 1}" for k, t in reversed(list(enumerate(thresholds)))
    )
    return f"CASE {whens} ELSE 0 END"


def _usage_of(row: Any) -> Usage:
    return Usage(
        int(row["i"] or 0),
        int(row["o"] or 0),
        int(row["cr"] or 0),
        int(row["cw"] or 0),
        int(row["rs"] or 0),
        int(row["n"] or 0),
    )


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


def _open(store: Any) -> tuple[_Readable, str | None, bool]:
    """(readable store, job id if a Job was given, whether we opened it)."""
    if hasattr(store, "store") and hasattr(store, "id") and hasattr(store.store, "_read"):
        return store.store, str(store.id), False
    if hasattr(store, "_read"):
        return store, None, False
    if isinstance(store, str | os.PathLike):
        return SQLiteStore(store), None, True
    raise TypeError(f"job_cost needs a SQLiteStore, a store path or a Job, got {type(store).__name__}")


def job_cost(
    store: SQLiteStore | str | os.PathLike[str] | Any,
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
        if opened and isinstance(st, SQLiteStore):
            st.close()


def _job_cost(store: _Readable, job_id: str, book: PriceBook, per_item: bool) -> JobCost:
    rows = store._read("SELECT mode FROM jobs WHERE id = ?", (job_id,))
    if not rows:
        raise KeyError(f"no job {job_id!r} in this store")
    mode = rows[0]["mode"]

    # long-context thresholds of the models this job touched
    models = store._read(
        "SELECT DISTINCT c.provider AS provider, c.model AS model FROM calls c"
        " WHERE c.key IN (SELECT key FROM job_calls WHERE job_id = ?)",
        (job_id,),
    )
    thresholds: set[int] = set()
    for m in models:
        for tier in (Tier.REALTIME, Tier.BATCH):
            thresholds.update(book.sheet(m["provider"], m["model"], tier).thresholds)
    pricer = _Pricer(book, tuple(sorted(thresholds)))
    bucket = _bucket_sql(pricer.thresholds)

    paid_rows = _paid_rows(store, job_id, bucket)
    lines = _paid_lines(paid_rows, pricer)
    avoided = _avoided_lines(store, job_id, pricer, bucket)
    rounds = _rounds(store, job_id, paid_rows, pricer)
    link_counts = {
        r["source"]: int(r["n"])
        for r in store._read(
            "SELECT source, COUNT(*) AS n FROM job_calls WHERE job_id = ? GROUP BY source", (job_id,)
        )
    }
    failed_calls = store._read(
        "SELECT COUNT(*) AS n FROM calls WHERE job_id = ? AND status = 'failed'", (job_id,)
    )[0]["n"]
    failed_items = store._read(
        "SELECT COUNT(*) AS n FROM items WHERE job_id = ? AND status = 'failed'", (job_id,)
    )[0]["n"]
    items = _item_costs(store, job_id, pricer, bucket) if per_item else None
    return JobCost(
        job_id=job_id,
        mode=mode,
        lines=lines,
        avoided_lines=avoided,
        rounds=rounds,
        failed_calls=int(failed_calls or 0),
        failed_items=int(failed_items or 0),
        link_counts=link_counts,
        items=items,
    )


def _paid_rows(store: _Readable, job_id: str, bucket: str) -> list[Any]:
    """Paid calls grouped by provider, model, tier, service tier, bucket and provider batch."""
    return store._read(
        f"SELECT c.provider AS provider, c.model AS model, COALESCE(c.tier, 'realtime') AS tier,"
        f" {_ST} AS st, {bucket} AS bucket,"
        f" CASE WHEN c.tier = 'batch' THEN c.batch_id END AS batch_id, {_SUMS}"
        f" FROM calls c WHERE c.status = 'succeeded' AND c.key IN ({_PAID_KEYS})"
        f" GROUP BY 1, 2, 3, 4, 5, 6",
        (job_id,),
    )


def _paid_lines(rows: list[Any], pricer: _Pricer) -> tuple[CostLine, ...]:
    merged: dict[tuple[str, str, str, str | None], CostLine] = {}
    for r in rows:
        st = normalize_service_tier(r["st"])
        usage = _usage_of(r)
        w1h = int(r["w1h"] or 0)
        args = (r["provider"], r["model"])
        line = CostLine(
            provider=r["provider"],
            model=r["model"],
            tier=r["tier"],
            service_tier=st,
            calls=usage.requests,
            usage=usage,
            cost=pricer.cost(*args, r["tier"], st, usage, w1h, r["bucket"]),
            list_cost=pricer.list_cost(*args, usage, w1h, r["bucket"]),
        )
        key = (line.provider, line.model, line.tier, st)
        merged[key] = _merge(merged[key], line) if key in merged else line
    return tuple(merged[k] for k in sorted(merged, key=lambda k: (k[0], k[1], k[2], k[3] or "")))


def _avoided_lines(store: _Readable, job_id: str, pricer: _Pricer, bucket: str) -> tuple[AvoidedLine, ...]:
    marks = ",".join("?" * len(AVOIDED_SOURCES))
    rows = store._read(
        f"SELECT j.source AS source, c.provider AS provider, c.model AS model, {bucket} AS bucket, {_SUMS}"
        f" FROM job_calls j JOIN calls c ON c.key = j.key"
        f" WHERE j.job_id = ? AND j.source IN ({marks}) AND c.status = 'succeeded'"
        f" GROUP BY 1, 2, 3, 4",
        (job_id, *AVOIDED_SOURCES),
    )
    merged: dict[tuple[str, str, str], AvoidedLine] = {}
    for r in rows:
        usage = _usage_of(r)
        cost = pricer.list_cost(r["provider"], r["model"], usage, int(r["w1h"] or 0), r["bucket"])
        key = (r["source"], r["provider"], r["model"])
        if key in merged:
            old = merged[key]
            merged[key] = AvoidedLine(
                *key, old.calls + usage.requests, old.usage + usage, old.list_cost + cost
            )
        else:
            merged[key] = AvoidedLine(*key, usage.requests, usage, cost)
    order = {s: i for i, s in enumerate(AVOIDED_SOURCES)}
    return tuple(merged[k] for k in sorted(merged, key=lambda k: (order.get(k[0], 9), k[1], k[2])))


def _round_numbers(batches: list[dict[str, Any]]) -> dict[str, int]:
    """Round of each provider batch: recorded in ``info["round"]``, else inferred (module doc)."""
    out: dict[str, int] = {}
    current = 0
    round_collected_at: float | None = None
    for b in batches:  # ordered by created_at
        info = b["info"]
        if isinstance(info, Mapping) and isinstance(info.get("round"), int):
            out[b["id"]] = int(info["round"])
            continue
        if current == 0 or (round_collected_at is not None and b["created_at"] > round_collected_at):
            current += 1
            round_collected_at = None
        out[b["id"]] = current
        if b["status"] in ("ended", "collected"):
            t = float(b["updated_at"])
            round_collected_at = t if round_collected_at is None else min(round_collected_at, t)
    return out


def _rounds(store: _Readable, job_id: str, paid_rows: list[Any], pricer: _Pricer) -> tuple[RoundCost, ...]:
    batches = []
    for r in store._read(
        "SELECT id, provider, lane, status, provider_batch_id, n_calls, created_at, updated_at, info"
        " FROM provider_batches WHERE job_id = ? ORDER BY created_at, id",
        (job_id,),
    ):
        b = dict(r)
        try:
            b["info"] = json.loads(b.get("info") or "{}")
        except ValueError:
            b["info"] = {}
        batches.append(b)
    if not batches:
        return ()
    numbers = _round_numbers(batches)
    meta = {b["id"]: b for b in batches}
    per_batch: dict[tuple[str, str, str], BatchCost] = {}
    for r in paid_rows:
        if r["tier"] != Tier.BATCH or r["batch_id"] not in meta:
            continue
        b = meta[r["batch_id"]]
        usage = _usage_of(r)
        w1h = int(r["w1h"] or 0)
        cost = pricer.cost(r["provider"], r["model"], Tier.BATCH, None, usage, w1h, r["bucket"])
        lst = pricer.list_cost(r["provider"], r["model"], usage, w1h, r["bucket"])
        key = (b["id"], r["provider"], r["model"])
        if key in per_batch:
            old = per_batch[key]
            usage, cost, lst = old.usage + usage, old.cost + cost, old.list_cost + lst
        per_batch[key] = BatchCost(
            id=b["id"],
            provider_batch_id=b["provider_batch_id"],
            provider=r["provider"],
            model=r["model"],
            status=b["status"],
            round=numbers[b["id"]],
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
        members = tuple(sorted(by_round[n], key=lambda x: (meta[x.id]["created_at"], x.id)))
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


def _item_costs(store: _Readable, job_id: str, pricer: _Pricer, bucket: str) -> dict[int, ItemCost]:
    # one row per (call, item, source) link: no GROUP BY sort; rates looked up once per group
    rows = store._read(
        f"SELECT j.item_idx AS idx, j.source AS source, c.provider AS provider, c.model AS model,"
        f" COALESCE(c.tier, 'realtime') AS tier, {_ST} AS st, {bucket} AS bucket,"
        f" c.input_tokens AS i, c.output_tokens AS o, c.cache_read_tokens AS cr,"
        f" c.cache_creation_tokens AS cw, {_W1H} AS w1h"
        f" FROM job_calls j JOIN calls c ON c.key = j.key"
        f" WHERE j.job_id = ? AND c.status = 'succeeded'",
        (job_id,),
    )
    rates: dict[tuple[Any, ...], Rates | None] = {}
    acc: dict[int, list[Any]] = {}  # idx -> [paid_calls, cost, reused_calls, avoided]
    for r in rows:
        source = r["source"]
        paid = source == LinkSource.PAID
        if not paid and source not in AVOIDED_SOURCES:
            continue
        tier, st = (r["tier"], normalize_service_tier(r["st"])) if paid else (Tier.REALTIME, None)
        key = (r["provider"], r["model"], tier, st, r["bucket"])
        if key not in rates:
            sheet = pricer.book.sheet(r["provider"], r["model"], tier, st)
            rates[key] = sheet.at(pricer.prompt_size(r["bucket"])) if sheet.known else None
        total = _quick_total(rates[key], r["i"], r["o"], r["cr"], r["cw"], r["w1h"] or 0)
        a = acc.setdefault(int(r["idx"]), [0, _ZERO, 0, _ZERO])
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


# -- rendering ----------------------------------------------------------------------------------


def _money(value: Decimal | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.6f}"


def _int(n: int) -> str:
    return f"{n:,}"


def render_table(report: JobCost) -> Table:
    """A rich table: paid lines, avoided lines, rounds, totals; notes in the caption."""
    table = Table(title=f"Cost of job {report.job_id}" + (f" ({report.mode})" if report.mode else ""))
    for name, justify in (
        ("provider / model", "left"),
        ("tier", "left"),
        ("calls", "right"),
        ("input", "right"),
        ("cached", "right"),
        ("cache write", "right"),
        ("output", "right"),
        ("cost", "right"),
        ("list price", "right"),
        ("saved", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]

    def usage_cells(u: Usage) -> list[str]:
        return [
            _int(u.input_tokens),
            _int(u.cache_read_tokens),
            _int(u.cache_creation_tokens),
            _int(u.output_tokens),
        ]

    for line in report.lines:
        tier = line.tier + (f" ({line.service_tier})" if line.service_tier else "")
        table.add_row(
            f"{line.provider} / {line.model}",
            tier,
            _int(line.calls),
            *usage_cells(line.usage),
            _money(line.cost.total),
            _money(line.list_cost.total),
            _money(line.savings),
        )
    if report.avoided_lines:
        table.add_section()
        for a in report.avoided_lines:
            table.add_row(
                f"{a.provider} / {a.model}",
                f"{a.source} (not paid)",
                _int(a.calls),
                *usage_cells(a.usage),
                _money(_ZERO),
                _money(a.list_cost.total),
                _money(a.list_cost.total),
            )
    if report.rounds:
        table.add_section()
        for rnd in report.rounds:
            saved = None if rnd.cost is None or rnd.list_cost is None else rnd.list_cost - rnd.cost
            table.add_row(
                f"round {rnd.round}: {len(rnd.batches)} batch(es)",
                "batch",
                _int(rnd.calls),
                *usage_cells(rnd.usage),
                _money(rnd.cost),
                _money(rnd.list_cost),
                _money(saved),
            )
    table.add_section()
    table.add_row(
        "total" + ("" if report.complete else " (known prices only)"),
        "",
        _int(report.paid_calls),
        *usage_cells(report.usage),
        _money(report.paid),
        _money(report.list_price),
        _money(report.savings + report.avoided),
        style="bold",
    )
    notes = [
        f"paid {_money(report.paid)}",
        f"saved by tier {_money(report.savings)}",
        f"avoided by cache/dedup {_money(report.avoided)}"
        f" ({report.cache_hits} cache hits, {report.shared_calls} shared, {report.replayed_calls} replayed)",
        f"failed: {report.failed_calls} calls, {report.failed_items} items",
    ]
    if not report.complete:
        names = ", ".join(f"{p}/{m}" for p, m in report.unknown_models)
        notes.append(f"[yellow]no price for {names}: not in the totals[/yellow]")
    table.caption = " · ".join(notes)
    return table


def _d(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _usage_json(u: Usage) -> dict[str, int]:
    return {
        "input_tokens": u.input_tokens,
        "cached_tokens": u.cache_read_tokens,
        "cache_creation_tokens": u.cache_creation_tokens,
        "output_tokens": u.output_tokens,
        "reasoning_tokens": u.reasoning_tokens,
    }


def _cost_json(c: Cost) -> dict[str, Any]:
    return {
        "known": c.known,
        "total": _d(c.total),
        "uncached_input": _d(c.uncached_input),
        "cached_input": _d(c.cached_input),
        "cache_write": _d(c.cache_write),
        "output": _d(c.output),
    }


def to_json(report: JobCost) -> dict[str, Any]:
    """A JSON-ready dict. Money values are decimal strings in USD (exact), unknown -> null."""

    def lines(xs: Iterable[CostLine]) -> Iterator[dict[str, Any]]:
        for x in xs:
            yield {
                "provider": x.provider,
                "model": x.model,
                "tier": x.tier,
                "service_tier": x.service_tier,
                "calls": x.calls,
                "usage": _usage_json(x.usage),
                "cost": _cost_json(x.cost),
                "list_cost": _cost_json(x.list_cost),
                "savings": _d(x.savings),
            }

    out: dict[str, Any] = {
        "job_id": report.job_id,
        "mode": report.mode,
        "currency": report.currency,
        "complete": report.complete,
        "paid": _d(report.paid),
        "list_price": _d(report.list_price),
        "savings": _d(report.savings),
        "avoided": _d(report.avoided),
        "avoided_by_source": {k: _d(v) for k, v in report.avoided_by_source.items()},
        "paid_calls": report.paid_calls,
        "cache_hits": report.cache_hits,
        "shared_calls": report.shared_calls,
        "replayed_calls": report.replayed_calls,
        "failed_calls": report.failed_calls,
        "failed_items": report.failed_items,
        "usage": _usage_json(report.usage),
        "lines": list(lines(report.lines)),
        "by_model": list(lines(report.by_model().values())),
        "by_tier": {k: next(lines([v])) for k, v in report.by_tier().items()},
        "avoided_lines": [
            {
                "source": a.source,
                "provider": a.provider,
                "model": a.model,
                "calls": a.calls,
                "usage": _usage_json(a.usage),
                "list_cost": _cost_json(a.list_cost),
            }
            for a in report.avoided_lines
        ],
        "rounds": [
            {
                "round": r.round,
                "calls": r.calls,
                "cost": _d(r.cost),
                "list_cost": _d(r.list_cost),
                "usage": _usage_json(r.usage),
                "batches": [
                    {
                        "id": b.id,
                        "provider_batch_id": b.provider_batch_id,
                        "provider": b.provider,
                        "model": b.model,
                        "status": b.status,
                        "calls": b.calls,
                        "cost": _d(b.cost.total),
                        "list_cost": _d(b.list_cost.total),
                    }
                    for b in r.batches
                ],
            }
            for r in report.rounds
        ],
        "unknown_models": [f"{p}/{m}" for p, m in report.unknown_models],
    }
    if report.items is not None:
        out["items"] = {
            str(i.idx): {
                "paid_calls": i.paid_calls,
                "cost": _d(i.cost),
                "reused_calls": i.reused_calls,
                "avoided": _d(i.avoided),
            }
            for i in report.items.values()
        }
    return out
