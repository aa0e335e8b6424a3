"""The live progress line: a job's state in, one line of text out, as wide as the terminal.

Pure (no clock, no store, no terminal): :class:`ProgressDisplay
<batchain.engine.progress.ProgressDisplay>` gathers a :class:`LineState` a few times a
second and draws what :func:`render_line` returns.

The fields, left to right, are also their order of importance (:data:`FIELDS`)::

    412/1,000 items · 41% · ETA 1m05s · cost $0.001234 · budget $4.9988 left of $5 · 3 failed
    · batches 2 in progress, 1 collected · 12.3 items/s · tokens 45,120 · 4 in flight
    · requests 900/4,000 at the provider · round 2 · 5 queued · 3 rate-limited · 7 cache hits

When the line is wider than the terminal, whole fields are dropped from the right (the
least important first) until it fits: done/total, percent, ETA and cost stay longest; a
field is never cut in the middle. Fields with nothing to say (no budget, no failure, no
batch) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from rich.cells import cell_len

__all__ = ["FIELDS", "Field", "LineState", "eta_seconds", "fmt_duration", "line_fields", "render_line"]

SEPARATOR = " · "


class Field(StrEnum):
    """The line's fields, in the order they are shown and kept (the last is dropped first)."""

    ITEMS = "items"
    PERCENT = "percent"
    ETA = "eta"
    COST = "cost"
    BUDGET = "budget"
    FAILED = "failed"
    BATCHES = "batches"
    RATE = "rate"
    TOKENS = "tokens"
    IN_FLIGHT = "in_flight"
    REQUESTS = "requests"
    ROUND = "round"
    QUEUED = "queued"
    RATE_LIMITED = "rate_limited"
    CACHED = "cached"


FIELDS: tuple[Field, ...] = tuple(Field)


@dataclass(frozen=True, slots=True)
class LineState:
    """What the line shows: the job's counts (earlier runs included, as in the summary)
    and this run's pace."""

    #: the job's items with a result (succeeded, failed or cancelled), and failed among them
    done: int
    failed: int = 0
    #: all the job's items, when known (None: not known at all)
    total: int | None = None
    #: False: ``total`` is only the rows read so far (a stream), more may come
    total_known: bool = True
    #: this run: items it finished, and seconds since it started
    run_done: int = 0
    elapsed: float = 0.0
    #: tokens the job paid for (in + out), and what it cost so far (None: no known price)
    tokens: int = 0
    cost: Decimal | None = None
    #: some answered calls have no known price (the cost leaves them out)
    unpriced: bool = False
    #: the ``budget`` limit, if any, and what is left of it
    budget: Decimal | None = None
    budget_left: Decimal | None = None
    #: batch mode: provider batches by status label, requests done/all at the provider,
    #: rounds so far, calls waiting to go in the next batch, and when the open batches should end
    #: (seconds from now; None: unknown, or none open)
    batches: dict[str, int] = field(default_factory=dict)
    requests_done: int = 0
    requests_total: int = 0
    round: int = 0
    queued: int = 0
    batch_mode: bool = False
    batches_open: bool = False
    finish_in: float | None = None
    in_flight: int = 0
    rate_limited: int = 0
    cached: int = 0


def fmt_duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h07m``, ``2d04h``: two units at most."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _money(amount: Decimal) -> str:
    # as the summary writes it below a dollar; fewer digits as the amount grows
    places = 6 if abs(amount) < 1 else 4 if abs(amount) < 100 else 2
    return f"${amount:,.{places}f}"


def _limit(amount: Decimal) -> str:
    """A limit as the user gave it: ``$5``, ``$2.5``."""
    return f"${amount:,.0f}" if amount == amount.to_integral_value() else _money(amount)


def eta_seconds(s: LineState) -> float | None:
    """Seconds until every item is done, or None when it cannot be told.

    Batch mode with batches at a provider: when they should end (the forecast, from what
    the providers report). Otherwise the items left at this run's pace so far."""
    if s.total is None or not s.total_known:
        return None
    left = max(0, s.total - s.done)
    if left == 0:
        return 0.0
    if s.batches_open:
        return s.finish_in
    if s.batch_mode and s.queued:  # calls wait for a batch: the pace so far says nothing
        return None
    if s.run_done <= 0 or s.elapsed <= 0:
        return None
    return left * s.elapsed / s.run_done


def line_fields(s: LineState) -> list[tuple[Field, str]]:
    """Every field with something to say, in :data:`FIELDS` order."""
    out: list[tuple[Field, str]] = []
    add = out.append
    if s.total is None:
        add((Field.ITEMS, f"{s.done:,} items"))
    elif not s.total_known:
        add((Field.ITEMS, f"{s.done:,}/{s.total:,}+ items"))
    else:
        add((Field.ITEMS, f"{s.done:,}/{s.total:,} items"))
        # floored: 100% only when every item is done
        add((Field.PERCENT, f"{100 * s.done // s.total if s.total else 100}%"))
        eta = eta_seconds(s)
        if s.done >= s.total:
            add((Field.ETA, f"done in {fmt_duration(s.elapsed)}"))
        else:
            add((Field.ETA, "ETA ?" if eta is None else f"ETA {fmt_duration(max(eta, 1))}"))
    if s.cost is not None:
        add((Field.COST, f"cost {_money(s.cost)}" + (" + unpriced" if s.unpriced else "")))
    if s.budget is not None and s.budget_left is not None:
        left = max(s.budget_left, Decimal(0))
        add((Field.BUDGET, f"budget {_money(left)} left of {_limit(s.budget)}"))
    if s.failed:
        add((Field.FAILED, f"{s.failed:,} failed"))
    if s.batches:
        add((Field.BATCHES, "batches " + ", ".join(f"{n:,} {label}" for label, n in s.batches.items())))
    if s.elapsed > 0:
        add((Field.RATE, f"{s.run_done / s.elapsed:,.1f} items/s"))
    add((Field.TOKENS, f"tokens {s.tokens:,}"))
    if s.in_flight or not s.batch_mode:
        add((Field.IN_FLIGHT, f"{s.in_flight:,} in flight"))
    if s.requests_total:
        add((Field.REQUESTS, f"requests {s.requests_done:,}/{s.requests_total:,} at the provider"))
    if s.round:
        add((Field.ROUND, f"round {s.round:,}"))
    if s.batch_mode:
        add((Field.QUEUED, f"{s.queued:,} queued"))
    if s.rate_limited:
        add((Field.RATE_LIMITED, f"{s.rate_limited:,} rate-limited"))
    if s.cached:
        add((Field.CACHED, f"{s.cached:,} cache hits"))
    return out


def render_line(s: LineState, width: int) -> str:
    """The line for a terminal ``width`` columns wide: the leading fields that fit in
    ``width - 1`` columns (a character in the last column makes some terminals wrap),
    whole; the first field always."""
    fields = line_fields(s)
    room = max(width - 1, 0)
    kept = [fields[0][1]]
    used = cell_len(kept[0])
    for _, text in fields[1:]:
        more = cell_len(SEPARATOR) + cell_len(text)
        if used + more > room:
            break
        kept.append(text)
        used += more
    return SEPARATOR.join(kept)
