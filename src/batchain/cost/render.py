"""How a job's cost report looks: the rich table of ``batchain report`` and its JSON form.

Kept apart from :mod:`batchain.cost.report` (the numbers) so the model needs no rich, and the
presentation can change without touching how a job is priced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table

from batchain.cost.prices import Cost
from batchain.store.records import Usage

if TYPE_CHECKING:  # the report calls its renderer: only its types are needed here
    from batchain.cost.report import CostLine, JobCost

__all__ = ["render_table", "to_json"]

_ZERO = Decimal(0)


def _money(value: Decimal | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.6f}"


def _int(n: int) -> str:
    return f"{n:,}"


#: the table's columns: (name, justify, kind); "tokens" columns may be dropped when they
#: are all zero, then "list" when the table is narrow
_COLUMNS: tuple[tuple[str, JustifyMethod, str], ...] = (
    ("provider / model", "left", "name"),
    ("tier", "left", "name"),
    ("calls", "right", "count"),
    ("input", "right", "tokens"),
    ("cached", "right", "tokens"),
    ("cache write", "right", "tokens"),
    ("output", "right", "tokens"),
    ("cost", "right", "money"),
    ("list price", "right", "list"),
    ("saved", "right", "money"),
)


def render_table(report: JobCost, width: int | None = None) -> Table:
    """A rich table: paid lines, avoided lines, rounds, totals; notes in the caption.

    ``width`` (the terminal's columns) makes it fit: cache columns that are all zero go
    first, then the list price (cost and saved stay), and names wrap; no number is ever
    cut short."""
    title = f"Cost of job {report.job_id}" + (f" ({report.mode})" if report.mode else "")
    rows = list(_rows(report))
    keep = _fitting(rows, width)
    table = Table(title=escape(title), expand=False)
    for i, (name, justify, kind) in enumerate(_COLUMNS):
        if i in keep:
            numeric = kind not in ("name",)
            table.add_column(name, justify=justify, no_wrap=numeric, overflow="fold")
    for cells, section, bold in rows:
        if section:
            table.add_section()
        table.add_row(*(c for i, c in enumerate(cells) if i in keep), style="bold" if bold else None)
    notes = [
        f"paid {_money(report.paid)}",
        f"saved by tier {_money(report.savings)}",
        f"avoided by cache/dedup {_money(report.avoided)}"
        f" ({report.cache_hits} cache hits, {report.shared_calls} shared, {report.replayed_calls} replayed"
        + (f", {report.langchain_cache_hits} from LangChain's cache" if report.langchain_cache_hits else "")
        + ")",
        f"failed: {report.failed_calls} calls, {report.failed_items} items",
    ]
    usage = report.usage
    if usage.cache_read_tokens or usage.cache_creation_tokens:
        notes.insert(
            2,
            f"prompt cache: {_int(usage.cache_read_tokens)} tokens read, "
            f"{_int(usage.cache_creation_tokens)} written, saved {_money(report.cache_saved)}",
        )
    if not report.complete:
        names = ", ".join(f"{p}/{m}" for p, m in report.unknown_models)
        notes.append(f"[yellow]no price for {names}: not in the totals[/yellow]")
    notes.extend(f"[yellow]{escape(n)}[/yellow]" for n in report.notes)
    table.caption = " · ".join(notes)
    return table


#: a row's cells, whether a section starts before it, and whether it is bold (the total)
_Row = tuple[list[str], bool, bool]


def _rows(report: JobCost) -> Iterator[_Row]:
    def usage_cells(u: Usage) -> list[str]:
        return [
            _int(u.input_tokens),
            _int(u.cache_read_tokens),
            _int(u.cache_creation_tokens),
            _int(u.output_tokens),
        ]

    for line in report.lines:
        shown = line.service_tier and line.service_tier != line.tier  # "flex (flex)" says it twice
        tier = line.tier + (f" ({line.service_tier})" if shown else "")
        yield (
            [
                f"{line.provider} / {line.model}",
                tier,
                _int(line.calls),
                *usage_cells(line.usage),
                _money(line.cost.total),
                _money(line.list_cost.total),
                _money(line.savings),
            ],
            False,
            False,
        )
    for n, a in enumerate(report.avoided_lines):
        cells = [
            f"{a.provider} / {a.model}",
            f"{a.source} (not paid)",
            _int(a.calls),
            *usage_cells(a.usage),
            _money(_ZERO),
            _money(a.list_cost.total),
            _money(a.list_cost.total),
        ]
        yield cells, n == 0, False
    for n, rnd in enumerate(report.rounds):
        saved = None if rnd.cost is None or rnd.list_cost is None else rnd.list_cost - rnd.cost
        cells = [
            f"round {rnd.round}: {len(rnd.batches)} batch(es)",
            "batch",
            _int(rnd.calls),
            *usage_cells(rnd.usage),
            _money(rnd.cost),
            _money(rnd.list_cost),
            _money(saved),
        ]
        yield cells, n == 0, False
    total = [
        "total" + ("" if report.complete else " (known prices only)"),
        "",
        _int(report.paid_calls),
        *usage_cells(report.usage),
        _money(report.paid),
        _money(report.list_price),
        _money(report.savings + report.avoided),
    ]
    yield total, True, True


def _fitting(rows: list[_Row], width: int | None) -> set[int]:
    """The columns kept at ``width``: every one if it fits (or no width is given)."""
    keep = set(range(len(_COLUMNS)))

    def needed() -> int:
        # each column: its widest cell or header, plus rich's padding and border (3)
        out = 4
        for i in keep:
            name, _, kind = _COLUMNS[i]
            cells = [cells[i] for cells, _, _ in rows]
            widest = max(len(c) for c in [*cells, name])
            if kind == "name":
                widest = min(widest, 24)  # names wrap
            out += widest + 3
        return out

    if width is None or needed() <= width:
        return keep
    for i, (name, _, kind) in enumerate(_COLUMNS):  # cache columns with nothing in them
        if kind == "tokens" and name in ("cached", "cache write") and all(r[0][i] == "0" for r in rows):
            keep.discard(i)
    if needed() > width:
        keep -= {i for i, (_, _, kind) in enumerate(_COLUMNS) if kind == "list"}
    if needed() > width:  # still too wide: the cache columns go even with something in them
        keep -= {i for i, (name, _, _) in enumerate(_COLUMNS) if name in ("cached", "cache write")}
    return keep


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
                "cache_saved": _d(x.cache_saved),
            }

    out: dict[str, Any] = {
        "job_id": report.job_id,
        "mode": report.mode,
        "currency": report.currency,
        "complete": report.complete,
        "paid": _d(report.paid),
        "list_price": _d(report.list_price),
        "savings": _d(report.savings),
        "cache_saved": _d(report.cache_saved),
        "avoided": _d(report.avoided),
        "avoided_by_source": {k: _d(v) for k, v in report.avoided_by_source.items()},
        "paid_calls": report.paid_calls,
        "cache_hits": report.cache_hits,
        "shared_calls": report.shared_calls,
        "replayed_calls": report.replayed_calls,
        "langchain_cache_hits": report.langchain_cache_hits,
        "failed_calls": report.failed_calls,
        "failed_items": report.failed_items,
        "notes": list(report.notes),
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
