"""A job's run from its start to its end: the lease that makes one process the job's
runner, the job's status on the way in and out, and the run loop's own state.

The run loop's state is explicit (:class:`RunControl`: a purpose and a phase, and why it
stopped) rather than flags spread over the runner, so every part of the engine asks the
same object whether to go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from batchain.errors import JobBusy
from batchain.states import BatchStatus, CallStatus, ItemStatus, JobStatus
from batchain.store.base import Store, lease_owner

__all__ = ["JobBusy", "JobLifecycle", "Lease", "Phase", "Purpose", "RunControl"]

#: a running job's lease: renewed every third of it, taken over when it lapses
LEASE_S = 30.0


class Purpose(Enum):
    """What a run is for."""

    FINISH = "finish"  # run the job to its end (run, resume, wait)
    SUBMIT = "submitted"  # stop once a round is at the provider (submit)
    POLL = "poll"  # advance once without blocking (poll)
    CANCEL = "cancel"  # cancel what is at the provider and mark the rest cancelled


class Phase(Enum):
    """Where the run loop is. The only transition is RUNNING -> STOPPING."""

    RUNNING = "running"  # items start and calls go out
    STOPPING = "stopping"  # nothing new starts; calls on the wire land, then the run ends


@dataclass(slots=True)
class RunControl:
    """The run loop's state, shared by the parts of the engine that act on it."""

    purpose: Purpose = Purpose.FINISH
    phase: Phase = Phase.RUNNING
    #: why the job pauses (budget spent, input failed...): becomes the job's status note
    pause_note: str | None = None
    #: an error that ends the run and is raised to the caller
    fatal: BaseException | None = None
    #: called once when the run starts stopping
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    @property
    def stopping(self) -> bool:
        return self.phase is Phase.STOPPING

    @property
    def cancelling(self) -> bool:
        return self.purpose is Purpose.CANCEL

    def stop(self) -> None:
        """Stop starting items and calls; calls on the wire finish and are recorded."""
        if self.phase is Phase.RUNNING:
            self.phase = Phase.STOPPING
            for hook in self.on_stop:
                hook()

    def pause(self, note: str) -> None:
        """Stop, and pause the job with ``note`` (nothing is lost; a resume continues)."""
        self.pause_note = note
        self.stop()

    def fail(self, exc: BaseException) -> None:
        """Stop, and raise ``exc`` to the caller at the end (the first error wins)."""
        if self.fatal is None:
            self.fatal = exc
        self.stop()


class Lease:
    """The job's lease: one process at a time runs a job."""

    def __init__(self, store: Store, job_id: str, seconds: float = LEASE_S) -> None:
        self.store = store
        self.job_id = job_id
        self.seconds = seconds
        self.owner = lease_owner()

    def claim(self) -> None:
        holder = self.store.acquire_lease(self.job_id, self.owner, self.seconds)
        if holder is not None:
            raise JobBusy(
                f"job {self.job_id} is being run by another process ({holder}); wait for it or stop it first"
            )

    async def keep(self) -> None:
        """Renew the lease every third of its length, until cancelled."""
        while True:
            await asyncio.sleep(self.seconds / 3)
            self.store.renew_lease(self.job_id, self.owner, self.seconds)

    def release(self) -> None:
        self.store.release_lease(self.job_id, self.owner)


class JobLifecycle:
    """The job's status as a run enters and leaves it."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        #: calls an earlier process had on the wire when it died (sent again, maybe paid twice)
        self.lost_calls = 0

    def enter(self) -> None:
        job = self.store.get_job(self.job_id)
        assert job is not None
        self.lost_calls = int(job.stats.get("calls_lost_in_crashes", 0))
        if job.status == JobStatus.RUNNING:
            # left behind by a process that died. Its calls still marked as sent were on
            # the wire: the provider may have answered (and billed) them, but the answer
            # never reached the store, so they will be sent again.
            self.lost_calls += len(self.store.calls_in_status(CallStatus.SENT, self.job_id))
            self.store.update_job(self.job_id, stats={**job.stats, "calls_lost_in_crashes": self.lost_calls})
            self.store.set_job_status(self.job_id, JobStatus.PAUSED, "interrupted")
        self.store.set_job_status(self.job_id, JobStatus.RUNNING)

    def leave(self, control: RunControl, stats: dict[str, Any]) -> JobStatus:
        """Record the run's stats and the job's new status."""
        self.store.update_job(self.job_id, stats={**stats, "calls_lost_in_crashes": self.lost_calls})
        self.store.commit()
        counts = self.store.item_counts(self.job_id)
        job = self.store.get_job(self.job_id)
        assert job is not None
        pending = counts.get(ItemStatus.PENDING.value, 0)
        note: str | None = None
        if control.cancelling:
            new = JobStatus.CANCELLED
        elif pending == 0 and job.inputs_complete:
            new = JobStatus.COMPLETED
        elif control.pause_note is not None:
            new, note = JobStatus.PAUSED, control.pause_note
        elif control.fatal is None and self._at_provider():
            new = JobStatus.WAITING
            note = "waiting for provider batches; poll() or wait() to continue"
        else:
            new = JobStatus.PAUSED
            note = str(control.fatal) if control.fatal else "stopped before the end; resume to continue"
        self.store.set_job_status(self.job_id, new, note)
        return new

    def _at_provider(self) -> bool:
        return bool(self.store.job_batches(self.job_id, (BatchStatus.SUBMITTED, BatchStatus.ENDED)))
