"""A running job's progress over time, sampled into the store for the dashboard's charts.

A sample is a handful of counters (items done and failed, calls paid, cost), so the history
of a job of any size stays a few hundred rows: a sample is taken when something changed, at
most every :func:`interval` seconds (2 s at the start, up to a minute for a job running for
hours), and once more when the run leaves. Cost, paid calls and their tokens add this
run's counters to what earlier runs paid (:meth:`ProgressHistory.earlier`, which the live
progress line reads too); item counts are the store's own counters.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from batchain.states import ItemStatus, LinkSource
from batchain.store.records import ProgressSample

if TYPE_CHECKING:
    from batchain.engine.runner import JobRunner

__all__ = ["Earlier", "ProgressHistory", "interval"]

#: seconds between two samples at the start of a run, and at most
_FIRST_EVERY = 2.0
_MOST_EVERY = 60.0
#: about this many samples over a run of any length (then one a minute)
_SAMPLES = 300


def interval(elapsed: float) -> float:
    """Seconds to the next sample, ``elapsed`` seconds into a run."""
    return max(_FIRST_EVERY, min(_MOST_EVERY, elapsed / _SAMPLES))


@dataclass(frozen=True, slots=True)
class Earlier:
    """What a job's earlier runs paid: calls, their cost and their tokens."""

    paid: int = 0
    spent: Decimal = Decimal(0)
    tokens: int = 0


class ProgressHistory:
    """Samples one run's progress: :meth:`keep` while it runs, :meth:`sample` as it leaves."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self._started = time.monotonic()
        self._earlier: Earlier | None = None
        self._last: tuple[int, int, int, int, Decimal] | None = None

    async def keep(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(interval(time.monotonic() - self._started))

    def sample(self, *, final: bool = False) -> None:
        """Record the progress now, if it changed since the last sample (always if ``final``).
        Never stops the run: the history is for looking at, not for running."""
        try:
            self._sample(final)
        except Exception:
            return

    def _sample(self, final: bool) -> None:
        r = self.runner
        store, job_id = r.store, r.job_id
        base = self.earlier()
        counts = store.item_counts(job_id)
        c, b = r.calls.stats, (r.batch.stats if r.batch is not None else None)
        paid = base.paid + c.paid + (b.paid if b is not None else 0)
        # calls of unknown price count as zero, as in the store's own sum
        spent = base.spent + c.spent + (b.spent if b is not None else Decimal(0))
        tokens = base.tokens + c.input_tokens + c.output_tokens
        if b is not None:
            tokens += b.input_tokens + b.output_tokens
        total = sum(counts.values())
        done = total - counts.get(ItemStatus.PENDING.value, 0)
        failed = counts.get(ItemStatus.FAILED.value, 0)
        now = (done, failed, total, paid, spent)
        if now == self._last and not final:
            return
        self._last = now
        sample = ProgressSample(time.time(), done, failed, total, paid, spent, tokens)
        store.record_progress(job_id, sample)

    def earlier(self) -> Earlier:
        """What earlier runs paid, read once per run, at its start. A run that left cleanly
        recorded it in its last sample, taken after its last payment: a few rows to read
        back, where summing it walks every call of the job (seconds, in the event loop, on
        a resumed job of a million calls). After a crash (the job was left running), or
        with no such sample, it is summed."""
        if self._earlier is None:
            self._earlier = self._read_earlier()
        return self._earlier

    def _read_earlier(self) -> Earlier:
        r = self.runner
        store, job_id = r.store, r.job_id
        if r.lifecycle.interrupted is False:
            samples = store.progress_history(job_id)
            last = samples[-1] if samples else None
            if last is not None and last.cost is not None and last.tokens is not None:
                return Earlier(last.calls_paid, last.cost, last.tokens)
        paid = store.job_call_stats(job_id).get(LinkSource.PAID.value, 0)
        usage = store.job_usage(job_id)
        return Earlier(paid, store.job_spent(job_id), usage.input_tokens + usage.output_tokens)
