"""The store seam: everything the engine, the ``Job`` handle, reports and the CLI ask of
durable storage, as one Protocol. :class:`~batchain.store.sqlite.SQLiteStore` is the
embedded implementation; a second backend implements this and nothing in the engine
changes. All SQL lives behind it, under ``store/``; what crosses it are records
(:mod:`batchain.store.records`) and plain values.

Every write enforces the state transition table of :mod:`batchain.states`.
"""

from __future__ import annotations

import os
import socket
from array import array
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from batchain.errors import LeaseLost, StoreError
from batchain.states import BatchStatus, CallStatus, ItemStatus, JobStatus, LinkSource, PrefixStatus
from batchain.store.records import (
    BatchRecord,
    CallRecord,
    Compaction,
    ItemCallLink,
    ItemRecord,
    JobFailures,
    JobRecord,
    LeaseClaim,
    PaidCallGroup,
    PrefixRecord,
    ProgressSample,
    ReusedCallGroup,
    RunnerRecord,
    ScopeClaim,
    ScopeRow,
    Usage,
)

__all__ = ["LeaseClaim", "Store", "lease_owner"]


def lease_owner() -> str:
    """Who holds a job's lease: ``host:pid``, so a store can tell a dead local holder."""
    return f"{socket.gethostname()}:{os.getpid()}"


