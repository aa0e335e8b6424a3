"""Live progress: items done/failed, calls in flight, rate, tokens, ETA.

In batch mode the line also says what the store knows of the whole job (items done of all,
provider batches by status, and the expected finish of the batches at the provider: see
:mod:`batchain.engine.forecast`), read once a second.

Shown with rich in terminals and notebooks; silent when output is not a terminal or when
asked to be quiet.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from batchain.engine.forecast import JobProgress, finish_text, job_progress

if TYPE_CHECKING:
    from batchain.engine.runner import JobRunner

__all__ = ["ProgressDisplay", "batch_line", "wants_progress"]

#: seconds between two reads of the job's progress from the store (batch mode)
_STORE_EVERY = 1.0


def wants_progress(flag: bool | None) -> bool:
    if flag is False:
        return False
    if "ipykernel" in sys.modules:
        return True
    return sys.stderr.isatty()


class ProgressDisplay:
    def __init__(self, runner: JobRunner, job_id: str, total: int | None) -> None:
        self.runner = runner
        self.job_id = job_id
        self.total = total
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(escape(job_id), total=total, detail="")
        self._started = time.monotonic()
        #: batch mode: the job's progress as last read from the store, and when
        self.job: JobProgress | None = None
        self._read_at = -_STORE_EVERY

    def _refresh(self) -> None:
        r = self.runner
        s = r.scheduler.stats
        c = r.calls.stats
        finished = r.done + r.failed
        if r.batch is None:
            elapsed = max(time.monotonic() - self._started, 1e-6)
            detail = (
                f"ok {r.done} · failed {r.failed} · calls in flight {s.in_flight} · "
                f"{finished / elapsed:.1f} items/s · tokens {c.input_tokens + c.output_tokens:,}"
            )
        else:
            job = self._job_progress()
            detail = f"round {r.batch.stats.rounds} · parked {len(r.batch.parked)} · " + batch_line(job)
            if s.in_flight:  # auto mode: calls sent realtime
                detail += f" · calls in flight {s.in_flight}"
            # the whole job, earlier runs included: a resumed job's bar starts where it was
            finished = job.items_done
            if self.total is None and job.inputs_complete:
                self.progress.update(self.task, total=job.items_total)
        if s.rate_limited:
            detail += f" · 429s {s.rate_limited}"
        if c.cached:
            detail += f" · cache {c.cached}"
        self.progress.update(self.task, completed=finished, detail=escape(detail))

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

    async def run(self) -> None:
        with self.progress:
            try:
                while True:
                    self._refresh()
                    await asyncio.sleep(0.25)
            finally:
                self._read_at = -_STORE_EVERY  # the last line says where the job ended
                self._refresh()


def batch_line(p: JobProgress, now: float | None = None) -> str:
    """The job's progress on one line: ``items 120/400 · batches: 3 in progress, 1
    validating, 12 collected · requests 900/4,000 · finish 14:32 (in 12 min)``."""
    total = f"{p.items_total:,}" + ("" if p.inputs_complete else "+")
    parts = [f"items {p.items_done:,}/{total}" + (f" ({p.items_failed:,} failed)" if p.items_failed else "")]
    if p.batches:
        parts.append("batches: " + ", ".join(f"{n:,} {label}" for label, n in p.batches.items()))
    if p.requests_total:
        parts.append(f"requests {p.requests_done:,}/{p.requests_total:,}")
    if p.open_batches:
        parts.append("finish " + finish_text(p, now, short=True))
    return " · ".join(parts)
