"""Where a batch job stands and when its provider batches should end: items done of all,
provider batches by status, requests done at the provider, and the expected finish.

Read from the store alone (item counters, and what each provider batch last reported when
polled: :meth:`~batchain.store.base.Store.batch_seen`), so the live display and
``batchain status`` in another process say the same, and neither walks the job's items.

How the expected finish is estimated
------------------------------------
Only from what the providers report, never guessed ahead of it:

* a batch still at its provider that has reported some of its requests done (OpenAI and
  Anthropic ``request_counts``) is assumed to go on at the pace it went so far: it
  finishes at ``created + elapsed x total / done``, ``elapsed`` running from its creation to
  the poll that saw ``done``;
* a batch that has reported none done yet (validating, queued) is assumed to take as long
  as the longest one with a basis: the job's collected batches (creation to collection)
  and the in-progress estimates above;
* a batch with all its requests done, or ended, finishes now (it is being collected);
* the expected finish is when the last open batch finishes, never earlier than now.

With no basis at all (no batch has reported progress and none was collected) it is
unknown. It covers the batches at the provider now: a chain with further model steps
sends another round after them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from batchain.states import BatchStatus, ItemStatus
from batchain.store.base import Store
from batchain.store.records import BatchRecord

__all__ = [
    "JobProgress",
    "batch_label",
    "expected_finish",
    "finish_text",
    "job_progress",
    "progress_text",
]

#: batches still at (or on their way to) a provider
OPEN: frozenset[str] = frozenset({BatchStatus.CREATING, BatchStatus.SUBMITTED, BatchStatus.ENDED})
_ENDED_AT_PROVIDER = frozenset({"ended", "completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A job's progress as the store knows it."""

    #: items with a result (succeeded, failed or cancelled), and all items so far
    items_done: int
    items_total: int
    #: False while inputs are still being read (``items_total`` may grow)
    inputs_complete: bool
    #: items that failed (among ``items_done``)
    items_failed: int = 0
    #: the job's provider batches by :func:`batch_label`, most common first
    batches: dict[str, int] = field(default_factory=dict)
    #: requests done and in all, in the batches at a provider, as the providers report them
    requests_done: int = 0
    requests_total: int = 0
    #: wall time the open batches should all have ended (None: unknown, or none open)
    expected_finish: float | None = None
    #: how many batches are at a provider (or on their way to one)
    open_batches: int = 0


def batch_label(batch: BatchRecord) -> str:
    """A batch's status as the user reads it: the provider's own status while the batch is
    at its provider (``in progress``, ``validating``, ``finalizing``...), else the store's
    (``creating``, ``collected``, ``lost``...)."""
    if batch.status in (BatchStatus.SUBMITTED, BatchStatus.ENDED) and batch.provider_status:
        return batch.provider_status.replace("_", " ")
    return batch.status


def _finished(batch: BatchRecord) -> bool:
    return batch.status == BatchStatus.ENDED or (
        batch.provider_status in _ENDED_AT_PROVIDER or (batch.total > 0 and batch.done >= batch.total)
    )


def expected_finish(batches: Sequence[BatchRecord], now: float) -> float | None:
    """When the open batches among ``batches`` should all have ended (see the module's
    docstring); None when none is open or there is no basis yet."""
    open_ = [b for b in batches if b.status in OPEN]
    if not open_:
        return None
    durations = [
        b.updated_at - b.created_at for b in batches if b.status == BatchStatus.COLLECTED and b.total > 0
    ]
    finishes: list[float] = []
    unknown: list[BatchRecord] = []
    for b in open_:
        if _finished(b):
            finishes.append(now)
        elif b.done > 0 and b.total > 0 and b.seen_at is not None:
            duration = (b.seen_at - b.created_at) * b.total / b.done
            durations.append(duration)
            finishes.append(b.created_at + duration)
        else:
            unknown.append(b)
    if unknown:
        if not durations:
            return None
        longest = max(durations)
        finishes += [b.created_at + longest for b in unknown]
    return max(max(finishes), now)


def job_progress(store: Store, job_id: str, now: float | None = None) -> JobProgress:
    """The job's progress from the store: two small reads (its item counters and its
    provider batches)."""
    job = store.get_job(job_id)
    if job is None:
        raise KeyError(job_id)
    counts = store.item_counts(job_id)
    total = sum(counts.values())
    batches = store.job_batches(job_id)
    open_ = [b for b in batches if b.status in OPEN]
    labels = Counter(batch_label(b) for b in batches)
    return JobProgress(
        items_done=total - counts.get(ItemStatus.PENDING.value, 0),
        items_total=total,
        inputs_complete=job.inputs_complete,
        items_failed=counts.get(ItemStatus.FAILED.value, 0),
        batches=dict(labels.most_common()),
        requests_done=sum(b.done for b in open_),
        requests_total=sum(b.total for b in open_),
        expected_finish=expected_finish(batches, time.time() if now is None else now),
        open_batches=len(open_),
    )


def _when(ts: float, now: float) -> str:
    left = max(0.0, ts - now)
    if left < 60:
        return "any moment now" if left < 5 else f"in {left:.0f} s"
    if left < 3600:
        return f"in {left / 60:.0f} min"
    return f"in {left / 3600:.1f} h"


def progress_text(p: JobProgress, now: float | None = None) -> list[tuple[str, str]]:
    """The progress as labelled lines: ``items``, ``batches`` and ``finish`` (the last two
    only for a job with provider batches)."""
    now = time.time() if now is None else now
    total = f"{p.items_total:,}" + ("" if p.inputs_complete else "+")
    rows = [("items", f"{p.items_done:,}/{total} done")]
    if not p.batches:
        return rows
    batches = ", ".join(f"{n:,} {label}" for label, n in p.batches.items())
    if p.requests_total:
        batches += f" ({p.requests_done:,}/{p.requests_total:,} requests done at the provider)"
    rows.append(("batches", batches))
    if p.open_batches:
        rows.append(("finish", finish_text(p, now)))
    return rows


def finish_text(p: JobProgress, now: float | None = None, *, short: bool = False) -> str:
    """The expected finish of the batches at the provider, or why it is unknown."""
    now = time.time() if now is None else now
    if p.expected_finish is None:
        return "unknown" if short else "unknown (no batch has reported progress yet)"
    fmt = "%H:%M" if short and p.expected_finish - now < 20 * 3600 else "%Y-%m-%d %H:%M"
    text = f"{time.strftime(fmt, time.localtime(p.expected_finish))} ({_when(p.expected_finish, now)})"
    return text if short else text + ", for the batches at the provider now"
