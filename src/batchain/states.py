"""Lifecycle states of jobs, items, calls and provider batches, and the one table of
allowed transitions between them; and :class:`LinkSource`, how an item got a call's answer.

Every status change in the store goes through :func:`check_transition`, so an illegal
move (say, a succeeded call going back to pending) fails loudly in one place instead of
corrupting a job quietly.
"""

from __future__ import annotations

from enum import StrEnum

from batchain.errors import IllegalTransition

__all__ = [
    "TRANSITIONS",
    "BatchStatus",
    "CallStatus",
    "IllegalTransition",
    "ItemStatus",
    "JobStatus",
    "LinkSource",
    "PrefixStatus",
    "check_transition",
]


class JobStatus(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    #: batch mode: every live item is parked on a provider batch
    WAITING = "waiting"
    #: stopped before the end (Ctrl-C, crash detected on open, budget); resumable
    PAUSED = "paused"
    #: every item has a result (succeeded or failed)
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class ItemStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CallStatus(StrEnum):
    #: recorded, not yet sent (batch mode: waiting for the next flush)
    PENDING = "pending"
    #: realtime request on the wire; if the process dies now the provider may bill it
    SENT = "sent"
    #: inside a provider batch
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BatchStatus(StrEnum):
    #: intent recorded, provider create not yet confirmed
    CREATING = "creating"
    SUBMITTED = "submitted"
    ENDED = "ended"
    #: results downloaded and applied to calls
    COLLECTED = "collected"
    #: create never reached the provider (reconciled as absent)
    ABANDONED = "abandoned"
    #: the provider does not know it (not found for a bounded time), or no model of the job
    #: reaches its endpoint any more: its unanswered calls went back to pending
    LOST = "lost"


class PrefixStatus(StrEnum):
    """A prompt prefix of a job that batch mode primes for the provider's cache
    (:mod:`batchain.engine.promptcache`). A prefix whose priming failed, or whose cache
    may have expired, has no row: it is primed again."""

    #: its primer is in a provider batch; the calls that share it wait for that batch
    PRIMING = "priming"
    #: the primer's answer showed the cache written: its calls go marked, until a time
    WRITTEN = "written"
    #: the primer's answer showed no cache (too short, in fact): its calls go unmarked
    UNCACHED = "uncached"


class LinkSource(StrEnum):
    """How an item got its call's answer (``job_calls.source`` in the store). Not a
    lifecycle: a link is written once and never changes."""

    #: this job sent the call and paid for it (realtime or in a provider batch)
    PAID = "paid"
    #: an identical call of the same job was in flight: its answer was shared
    SHARED = "shared"
    #: this job's own earlier answer, replayed after a restart
    REPLAY = "replay"
    #: an answer stored by an earlier job
    CACHE = "cache"


_J, _I, _C, _B, _P = JobStatus, ItemStatus, CallStatus, BatchStatus, PrefixStatus

TRANSITIONS: dict[type[StrEnum], dict[StrEnum, frozenset[StrEnum]]] = {
    JobStatus: {
        _J.CREATED: frozenset({_J.RUNNING, _J.CANCELLED}),
        _J.RUNNING: frozenset({_J.WAITING, _J.PAUSED, _J.COMPLETED, _J.CANCELLED}),
        _J.WAITING: frozenset({_J.RUNNING, _J.PAUSED, _J.COMPLETED, _J.CANCELLED}),
        _J.PAUSED: frozenset({_J.RUNNING, _J.CANCELLED}),
        # a completed job runs again to retry its failed items
        _J.COMPLETED: frozenset({_J.RUNNING}),
        _J.CANCELLED: frozenset(),
    },
    ItemStatus: {
        _I.PENDING: frozenset({_I.SUCCEEDED, _I.FAILED, _I.CANCELLED}),
        _I.SUCCEEDED: frozenset(),
        _I.FAILED: frozenset({_I.PENDING}),
        _I.CANCELLED: frozenset({_I.PENDING}),
    },
    CallStatus: {
        _C.PENDING: frozenset({_C.SENT, _C.SUBMITTED, _C.FAILED, _C.SUCCEEDED}),
        # SENT -> PENDING: a retryable failure, sent again later
        _C.SENT: frozenset({_C.SUCCEEDED, _C.FAILED, _C.PENDING, _C.SENT}),
        _C.SUBMITTED: frozenset({_C.SUCCEEDED, _C.FAILED, _C.PENDING}),
        _C.SUCCEEDED: frozenset(),
        # a failed call is tried again when its item is retried
        _C.FAILED: frozenset({_C.PENDING, _C.SENT, _C.SUBMITTED}),
    },
    BatchStatus: {
        _B.CREATING: frozenset({_B.SUBMITTED, _B.ABANDONED, _B.LOST}),
        _B.SUBMITTED: frozenset({_B.ENDED, _B.LOST}),
        _B.ENDED: frozenset({_B.COLLECTED, _B.LOST}),
        _B.COLLECTED: frozenset(),
        _B.ABANDONED: frozenset(),
        _B.LOST: frozenset(),
    },
    # WRITTEN -> WRITTEN: a batch that used it ended, renewing its lifetime
    PrefixStatus: {
        _P.PRIMING: frozenset({_P.WRITTEN, _P.UNCACHED}),
        _P.WRITTEN: frozenset(),
        _P.UNCACHED: frozenset(),
    },
}


def check_transition(old: StrEnum, new: StrEnum) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is in the table."""
    if old == new and type(old) is not CallStatus:
        return
    allowed = TRANSITIONS[type(old)][old]
    if new not in allowed:
        raise IllegalTransition(f"{type(old).__name__}: {old.value} -> {new.value} is not allowed")
