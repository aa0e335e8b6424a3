"""Plain records the store reads and writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from batchain.states import CallStatus, ItemStatus, JobStatus

__all__ = [
    "CallRecord",
    "ItemRecord",
    "JobRecord",
    "PrefixRecord",
    "ProgressSample",
    "RunnerRecord",
    "ScopeClaim",
    "ScopeRow",
    "Usage",
]


@dataclass(slots=True)
class Usage:
    """Token usage of one or more calls. ``input_tokens`` includes cached tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    requests: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.requests + other.requests,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class JobRecord:
    id: str
    status: JobStatus
    mode: str
    created_at: float
    updated_at: float
    chain_ref: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    n_items: int = 0
    inputs_complete: bool = False
    note: str | None = None
    #: counters of the last run: calls sent, retries, 429s, peak concurrency
    stats: dict[str, Any] = field(default_factory=dict)
    #: where the inputs came from (the CLI: a JSON object naming the file, its format and
    #: --limit, its size and modification time), so a resume can reopen them
    input_ref: str | None = None
    #: the process holding the job's lease (``host:pid``) and until when, if one does: the
    #: runner (or worker) running it now
    lease_owner: str | None = None
    lease_until: float | None = None

    def runner(self, now: float) -> str | None:
        """Who runs the job now: its lease holder while the lease lasts."""
        if self.lease_owner and self.lease_until and self.lease_until > now:
            return self.lease_owner
        return None

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        columns = _columns(row)
        return cls(
            id=row["id"],
            status=JobStatus(row["status"]),
            mode=row["mode"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            chain_ref=row["chain_ref"],
            options=json.loads(row["options"] or "{}"),
            n_items=row["n_items"],
            inputs_complete=bool(row["inputs_complete"]),
            note=row["note"],
            stats=json.loads(row["stats"] or "{}"),
            # a store opened read-only is not migrated: an older one lacks the columns
            input_ref=row["input_ref"] if "input_ref" in columns else None,
            lease_owner=row["lease_owner"] if "lease_owner" in columns else None,
            lease_until=row["lease_until"] if "lease_until" in columns else None,
        )


def _columns(row: Any) -> list[str]:
    """A row's column names (``in`` on an ``sqlite3.Row`` looks at its values)."""
    return list(row.keys())


@dataclass(slots=True)
class ItemRecord:
    job_id: str
    idx: int
    status: ItemStatus
    input: str
    output: str | None
    error: str | None
    attempts: int


@dataclass(slots=True)
class CallRecord:
    key: str
    provider: str
    model: str
    status: CallStatus
    attempts: int
    tier: str | None
    job_id: str | None
    response: str | None
    error: str | None
    usage: Usage
    request: str | None = None
    batch_id: str | None = None


# -- reports: what the store's report queries return (see SQLiteStore, "reports") ----------------


@dataclass(frozen=True, slots=True)
class PaidCallGroup:
    """A job's paid, answered calls that price alike, summed.

    Grouped by provider, model, tier, the service tier the response reports, the prompt-size
    bucket and (batch calls) the provider batch that returned them.
    """

    provider: str
    model: str
    tier: str
    #: as the response reports it (OpenAI realtime only), not normalized
    service_tier: str | None
    #: 0 below the first long-context threshold, k above the k-th
    bucket: int
    batch_id: str | None
    usage: Usage
    #: Anthropic 1-hour cache writes (part of ``usage.cache_creation_tokens``)
    cache_write_1h_tokens: int


@dataclass(frozen=True, slots=True)
class ReusedCallGroup:
    """Uses of answered calls a job did not pay for (cache, shared, replay), summed per
    source, provider, model and prompt-size bucket; ``usage.requests`` counts the uses."""

    source: str
    provider: str
    model: str
    bucket: int
    usage: Usage
    cache_write_1h_tokens: int


@dataclass(frozen=True, slots=True)
class ItemCallLink:
    """One use of an answered call by one item of a job, with what prices it."""

    idx: int
    source: str
    provider: str
    model: str
    tier: str
    service_tier: str | None
    bucket: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cache_write_1h_tokens: int


@dataclass(frozen=True, slots=True)
class LeaseClaim:
    """The answer to a lease claim: the new epoch when this owner got the lease, else None
    and the owner that holds it."""

    epoch: int | None
    holder: str | None


@dataclass(frozen=True, slots=True)
class RunnerRecord:
    """A process running a job's items (``job_runners``: see :mod:`batchain.store.claims`):
    ``host:pid#tag``, until when its seat holds unless renewed, and the chunks of items it
    holds now."""

    runner: str
    until: float
    chunks: int

    @property
    def host_pid(self) -> str:
        return self.runner.partition("#")[0]


@dataclass(frozen=True, slots=True)
class PrefixRecord:
    """A prompt prefix a job's batches prime (``prompt_prefixes``; ``status`` is a
    :class:`~batchain.states.PrefixStatus` value): what a later run, maybe in another
    process, needs to send the calls that share it without priming it again."""

    lane: str
    #: the prefix's key (:class:`~batchain.providers.promptcache.CachePrefix`)
    prefix: str
    status: str
    #: the priming batch (its uid) and the call that primes it
    batch_id: str
    primer: str
    #: wall time until which the cache is surely alive (written)
    until: float


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A provider batch of a job, as the store records it (``status`` is a
    :class:`~batchain.states.BatchStatus` value; ``info`` is {} when it is not a readable
    JSON object)."""

    id: str
    job_id: str
    provider: str
    lane: str
    status: str
    provider_batch_id: str | None
    n_calls: int
    created_at: float
    updated_at: float
    info: dict[str, Any]
    #: polls in a row at which the provider said it does not know the batch, and the wall
    #: time of the first of them (None while it knows it)
    missing_polls: int = 0
    missing_since: float | None = None
    #: what the provider last said of it (``None`` until it was polled): its own status
    #: (OpenAI ``in_progress``, Anthropic ``ended``...), its requests done (succeeded or
    #: failed) and in all, and the wall time it said so
    provider_status: str | None = None
    done: int = 0
    total: int = 0
    seen_at: float | None = None


@dataclass(frozen=True, slots=True)
class JobFailures:
    """How many of a job's calls and items failed."""

    calls: int
    items: int


@dataclass(frozen=True, slots=True)
class ProgressSample:
    """A running job's progress at one moment, as the run recorded it (for charts)."""

    #: when (seconds since the epoch)
    t: float
    items_done: int
    items_failed: int
    items_total: int
    #: model calls the job paid for so far (every run)
    calls_paid: int
    #: USD billed so far (every run); None if a price was unknown
    cost: Decimal | None
    #: input and output tokens of the calls paid so far (every run); None if not recorded
    #: (a sample of a build that recorded none)
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Compaction:
    """What compacting a job did: whether it could (only a finished job is compacted; the
    job's ``status`` says why not), and how many rows of running state it dropped."""

    job_id: str
    status: str
    compacted: bool
    #: ``waits`` rows deleted (the call each pending item waited for)
    waits: int = 0
    #: request bodies of answered calls dropped (stores of earlier builds kept them)
    requests: int = 0
    #: ``told`` rows deleted (which paid answers each succeeded item was already told)
    told: int = 0


@dataclass(frozen=True, slots=True)
class ScopeClaim:
    """What a process asks of a rate-limit scope's shared row, in one atomic statement
    (:meth:`~batchain.store.base.Store.rate_scope`). Times are wall-clock seconds.

    ``request_s`` / ``token_s``: seconds of the scope's request / token capacity claimed,
    starting no earlier than ``after`` (0: claim none). ``rpm`` / ``tpm``: limits learned
    (None: unchanged). ``paused_until``: a 429's cooldown, for every process (0: none).
    ``burst_s``: how far ahead of the request clock sends may go, as the scope's first
    answer showed the provider's bucket (None: unchanged)."""

    now: float
    after: float = 0.0
    request_s: float = 0.0
    token_s: float = 0.0
    rpm: float | None = None
    tpm: float | None = None
    paused_until: float = 0.0
    throttled: bool = False
    burst_s: float | None = None


@dataclass(frozen=True, slots=True)
class ScopeRow:
    """A rate-limit scope's shared row after a :class:`ScopeClaim`: the limits known, where
    the claimed request / token capacity starts, the cooldown, and the burst (under ``rpm``)."""

    rpm: float | None
    tpm: float | None
    request_from: float
    token_from: float
    paused_until: float
    throttled: bool
    burst_s: float | None = None
