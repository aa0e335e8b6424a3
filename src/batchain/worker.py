"""Workers: processes, on any machines that reach the store, that run its jobs.

A worker takes the store's unfinished jobs (or the ones it is given) and runs each to its
end: realtime items, batch rounds, their polls and collections. A job is run by one
process at a time, under its lease (:mod:`batchain.engine.lifecycle`): it reads the
inputs, runs the provider batches and ends the job. A worker that finds a job's lease held
helps with its items if the job is shared (realtime and flex mode without a budget: items
are taken a chunk at a time, see :mod:`batchain.engine.claims`), and looks at it again later;
so several workers share a store's jobs, and a realtime job's items. When a worker dies,
the chunks it held are free again at once, and its jobs' leases lapse
(``$BATCHAIN_LEASE_S``, 30 s) and another worker takes them over, from the store: answered
calls replay, calls at a provider are waited for there, never sent twice. Every item ends
with exactly one result.

With a PostgreSQL store (``postgresql://...``) the workers can be on many machines;
``batchain submit`` on one, ``batchain worker`` on the others. The chain is loaded from the
reference the job recorded (a file path or module, which must exist where the worker runs).

Which jobs a worker takes: those created, running (their runner gone) or waiting on
provider batches. A paused job (Ctrl-C, a budget reached, a host unreachable) waits for
someone to resume it, or for a worker given its id; completed and cancelled jobs are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.runnables import Runnable

from batchain.chains.ref import resolve_chain
from batchain.engine.session import not_shared, resolve_options
from batchain.errors import JobBusy, LeaseLost
from batchain.job import Job
from batchain.states import JobStatus
from batchain.store import Store, StoreArg, open_store

__all__ = ["WORKABLE", "WorkReport", "awork", "work"]

log = logging.getLogger("batchain.worker")

#: the statuses of jobs a worker takes
WORKABLE = (JobStatus.CREATED, JobStatus.RUNNING, JobStatus.WAITING)
#: ... and of the jobs it is given by id: a paused one too
WORKABLE_NAMED = (*WORKABLE, JobStatus.PAUSED)

#: a job's inputs left to read, when they are not all in the store (None: it cannot go on)
InputsFor = Callable[[Job], Iterable[Any] | None]


@dataclass
class WorkReport:
    """What a worker did: jobs it ran to their end (by status), and why others were passed
    over (by job)."""

    ended: dict[str, JobStatus] = field(default_factory=dict)
    passed_over: dict[str, str] = field(default_factory=dict)
    #: items run to help with jobs another process ran (by job)
    helped: dict[str, int] = field(default_factory=dict)


def work(store: StoreArg = None, jobs: Sequence[str] = (), **kwargs: Any) -> WorkReport:
    """Run the store's jobs (or ``jobs``) until stopped; the arguments of :func:`awork`."""
    from batchain._sync import run_sync

    return run_sync(awork(store, jobs, **kwargs))