@runtime_checkable
class Store(Protocol):
    """Jobs, items, calls and provider batches, durably."""

    #: where the store lives, for messages: a file's path, a database URL without its password
    name: str
    #: where to open it again (a file's path, or its URL, credentials included: never shown)
    location: Path | str
    #: opened for reading only (writes raise StoreError)
    read_only: bool

    def commit(self) -> None: ...

    def commit_soon(self) -> None:
        """Commit at the end of this event-loop iteration (group commit)."""
        ...

    async def durable(self) -> None:
        """Return once every write made so far is committed (by this loop iteration's group
        commit); raise :class:`~batchain.errors.StoreError` if that commit failed instead, or
        if the store has failed, and :class:`~batchain.errors.LeaseLost` if this store's
        writes are refused (its job's lease was taken over)."""
        ...

    def watch(self, job_id: str, on_failure: Callable[[StoreError], None]) -> None:
        """Tell ``on_failure`` when a statement or commit of this store fails (a full disk, say).
        By then the writes since the last commit are undone, as a whole; every later write is
        refused with the same error until no run watches any more (:meth:`unwatch`)."""
        ...

    def unwatch(self, job_id: str) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def create_job(self, job: JobRecord) -> None: ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def list_jobs(self, limit: int | None = 100) -> list[JobRecord]:
        """The newest jobs first (``limit`` None: all of them)."""
        ...

    def job_ids(self, statuses: tuple[JobStatus, ...]) -> list[str]:
        """The ids of the jobs in ``statuses``, oldest first (a worker's look for work)."""
        ...

    def set_job_status(self, job_id: str, new: JobStatus, note: str | None = None) -> None: ...

    def acquire_lease(self, job_id: str, owner: str, ttl: float) -> LeaseClaim:
        """Claim the right to run a job, atomically: the claim, or the owner that holds it."""
        ...

    def renew_lease(self, job_id: str, owner: str, epoch: int, ttl: float) -> bool:
        """Extend a lease this owner still holds at this epoch; False if it was taken over."""
        ...

    def release_lease(self, job_id: str, owner: str, epoch: int) -> None: ...

    def fence(
        self,
        job_id: str,
        owner: str,
        epoch: int,
        on_lost: Callable[[LeaseLost], None],
        runner: str | None = None,
    ) -> None:
        """Make every later commit of this store conditional on ``owner`` still holding the lease of
        ``job_id`` at ``epoch`` (and ``runner`` its seat among the job's runners): otherwise
        the commit is rolled back, ``on_lost`` is told, and :class:`~batchain.errors.LeaseLost`
        raised."""
        ...

    def unfence(self, job_id: str) -> None: ...

    # -- several processes on one job's items (see batchain.store.claims) -----------------

    def fence_runner(self, job_id: str, runner: str, on_lost: Callable[[LeaseLost], None]) -> None:
        """:meth:`fence` for a process helping with a job's items: on its seat, not the lease."""
        ...

    def join_job(self, job_id: str, runner: str, ttl: float) -> None:
        """A seat among the job's runners for ``runner``, for ``ttl`` seconds."""
        ...

    def renew_seat(self, job_id: str, runner: str, ttl: float) -> bool:
        """Extend ``runner``'s seat; False if it lapsed and another process freed it."""
        ...

    def leave_job(self, job_id: str, runner: str) -> None:
        """Free ``runner``'s seat and the chunks of items it holds."""
        ...

    def job_runners(self, job_id: str) -> list[RunnerRecord]:
        """The live processes running the job's items."""
        ...

    def claim_chunk(self, job_id: str, runner: str, size: int) -> int | None:
        """The first free chunk of a running job's items without a result, now ``runner``'s."""
        ...

    def take_chunk(self, job_id: str, chunk: int, runner: str) -> bool:
        """Hold chunk ``chunk`` unless another live runner does."""
        ...

    def release_chunk(self, job_id: str, chunk: int, runner: str) -> None: ...

    def pending_elsewhere(self, job_id: str, runner: str, size: int) -> int:
        """Items without a result in chunks other live runners hold."""
        ...

    def pending_in(self, job_id: str, lo: int, hi: int) -> list[tuple[int, str]]:
        """``(idx, input)`` of the items without a result in ``lo <= idx < hi``."""
        ...

    def update_job(self, job_id: str, **fields: Any) -> None: ...

    def record_job_stats(
        self, job_id: str, stats: Mapping[str, Any] | None = None, runner: str = "", items: int = 0
    ) -> None:
        """Replace the job's stats with ``stats`` (None: keep them), except ``runners`` (items
        run by each process over every run), kept as stored with ``items`` more by
        ``runner``, in one step under the write lock: runs leaving together lose no count."""
        ...

    def add_items(self, job_id: str, rows: list[tuple[int, str]]) -> None:
        """Insert pending items ``(idx, input_json)``; existing ones are left alone."""
        ...

    def iter_items(
        self,
        job_id: str,
        statuses: tuple[ItemStatus, ...] | None = None,
        page: int = 1000,
    ) -> Iterator[ItemRecord]:
        """Items in index order, read page by page so memory stays flat."""
        ...

    def iter_outputs(self, job_id: str, page: int = 5000) -> Iterator[tuple[int, str | None]]:
        """``(idx, output)`` of every item in index order, page by page."""
        ...

    def set_waits(self, job_id: str, rows: list[tuple[int, str]]) -> None:
        """Note the call each item waits for, ``(idx, key)``: a later run finds it there instead of
        building the item's request again."""
        ...

    def iter_pending_waits(
        self, job_id: str, page: int = 2000, *, skip_batches: Collection[str] = ()
    ) -> Iterator[tuple[int, str, str | None, CallRecord | None]]:
        """Pending items in index order: ``(idx, input, key of the call it waits for, that call)``, the
        last two None where none was noted (or the call is gone). Items that
        :meth:`parked_items` gives under a batch of ``skip_batches`` are left out."""
        ...

    def parked_items(self, job_id: str, page: int = 20000) -> dict[str, array[int]]:
        """Pending items whose noted call is in a provider batch and not yet answered
        (pending or submitted), by the batch's uid."""
        ...

    def pending_waits_of(
        self, job_id: str, idxs: list[int]
    ) -> Iterator[tuple[int, str, str | None, CallRecord | None]]:
        """:meth:`iter_pending_waits` of the items ``idxs`` only (those still pending), in
        index order."""
        ...

    def waits_of(self, job_id: str, idxs: list[int]) -> Iterator[tuple[int, str, str]]:
        """``(idx, key of the call it waits for, input)`` of the items ``idxs`` that are
        still pending and have such a call noted: what finishes a bulk row from its call's
        answer (no call record, no response read back)."""
        ...

    def finish_item(
        self,
        job_id: str,
        idx: int,
        status: ItemStatus,
        output: str | None = None,
        error: str | None = None,
    ) -> None: ...

    def finish_items(self, job_id: str, rows: list[tuple[int, ItemStatus, str | None, str | None]]) -> None:
        """:meth:`finish_item` of many items: ``(idx, status, output, error)`` each."""
        ...

    def reset_items(self, job_id: str, from_statuses: tuple[ItemStatus, ...]) -> int:
        """Move failed/cancelled items back to pending (``batchain retry``)."""
        ...

    def cancel_pending_items(self, job_id: str) -> int: ...

    def item_counts(self, job_id: str) -> dict[str, int]: ...

    def missing_items(self, job_id: str, n_items: int) -> list[int]:
        """Indexes below ``n_items`` (the inputs read) that have no stored item: none in a sound
        store."""
        ...

    def get_call(self, key: str) -> CallRecord | None: ...

    def get_calls(self, keys: list[str]) -> dict[str, CallRecord]:
        """The stored calls among ``keys``, by key (one query per 500 keys)."""
        ...

    def begin_call(
        self,
        key: str,
        *,
        provider: str,
        model: str,
        endpoint: str,
        job_id: str,
        status: CallStatus,
        request: str | None = None,
        request_hash: str | None = None,
    ) -> None:
        """Record that a call is about to be sent (``SENT``) or parked (``PENDING``)."""
        ...

    def begin_calls(self, calls: list[tuple[str, str, str, str, str]], job_id: str) -> None:
        """:meth:`begin_call` of many calls parked for a batch: ``(key, provider, model, endpoint,
        request_hash)`` each."""
        ...

    def call_succeeded(
        self, key: str, response: str, usage: Usage, tier: str, cost: Decimal | None = None
    ) -> None:
        """Record an answered call; ``cost`` is its price in USD (None: unknown)."""
        ...

    def calls_succeeded(self, rows: list[tuple[str, str, Usage, str, Decimal | None]]) -> None:
        """:meth:`call_succeeded` of many calls: ``(key, response, usage, tier, cost)`` each."""
        ...

    def call_failed(self, key: str, error: str, *, retryable: bool) -> None: ...

    def link_call(self, job_id: str, key: str, item_idx: int, source: str) -> None:
        """Note that ``item_idx`` of ``job_id`` used call ``key`` (paid, cache or shared)."""
        ...

    def link_calls(self, rows: list[tuple[str, str, int, str]]) -> None:
        """:meth:`link_call` of many: ``(job_id, key, item_idx, source)`` each."""
        ...

    def link_first(self, rows: list[tuple[str, str, int, str]]) -> int:
        """:meth:`link_calls`, each only if its item has no link to that call yet (an item
        fed again keeps the link that says how it first got the call). Returns how many
        were new."""
        ...

    def first_deliveries(self, job_id: str, pairs: list[tuple[int, str]]) -> set[tuple[int, str]]:
        """Of ``(item_idx, key)`` pairs, those whose item paid for the call (a ``paid`` link)
        and was not yet told its answer (:meth:`tell`): an answer is delivered unmarked, as
        paid, once per item and call, in whatever run."""
        ...

    def tell(self, job_id: str, pairs: list[tuple[int, str]]) -> None:
        """Note that each item of ``(item_idx, key)`` pairs was told its paid call's answer."""
        ...

    def job_usage(self, job_id: str, sources: tuple[str, ...] = (LinkSource.PAID,)) -> Usage:
        """Usage of the distinct calls this job used through ``sources``."""
        ...

    def job_spent(self, job_id: str) -> Decimal:
        """What this job's paid calls cost (calls with an unknown price count as zero)."""
        ...

    def item_calls(self, job_id: str) -> dict[int, list[tuple[str, str, Usage]]]:
        """Every answered call each item used (paid, cached or shared alike)."""
        ...

    def item_usage(self, job_id: str) -> dict[int, Usage]: ...

    def job_call_stats(self, job_id: str) -> dict[str, int]: ...

    def calls_in_status(self, status: CallStatus, job_id: str | None = None) -> list[str]:
        # the status is written as a literal (it comes from the enum): SQLite uses a partial
        # index (calls_sent, calls_failed) only for a condition it can see at prepare time
        ...

    def batch_intent(
        self,
        uid: str,
        job_id: str,
        provider: str,
        lane: str,
        keys: list[str],
        info: dict[str, Any],
        begin: Sequence[tuple[str, str, str, str, str]] = (),
    ) -> None:
        """Record a batch before asking the provider to create it (committed at once): its
        calls ``keys`` are in it from now on. ``begin`` are those of its calls that are
        new to the store, or to be started again (:meth:`begin_calls` rows): recorded here,
        in the batch, in the same write."""
        ...

    def batch_submitted(self, uid: str, provider_batch_id: str) -> None:
        """The provider has the batch: remember its id and move its calls to SUBMITTED."""
        ...

    def batch_abandoned(self, uid: str) -> None:
        """The create never reached the provider: its calls wait for the next flush."""
        ...

    def batch_ended(self, uid: str) -> None: ...

    def batch_missing(self, uid: str, polls: int, since: float | None) -> None:
        """How many polls in a row the provider said it does not know the batch, since when
        (0 and None: it knows it again). Kept across runs, so one-poll runs add up."""
        ...

    def batch_seen(self, uid: str, provider_status: str, done: int, total: int) -> None:
        """What the provider last said of the batch: its status and how many of its requests
        are done, of how many (for progress and the expected finish)."""
        ...

    def batch_lost(self, uid: str, reason: str) -> None:
        """The batch is lost (see :attr:`BatchStatus.LOST`): its calls not yet answered go
        back to pending, in no batch, to be sent again."""
        ...

    def batch_collected(self, uid: str) -> None: ...

    def get_batch(self, uid: str) -> BatchRecord | None: ...

    def job_batches(self, job_id: str, statuses: tuple[BatchStatus, ...] | None = None) -> list[BatchRecord]:
        """The job's provider batches (of these statuses), in the order they were created."""
        ...

    def waits_at_provider(self, job_id: str) -> bool:
        """Is the job waiting on a provider batch: one of its own at the provider, or
        another job's that holds calls its items share (an identical job submitted while
        the first's batches are out)?"""
        ...

    def batch_keys(self, uid: str) -> list[str]: ...

    def provider_batch_ids(self, provider: str) -> set[str]:
        """The provider ids of every batch of ``provider`` the store knows, whatever its job:
        each is owned, so none is a batch a lost create answer left unrecorded."""
        ...

    def prompt_prefixes(self, job_id: str) -> list[PrefixRecord]:
        """The prompt prefixes the job's batches prime or primed (:mod:`batchain.engine.promptcache`)."""
        ...

    def prefix_priming(self, job_id: str, lane: str, prefix: str, batch_id: str, primer: str) -> None:
        """Prefix ``prefix`` of ``lane`` is primed by call ``primer`` in batch ``batch_id``
        (replacing any row of it); written in the transaction of that batch's intent."""
        ...

    def prefix_settled(self, job_id: str, lane: str, prefix: str, status: PrefixStatus, until: float) -> None:
        """The primer's answer settled the prefix (written until ``until``, or uncached); a
        written one's ``until`` only grows."""
        ...

    def prefix_dropped(self, job_id: str, lane: str, prefix: str) -> None:
        """Forget the prefix: its priming failed, or its cache may have expired."""
        ...

    def call_requeued(self, key: str, reason: str) -> None:
        """A batched call that did not run (expired, cancelled, 5xx): send it again later."""
        ...

    def job_models(self, job_id: str) -> list[tuple[str, str]]:
        """Distinct ``(provider, model)`` of every call the job used, however it got it."""
        ...

    def paid_call_groups(self, job_id: str, thresholds: tuple[int, ...] = ()) -> list[PaidCallGroup]:
        """The job's paid, answered calls summed per provider, model, tier, service tier, prompt-size
        bucket and provider batch."""
        ...

    def reused_call_groups(
        self, job_id: str, sources: tuple[str, ...], thresholds: tuple[int, ...] = ()
    ) -> list[ReusedCallGroup]:
        """Uses of answered calls the job got through ``sources`` (cache, shared, replay), one per (call,
        item) link, summed per source, provider, model and bucket."""
        ...

    def item_call_links(self, job_id: str, thresholds: tuple[int, ...] = ()) -> list[ItemCallLink]:
        """Every (item, answered call, source) link of the job, unsorted, with its tokens."""
        ...

    def job_link_counts(self, job_id: str) -> dict[str, int]:
        """(call, item) links of the job by source (:meth:`job_call_stats` counts distinct calls)."""
        ...

    def job_failures(self, job_id: str) -> JobFailures:
        """How many of the job's calls and items failed."""
        ...

    def record_progress(self, job_id: str, sample: ProgressSample) -> None:
        """Add a sample of a running job's progress (committed with the run's next commit)."""
        ...

    def progress_history(self, job_id: str, since: float | None = None) -> list[ProgressSample]:
        """The job's progress samples in time order (after ``since``, if given); none for a
        job run by a build that recorded none."""
        ...

    def compact_job(self, job_id: str) -> Compaction:
        """Drop what only a running job reads, for a finished (completed or cancelled) job;
        results, the cost report and the cache are unchanged. Raises KeyError for no such job."""
        ...

    def vacuum(self) -> None:
        """Give the space freed back to the file system (rewrites the store)."""
        ...

    def size(self) -> int:
        """Bytes the store takes on disk."""
        ...

    def rate_scope(self, scope: str, claim: ScopeClaim) -> ScopeRow:
        """Apply ``claim`` to the shared row of rate-limit scope ``scope`` (made if new), in
        one atomic statement, so every process on the store paces the scope as one
        (:mod:`batchain.engine.ratescope`); returns the row as it then is. ``scope`` names
        a provider, destination, key digest and model, never a key."""
        ...
