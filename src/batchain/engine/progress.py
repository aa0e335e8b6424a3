"""Live progress: items done/failed, calls in flight, rate, tokens, ETA.

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

if TYPE_CHECKING:
    from batchain.engine.runner import JobRunner

__all__ = ["ProgressDisplay", "wants_progress"]


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

    def _refresh(self) -> None:
        r = self.runner
        s = r.scheduler.stats
        elapsed = max(time.monotonic() - self._started, 1e-6)
        finished = r.done + r.failed
        c = r.calls.stats
        detail = (
            f"ok {r.done} · failed {r.failed} · calls in flight {s.in_flight} · "
            f"{finished / elapsed:.1f} items/s · tokens {c.input_tokens + c.output_tokens:,}"
        )
        if s.rate_limited:
            detail += f" · 429s {s.rate_limited}"
        if c.cached:
            detail += f" · cache {c.cached}"
        if r.batch is not None:
            detail += self._batch_detail(r)
        self.progress.update(self.task, completed=finished, detail=detail)

    @staticmethod
    def _batch_detail(r: JobRunner) -> str:
        b = r.batch
        assert b is not None
        views = [lb.view for lb in b.live.values() if lb.view is not None]
        done = sum(v.done for v in views)
        total = sum(v.total for v in views)
        text = f" · round {b.stats.rounds} · parked {len(b.parked)}"
        if b.live:
            text += f" · {len(b.live)} batches at provider"
            if total:
                text += f" ({done}/{total} done)"
        return text

    async def run(self) -> None:
        with self.progress:
            try:
                while True:
                    self._refresh()
                    await asyncio.sleep(0.25)
            finally:
                self._refresh()