async def awork(
    store: StoreArg = None,
    jobs: Sequence[str] = (),
    *,
    concurrency: int = 4,
    poll_interval: float = 2.0,
    until_idle: bool = False,
    inputs_for: InputsFor | None = None,
    **options: Any,
) -> WorkReport:
    """Run jobs of ``store``: the ones named in ``jobs`` (paused ones too), else every
    workable one (see :data:`WORKABLE`), up to ``concurrency`` at once, taking one more
    every ``poll_interval`` seconds (or as soon as one of its jobs ends). With
    ``until_idle``, return once no job is left that it could run (a job another process
    runs is waited for: that process may die); else run until cancelled. ``inputs_for``:
    a job's remaining inputs when the store does not hold them all (the CLI reopens the
    file the job was started with). ``options``: run options for every job (``progress``
    is off by default)."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    options.setdefault("progress", False)
    own = not isinstance(store, Store)
    st = open_store(store)
    shift = _Shift(st.location, inputs_for, options)
    try:
        while True:
            now = time.monotonic()
            candidates = _workable(st, jobs)
            # one new job a look: workers started together share the jobs out instead of
            # the first one to look taking them all
            for job_id in candidates:
                if len(shift.running) >= concurrency:
                    break
                if job_id not in shift.running and shift.busy_until.get(job_id, 0.0) <= now:
                    shift.start(job_id)
                    break
            if not shift.running:
                if until_idle and all(j in shift.report.passed_over for j in candidates):
                    return shift.report
                await asyncio.sleep(poll_interval)
                continue
            await asyncio.wait(
                shift.running.values(), timeout=poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
            shift.reap(poll_interval)
    finally:
        await shift.stop()
        if own:
            st.close()


class _Shift:
    """A worker's jobs in hand, and what became of those it ran."""

    def __init__(self, location: Path | str, inputs_for: InputsFor | None, options: dict[str, Any]) -> None:
        self.location = location
        self.inputs_for = inputs_for
        self.options = options
        self.report = WorkReport()
        self.running: dict[str, asyncio.Task[JobStatus | None]] = {}
        #: jobs another process runs: not tried again before then
        self.busy_until: dict[str, float] = {}
        self._chains: dict[str, Runnable[Any, Any]] = {}

    def start(self, job_id: str) -> None:
        self.running[job_id] = asyncio.create_task(self._run(job_id), name=f"batchain-worker:{job_id}")

    def reap(self, poll_interval: float) -> None:
        for job_id, task in list(self.running.items()):
            if not task.done():
                continue
            del self.running[job_id]
            status = task.result()
            if status is None:
                self.busy_until[job_id] = time.monotonic() + poll_interval
            else:
                self.report.ended[job_id] = status

    async def stop(self) -> None:
        for task in self.running.values():
            task.cancel()
        for task in self.running.values():
            with contextlib.suppress(BaseException):
                await task

    async def _run(self, job_id: str) -> JobStatus | None:
        """Run one job to its end; None if it was not run (another process runs it, or it
        cannot run here: the reason is in the report)."""
        job = Job.open(job_id, store=self.location)
        record = job.record
        chain = self._chain(job_id, record.chain_ref)
        if chain is None:
            return None
        job = Job.open(job_id, store=job.store, chain=chain)
        inputs = None
        if not record.inputs_complete:
            inputs = self.inputs_for(job) if self.inputs_for is not None else None
            if inputs is None:
                self.report.passed_over[job_id] = "its inputs are not all in the store"
                return None
        try:
            try:
                await job.aresume(inputs, **self.options)
            except JobBusy:
                # another process runs it: help with its items if they can be shared, and
                # look at it again later (that process may die)
                await self._assist(job)
                return None
        except LeaseLost as exc:
            # this worker stalled past its lease (or its seat, helping) and another process
            # took over: the job goes on there, or here again at a later look
            log.warning("worker: %s", exc)
            return None
        self.report.passed_over.pop(job_id, None)
        log.info("worker: job %s %s", job_id, job.status.value)
        return job.status

    async def _assist(self, job: Job) -> None:
        """Run free chunks of a realtime job's items another process runs (see
        :mod:`batchain.engine.claims`); nothing for a job that is not shared."""
        options = resolve_options(job.record.options, self.options)
        if not_shared(options) is not None:
            return
        n = await job.aassist(**self.options)
        if n:
            log.info("worker: job %s: helped with %d items", job.id, n)
            self.report.helped[job.id] = self.report.helped.get(job.id, 0) + n

    def _chain(self, job_id: str, ref: str | None) -> Runnable[Any, Any] | None:
        """The job's chain, loaded once per worker; None (and why, in the report) if it
        cannot be loaded here."""
        found = self._chains.get(job_id)
        if found is not None:
            return found
        if not ref:
            self.report.passed_over[job_id] = (
                "no chain reference recorded (started from Python with a chain object)"
            )
            return None
        try:
            found = self._chains[job_id] = resolve_chain(ref)
        except Exception as exc:  # the chain's module is not here, or fails to import
            why = f"cannot load chain {ref}: {type(exc).__name__}: {exc}"
            if self.report.passed_over.get(job_id) != why:  # said once, not at every look
                log.warning("worker: job %s: %s", job_id, why)
            self.report.passed_over[job_id] = why
            return None
        return found


def _workable(st: Store, named: Sequence[str]) -> list[str]:
    """Jobs to try now: the named ones, else the store's workable ones, oldest first."""
    if named:
        records = [r for r in (st.get_job(j) for j in named) if r is not None]
        return [r.id for r in records if r.status in WORKABLE_NAMED]
    return st.job_ids(WORKABLE)
