"""Live progress: one line, redrawn a few times a second, as wide as the terminal.

The counts are the job's, read from the store (items done by earlier runs included, so
a resumed job's line and its final summary say the same); the pace, tokens and cost are
what this run adds to what the store held when it started. In batch mode the line also
says what the store knows of the provider batches (by status, requests done, expected
finish: see :mod:`batchain.engine.forecast`). :mod:`batchain.engine.progress_line` turns
that state into text; this module only gathers it and draws it with rich.

Shown in terminals and notebooks; silent when output is not a terminal or when asked to
be quiet.
"""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import Decimal
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.text import Text

from batchain.engine.forecast import JobProgress, job_progress
from batchain.engine.history import Earlier
from batchain.engine.progress_line import LineState, render_line

if TYPE_CHECKING:
    from batchain.engine.runner import JobRunner

__all__ = ["ProgressDisplay", "wants_progress"]

#: seconds between two reads of the job's progress from the store (two small reads)
_STORE_EVERY = 0.5
#: seconds between two redraws
_DRAW_EVERY = 0.25


def wants_progress(flag: bool | None) -> bool:
    if flag is False:
        return False
    if "ipykernel" in sys.modules:
        return True
    return sys.stderr.isatty()


def _earlier(runner: JobRunner) -> Earlier:
    """What the job's earlier runs paid (as the run's progress history reads it, once)."""
    try:
        return runner.history.earlier()
    except Exception:  # the display never stops a run
        return Earlier()


class ProgressDisplay:
    def __init__(self, runner: JobRunner, job_id: str, total: int | None) -> None:
        self.runner = runner
        self.job_id = job_id
        #: how many items the job will have, if the caller knows (a list's length, the
        #: CLI's count of the input file's rows); the store's count wins once all are read
        self.total = total
        self.console = Console(stderr=True)
        self._started = time.monotonic()
        #: the job's progress as last read from the store, and when
        self.job: JobProgress | None = None
        self._read_at = -_STORE_EVERY
        #: items done when this run started (its pace counts only its own)
        self._done_before: int | None = None
        self._base: Earlier | None = None

    def state(self) -> LineState:
        """The line's state now."""
        r = self.runner
        job = self._job_progress()
        if self._done_before is None:
            self._done_before = job.items_done
        if self._base is None:  # read once, at the first draw
            self._base = _earlier(r)
        base = self._base
        c, b = r.calls.stats, r.batch.stats if r.batch is not None else None
        tokens = c.input_tokens + c.output_tokens + (b.input_tokens + b.output_tokens if b else 0)
        unpriced = c.unpriced + (b.unpriced if b else 0)
        budget = r.calls.budget
        # the budget counts the job's spending itself (earlier runs included), to the cent
        spent = budget.spent if budget is not None else base.spent + c.spent + (b.spent if b else Decimal(0))
        total, known = self._total(job)
        finish_in = None if job.expected_finish is None else job.expected_finish - time.time()
        return LineState(
            done=job.items_done,
            failed=job.items_failed,
            total=total,
            total_known=known,
            run_done=max(0, job.items_done - self._done_before),
            elapsed=time.monotonic() - self._started,
            tokens=base.tokens + tokens,
            cost=spent,
            unpriced=unpriced > 0,
            budget=budget.limit if budget is not None else None,
            budget_left=budget.limit - budget.spent if budget is not None else None,
            batches=job.batches,
            requests_done=job.requests_done,
            requests_total=job.requests_total,
            round=b.rounds if b else 0,
            queued=len(r.batch.unsubmitted) if r.batch is not None else 0,
            batch_mode=r.batch is not None,
            batches_open=job.open_batches > 0,
            finish_in=finish_in,
            in_flight=r.scheduler.stats.in_flight,
            rate_limited=r.scheduler.stats.rate_limited,
            cached=c.cached,
        )

    def _total(self, job: JobProgress) -> tuple[int | None, bool]:
        if job.inputs_complete:
            return job.items_total, True
        if self.total is not None:
            return max(self.total, job.items_total), True
        return job.items_total, False  # a stream: the rows read so far

    def _job_progress(self) -> JobProgress:
        now = time.monotonic()
        if self.job is None or now - self._read_at >= _STORE_EVERY:
            self._read_at = now
            try:
                self.job = job_progress(self.runner.store, self.job_id)
            except Exception:  # the display never stops a run: show the last known state
                if self.job is None:
                    self.job = JobProgress(0, self.total or 0, False)
        return self.job

    def line(self) -> Text:
        return Text(render_line(self.state(), self.console.width), no_wrap=True, overflow="ellipsis")

    async def run(self) -> None:
        with Live(self.line(), console=self.console, auto_refresh=False, transient=False) as live:
            try:
                while True:
                    await asyncio.sleep(_DRAW_EVERY)
                    live.update(self.line(), refresh=True)
            finally:
                self._read_at = -_STORE_EVERY  # the last line says where the job ended
                live.update(self.line(), refresh=True)
