"""A job's run from its start to its end: the lease that makes one process the job's
runner, the job's status on the way in and out, and the run loop's own state.

The run loop's state is explicit (:class:`RunControl`: a purpose and a phase, and why it
stopped) rather than flags spread over the runner, so every part of the engine asks the
same object whether to go on.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from batchain.errors import JobBusy, LeaseLost, StoreError
from batchain.states import CallStatus, ItemStatus, JobStatus
from batchain.store.base import Store, lease_owner

__all__ = ["JobBusy", "JobLifecycle", "Lease", "Phase", "Purpose", "RunControl", "Seat", "lease_seconds"]

#: a running job's lease: renewed every third of it, taken over when it lapses
LEASE_S = 30.0


def lease_seconds() -> float:
    """The lease length: ``$BATCHAIN_LEASE_S`` (tests shorten it), else 30 s."""
    return float(os.environ.get("BATCHAIN_LEASE_S") or LEASE_S)


class Purpose(Enum):
    """What a run is for."""

    FINISH = "finish"  # run the job to its end (run, resume, wait)
    SUBMIT = "submitted"  # stop once a round is at the provider (submit)
    POLL = "poll"  # advance once without blocking (poll)
    CANCEL = "cancel"  # cancel what is at the provider and mark the rest cancelled
    ASSIST = "assist"  # run items of a job another process runs (see Seat)


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

    def pause_raising(self, exc: BaseException) -> None:
        """Pause the job with ``exc`` as its note (nothing is lost; a resume continues),
        and raise ``exc`` to the caller at the end: a provider host that cannot be reached
        fails no item, but the caller must hear of it."""
        if self.pause_note is None:
            self.pause_note = str(exc)
        self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """Stop, and raise ``exc`` to the caller at the end (the first error wins)."""
        if self.fatal is None:
            self.fatal = exc
        self.stop()


class Lease:
    """The job's lease: one process at a time runs a job, and a process that lost it acts
    no more.

    The lease is claimed atomically and carries an epoch; every commit of the store is
    conditional on it (:meth:`Store.fence`), and :meth:`guard` is awaited before every
    provider request. A runner that stalled past its lease (a suspended laptop, SIGSTOP)
    renews it before sending anything; if another process took the job over meanwhile, it
    stops and says so.
    """

    def __init__(
        self,
        store: Store,
        job_id: str,
        on_lost: Callable[[LeaseLost], None],
        seconds: float | None = None,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.on_lost = on_lost
        self.seconds = seconds if seconds is not None else lease_seconds()
        self.owner = lease_owner()
        self.epoch: int | None = None
        #: this run's seat among the job's runners (``owner#tag``): the chunks of items it
        #: holds are held while it is (see :mod:`batchain.store.claims`)
        self.runner: str | None = None
        self.lost: LeaseLost | None = None
        #: wall-clock time until which the lease is surely ours (wall, not monotonic: a
        #: suspended machine's monotonic clock stops)
        self._valid_until = 0.0

    def claim(self) -> None:
        claim = self.store.acquire_lease(self.job_id, self.owner, self.seconds)
        if claim.epoch is None:
            raise JobBusy(
                f"job {self.job_id} is being run by another process ({claim.holder}); "
                "wait for it or stop it first"
            )
        self.epoch = claim.epoch
        self._valid_until = time.time() + self.seconds
        self.runner = f"{self.owner}#{claim.epoch}"
        self.store.join_job(self.job_id, self.runner, self.seconds)
        self.store.fence(self.job_id, self.owner, claim.epoch, self._lose, self.runner)

    def _lose(self, exc: LeaseLost) -> None:
        if self.lost is None:
            self.lost = exc
            self.on_lost(exc)

    def renew(self) -> bool:
        """Extend the lease now; False (and the run told) if another process has it."""
        if self.lost is not None or self.epoch is None:
            return False
        start = time.time()
        if self._renewed():
            self._valid_until = start + self.seconds
            return True
        self._lose(
            LeaseLost(
                f"job {self.job_id}: {self._what_lapsed}; this one stopped before writing or "
                "sending anything more"
            )
        )
        return False

    _what_lapsed = "another process took over its lease while this one was stalled"

    def _renewed(self) -> bool:
        assert self.epoch is not None and self.runner is not None
        return self.store.renew_lease(self.job_id, self.owner, self.epoch, self.seconds) and (
            self.store.renew_seat(self.job_id, self.runner, self.seconds)
        )

    async def keep(self) -> None:
        """Renew the lease every third of its length, until cancelled or lost."""
        while True:
            await asyncio.sleep(self.seconds / 3)  # the claim itself just set the lease
            try:
                if not self.renew():
                    return
            except StoreError:
                return  # the store told the run, which stops

    async def guard(self) -> None:
        """Before a provider request: the lease must surely be ours, or be renewed now."""
        if self.lost is not None:
            raise self.lost
        if time.time() < self._valid_until - self.seconds / 3:
            return
        if not self.renew():
            assert self.lost is not None
            raise self.lost

    def release(self) -> None:
        if self.epoch is not None and self.lost is None:
            if self.runner is not None:
                self.store.leave_job(self.job_id, self.runner)
            self.store.release_lease(self.job_id, self.owner, self.epoch)


class Seat(Lease):
    """A seat among a job's runners, for a process that helps with the items of a job
    another process runs (:attr:`Purpose.ASSIST`): renewed, guarded and lost like the lease,
    and every write of the store is conditional on it. The chunks of items it holds are
    free again once it lapses (see :mod:`batchain.store.claims`)."""

    _what_lapsed = "its seat among the job's runners lapsed while this process was stalled"

    def claim(self) -> None:
        self.epoch = 0
        self.runner = f"{self.owner}#h{secrets.token_hex(4)}"
        self._valid_until = time.time() + self.seconds
        self.store.join_job(self.job_id, self.runner, self.seconds)
        self.store.fence_runner(self.job_id, self.runner, self._lose)

    def _renewed(self) -> bool:
        assert self.runner is not None
        return self.store.renew_seat(self.job_id, self.runner, self.seconds)

    def release(self) -> None:
        if self.runner is not None and self.lost is None:
            self.store.leave_job(self.job_id, self.runner)
            self.store.unfence(self.job_id)


class JobLifecycle:
    """The job's status as a run enters and leaves it."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        #: calls an earlier process had on the wire when it died (sent again, maybe paid twice)
        self.lost_calls = 0
        #: whether the job was left running by a process that died (None before :meth:`enter`)
        self.interrupted: bool | None = None

    def enter(self, runner: str | None = None) -> None:
        """The run (``runner``: its seat among the job's runners) takes the job."""
        job = self.store.get_job(self.job_id)
        assert job is not None
        self.lost_calls = int(job.stats.get("calls_lost_in_crashes", 0))
        self.interrupted = job.status == JobStatus.RUNNING
        helped = any(r.runner != runner for r in self.store.job_runners(self.job_id))
        if self.interrupted and not helped:
            # left behind by a process that died. Its calls still marked as sent were on
            # the wire: the provider may have answered (and billed) them, but the answer
            # never reached the store, so they will be sent again. They are on no wire now:
            # counted once, they wait to be sent like any other call. (While other
            # processes help with its items, calls marked sent may be on their wires now:
            # those of the dead process are sent again when its items run, uncounted.)
            lost = self.store.calls_in_status(CallStatus.SENT, self.job_id)
            for key in lost:
                self.store.call_requeued(key, "lost in a crash")
            self.lost_calls += len(lost)
            self.store.record_job_stats(self.job_id, {**job.stats, "calls_lost_in_crashes": self.lost_calls})
            self.store.set_job_status(self.job_id, JobStatus.PAUSED, "interrupted")
        self.store.set_job_status(self.job_id, JobStatus.RUNNING)

    def note_items(self, owner: str, items: int) -> None:
        """A helper's count of the items it ran, added to the job's stats."""
        if items:
            self.store.record_job_stats(self.job_id, runner=owner, items=items)
            self.store.commit()

    def leave(self, control: RunControl, stats: dict[str, Any], owner: str, items: int) -> JobStatus:
        """Record the run's stats (with ``items`` more run by ``owner``) and the job's new
        status."""
        stats = {**stats, "calls_lost_in_crashes": self.lost_calls}
        self.store.record_job_stats(self.job_id, stats, runner=owner, items=items)
        self.store.commit()
        counts = self.store.item_counts(self.job_id)
        job = self.store.get_job(self.job_id)
        assert job is not None
        pending = counts.get(ItemStatus.PENDING.value, 0)
        # the one place a job completes: every input read is stored, and each has a result
        missing = job.n_items - sum(counts.values())
        note: str | None = None
        if control.cancelling:
            new = JobStatus.CANCELLED
        elif pending == 0 and job.inputs_complete and missing == 0:
            new = JobStatus.COMPLETED
        elif missing > 0 and pending == 0 and job.inputs_complete and control.fatal is None:
            new = JobStatus.PAUSED
            note = (
                f"{missing} of the {job.n_items} inputs read are not in the store; "
                "resume with the same inputs to read them again"
            )
        elif control.pause_note is not None:
            new, note = JobStatus.PAUSED, control.pause_note
        elif control.fatal is None and self._at_provider():
            new = JobStatus.WAITING
            # said to CLI and Python users alike: `batchain wait JOB`, `job.wait()`
            note = "waiting for provider batches: wait for the job (or poll it) to go on"
        else:
            new = JobStatus.PAUSED
            note = str(control.fatal) if control.fatal else "stopped before the end; resume to continue"
        self.store.set_job_status(self.job_id, new, note)
        return new

    def _at_provider(self) -> bool:
        return self.store.waits_at_provider(self.job_id)
