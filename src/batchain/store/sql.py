"""The store's queries, in SQL that every backend runs: jobs, items, calls and provider
batches, their state transitions and their reports.

:class:`SQLStore` holds everything a store does but connect: the SQLite store
(:mod:`batchain.store.sqlite`) gives it a file, the PostgreSQL store
(:mod:`batchain.store.postgres`) a database, each through a :class:`SharedConnection`.
The SQL is written in SQLite's words; the PostgreSQL connection translates the few that
differ (see :mod:`batchain.store.dialect`).

Writes are grouped: every write method starts (or joins) an open transaction, which
inside an event loop is committed at the end of the loop iteration (group commit), and
outside one by :meth:`SQLStore.commit`. Every store on one database in one process shares
one connection and so one transaction (:mod:`batchain.store.connection`). A write
transaction holds the store's write lock from its first write to its commit (SQLite's
``BEGIN IMMEDIATE``; on PostgreSQL, an advisory lock of the store), so its lease checks
hold until it ends.

Status changes are guarded in SQL (``WHERE status IN (<allowed predecessors>)``) from the
one transition table in :mod:`batchain.states`.

A write cannot half-happen. A statement or commit that fails (a full disk, an I/O error, a
damaged file, a lost server) rolls back everything since the last commit, as a whole,
every job's on the store: an item's input row and the job's "inputs read up to" count are
in one transaction, so an input is either stored or read again on resume. While a run
watches the store (:meth:`SQLStore.watch`) every later write is refused with the same
one-line :class:`StoreError`, so nothing built on the undone writes can be recorded;
every run watching it is told and stops.
"""

from __future__ import annotations

import asyncio
import json
import time
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from decimal import Decimal
from enum import StrEnum
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from batchain.errors import LeaseLost, StoreError
from batchain.states import (
    TRANSITIONS,
    BatchStatus,
    CallStatus,
    IllegalTransition,
    ItemStatus,
    JobStatus,
    LinkSource,
    PrefixStatus,
    check_transition,
)
from batchain.store.claims import ClaimQueries, runner_alive
from batchain.store.connection import Conn, Cursor, SharedConnection, busy_timeout_s, call_in, running_loop
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
    ScopeClaim,
    ScopeRow,
    Usage,
)

__all__ = ["Row", "SQLStore"]


class Row(Protocol):
    """A result row: by position or by column name (:class:`sqlite3.Row` is one)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


#: finished jobs: nothing of them runs or waits at a provider any more (they can be
#: compacted, and their report aggregates kept)
_FINISHED_JOBS = (JobStatus.COMPLETED, JobStatus.CANCELLED)
_FINISHED = tuple(s.value for s in _FINISHED_JOBS)
#: how long a write waits for another process's transaction; a finished job's aggregates
#: are kept only if the store can take them at once
_MEMO_WAIT_MS = 100

# Rows written many at a time go in the order of the table's primary key. Call keys are
# hashes: in the order items come they hit the B-tree at random, and each row then costs a
# page of its own in the write-ahead log (measured at 50,000 calls: a call's insert, batch
# update or answer 4 to 6 times slower than in key order).
_first = itemgetter(0)
#: job_calls' primary key order: job, item, call (items come in order: rows are appended)
_link_order = itemgetter(0, 2, 1)
#: pairs of (item, call) looked up in one query
_PAIRS_PER_QUERY = 400

_USAGE_COLS = "input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, reasoning_tokens"


def _call_record(r: Row) -> CallRecord:
    return CallRecord(
        key=r["key"],
        provider=r["provider"],
        model=r["model"],
        status=CallStatus(r["status"]),
        attempts=r["attempts"],
        tier=r["tier"],
        job_id=r["job_id"],
        response=r["response"],
        error=r["error"],
        usage=Usage(
            r["input_tokens"],
            r["output_tokens"],
            r["cache_read_tokens"],
            r["cache_creation_tokens"],
            r["reasoning_tokens"],
            1,
        ),
        request=r["request"],
        batch_id=r["batch_id"],
    )


def _batch_row(r: Row) -> BatchRecord:
    columns = r.keys()  # a Row's own `in` looks at its values
    try:
        info = json.loads(r["info"] or "{}")
    except ValueError:
        info = {}
    return BatchRecord(
        id=r["id"],
        job_id=r["job_id"],
        provider=r["provider"],
        lane=r["lane"],
        status=r["status"],
        provider_batch_id=r["provider_batch_id"],
        n_calls=r["n_calls"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        info=info if isinstance(info, dict) else {},
        # a store opened read-only is not migrated: an older one lacks these columns
        missing_polls=r["missing_polls"] if "missing_polls" in columns else 0,
        missing_since=r["missing_since"] if "missing_since" in columns else None,
        provider_status=r["provider_status"] if "provider_status" in columns else None,
        done=r["done"] if "done" in columns else 0,
        total=r["total"] if "total" in columns else 0,
        seen_at=r["seen_at"] if "seen_at" in columns else None,
    )


def _held_by_another(holder: str | None, until: float | None, owner: str, now: float | None = None) -> bool:
    """Is a job's lease held, and not lapsed, by a live process other than ``owner``?"""
    if not holder or holder == owner or not until:
        return False
    return until > (time.time() if now is None else now) and runner_alive(holder)


def _predecessors(new: StrEnum) -> tuple[str, ...]:
    table = TRANSITIONS[type(new)]
    return tuple(old.value for old, allowed in table.items() if new in allowed)


#: statuses of a call in a provider batch that has not answered it (yet)
_PARKED_CALL = (CallStatus.PENDING.value, CallStatus.SUBMITTED.value)

#: values bound in one ``IN (...)`` list (SQLite's limit on variables is far above)
_IN_CHUNK = 900


def _in(values: Sequence[object]) -> str:
    return "(" + ",".join("?" * len(values)) + ")"


def _literal(values: Sequence[str]) -> str:
    """``values`` as an SQL list of literals: only for values from this module's enums."""
    return "(" + ",".join(f"'{v}'" for v in values) + ")"


#: a scope's clocks only move forward: a claim starts at the latest of the clock, now, the
#: claimer's own next slot and the cooldown, and moves the clock past what it claims. The
#: burst kept is the largest told under the row's request limit (processes that sent their
#: first requests at once each saw the bucket after the others' took from it)
_RATE_SCOPE_SQL = """
INSERT INTO rate_scopes AS r
    (scope, rpm, tpm, next_request_at, next_token_at, paused_until, throttled, updated_at, burst_s)
VALUES (?1, ?2, ?3, max(?4, ?5, ?8) + ?6, max(?4, ?5, ?8) + ?7, ?8, ?9, ?4, ?10)
ON CONFLICT (scope) DO UPDATE SET
    burst_s = CASE WHEN ?2 IS NOT NULL AND ?2 IS NOT r.rpm THEN ?10
        ELSE max(coalesce(r.burst_s, ?10), coalesce(?10, r.burst_s)) END,
    rpm = coalesce(excluded.rpm, r.rpm),
    tpm = coalesce(excluded.tpm, r.tpm),
    next_request_at = CASE WHEN ?6 > 0
        THEN max(r.next_request_at, ?4, ?5, r.paused_until, ?8) + ?6 ELSE r.next_request_at END,
    next_token_at = CASE WHEN ?7 > 0
        THEN max(r.next_token_at, ?4, ?5, r.paused_until, ?8) + ?7 ELSE r.next_token_at END,
    paused_until = max(r.paused_until, ?8),
    throttled = max(r.throttled, ?9),
    updated_at = ?4
RETURNING rpm, tpm, next_request_at - ?6, next_token_at - ?7, paused_until, throttled, burst_s
"""


@dataclass(frozen=True, slots=True)
class _Fence:
    """A lease every write of a store is conditional on (see :meth:`SQLStore.fence`)."""

    owner: str
    epoch: int
    on_lost: Callable[[LeaseLost], None]
    #: the loop the run holding it runs on, where it is told
    loop: asyncio.AbstractEventLoop | None
    #: a process that helps with the job's items: its seat among the job's runners is the
    #: lease (see :meth:`SQLStore.fence_runner`), not the job's lease
    runner: str | None = None

    def held(self, conn: Conn, job_id: str) -> tuple[bool, str | None]:
        """Is it still held (checked in a write transaction)? If not, who holds the lease
        now (None: the seat lapsed)."""
        if self.epoch:
            row = conn.execute("SELECT lease_owner, lease_epoch FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is not None and (row[0], int(row[1] or 0)) != (self.owner, self.epoch):
                return False, str(row[0] or "none")
        if self.runner is not None:
            row = conn.execute(
                "SELECT 1 FROM job_runners WHERE job_id=? AND runner=?", (job_id, self.runner)
            ).fetchone()
            if row is None:
                return False, None
        return True, None


class SQLStore(ClaimQueries):
    """Jobs, items, calls and provider batches in a SQL database.

    Every store opened on one database in one process shares one connection and its write
    transaction (:mod:`batchain.store.connection`): several jobs of one process run side by
    side on one store, their writes committed together once per loop iteration, and a
    failed statement undoes, and is told to, all of them. A backend opens the connection
    (:meth:`_open`)."""

    #: where the store lives, for messages (a file's path, a URL without its password)
    name: str
    #: where to open it again (a file's path, or its URL, credentials included: never shown)
    location: Path | str
    #: opened for reading only (writes raise StoreError)
    read_only: bool
    #: rows one INSERT of many takes (:meth:`_insert_many`); 1: a statement per row
    rows_per_insert: int = 1
    _db: SharedConnection
    _conn: Conn

    def _open(self, db: SharedConnection, version: int | None) -> None:
        """Use ``db`` (the store's shared connection) whose schema is at ``version``."""
        #: leases every write of this store is conditional on, by job id
        self._fences: dict[str, _Fence] = {}
        #: fenced jobs whose lease another process took over: this store writes nothing more
        self._lost: dict[str, LeaseLost] = {}
        #: written since this store last committed (a lost lease is then raised by commit)
        self._dirty = False
        #: its writes were undone by another store's failure, not yet told (see on_undone)
        self._undone: StoreError | None = None
        #: the jobs whose runs watch the store through this store object (:meth:`watch`)
        self._watching: set[str] = set()
        self._closed = False
        self._db = db
        self._lock = db.lock
        self._conn = db.conn
        #: item counts are kept in ``job_item_counts``, and finished jobs' report aggregates
        #: in ``job_memo`` (False: an older store opened read-only, not migrated)
        self._counted = (version is not None and version >= 2) or not self.read_only
        self._memos = self._counted

    # -- plumbing -------------------------------------------------------------------

    def _begin(self) -> None:
        """Before a write, holding the lock: refuse it if the store cannot take it, else
        join or begin the write transaction."""
        if self.read_only:
            raise StoreError(f"store {self.name} is read-only: it can be read, not changed")
        self._db.begin(self)
        self._dirty = True

    def _write(self, sql: str, params: Iterable[Any] = ()) -> Cursor:
        with self._lock:
            self._begin()
            try:
                if self._lost:
                    return self._discarded(lambda: self._conn.execute(sql, tuple(params)))
                return self._conn.execute(sql, tuple(params))
            except self._db.errors as exc:
                raise self._db.failed(exc, self) from None

    def _write_many(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> int:
        """Run ``sql`` for every row; returns how many rows it changed in all."""
        with self._lock:
            self._begin()
            try:
                if self._lost:
                    return self._discarded(lambda: self._conn.executemany(sql, rows)).rowcount
                return self._conn.executemany(sql, rows).rowcount
            except self._db.errors as exc:
                raise self._db.failed(exc, self) from None

    def _insert_many(self, into: str, values: str, rows: list[tuple[Any, ...]]) -> int:
        """``INSERT {into} VALUES {values}`` for every row (``values``: one row's
        parenthesized placeholders); returns how many rows it inserted in all. Up to
        :attr:`rows_per_insert` rows go in one statement: a row appended to a table in key
        order costs little more than its statement's step, so one step for many rows took
        40% less time (SQLite, 50,000 items' waits and links). The rest go row by row, so a
        call prepares at most two statement texts."""
        per = self.rows_per_insert
        single = f"INSERT {into} VALUES {values}"
        if per <= 1:
            return self._write_many(single, rows)
        full = len(rows) - len(rows) % per
        grouped = [tuple(v for row in rows[i : i + per] for v in row) for i in range(0, full, per)]
        n = self._write_many(f"INSERT {into} VALUES {','.join([values] * per)}", grouped) if grouped else 0
        return n + (self._write_many(single, rows[full:]) if full < len(rows) else 0)

    def _discarded(self, run: Callable[[], Cursor]) -> Cursor:
        """A write of a runner that lost its lease: run (so it answers as it would) and
        undone at once; the other stores' writes in the transaction stay."""
        self._conn.execute("SAVEPOINT lost_lease")
        try:
            return run()
        finally:
            if self._conn.in_transaction:  # else a failure already undid it all
                self._conn.execute("ROLLBACK TO lost_lease")
                self._conn.execute("RELEASE lost_lease")

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except self._db.errors as exc:
                raise self._db.failed(exc, self) from None

    def commit(self) -> None:
        """Commit everything written so far (by every store on this file in this process);
        :class:`StoreError` if that failed (everything since the last commit is undone),
        :class:`~batchain.errors.LeaseLost` if this store wrote for a job it lost."""
        with self._lock:
            self._db.commit(self)
            self._raise_undone()
            dirty, self._dirty = self._dirty, False
            if dirty and self._lost:
                raise next(iter(self._lost.values())).with_traceback(None)

    def on_begin(self, conn: Conn) -> None:
        """A write transaction began, holding the write lock: are this store's leases
        still held? No other process can move one before the transaction ends, so every
        write of this store in it is conditional on them; once one is lost, this store's
        writes are undone as they are made (:meth:`_discarded`), and those of the other
        stores on the file, other jobs', stay."""
        for job_id, fence in list(self._fences.items()):
            if job_id in self._lost:
                continue
            held, by = fence.held(conn, job_id)
            if held:
                continue
            if by is None:
                why = "its seat among the job's runners lapsed while this process was stalled"
            else:
                why = f"another process ({by}) took over its lease while this one was stalled"
            self._lose(job_id, LeaseLost(f"job {job_id}: {why}; this one stopped and wrote nothing more"))
        if not self._lost:
            return
        # one store object serving several running jobs cannot tell their writes apart: the
        # others stop too, having written nothing more (each can be resumed), rather than
        # carry on with their writes silently undone
        lost = next(iter(self._lost))
        for job_id in list(self._fences):
            if job_id not in self._lost:
                self._lose(
                    job_id,
                    LeaseLost(
                        f"job {job_id}: stopped and wrote nothing more, as its store object also ran "
                        f"job {lost}, whose lease another process took over; resume it (give each "
                        "running job a store object of its own to keep them apart)"
                    ),
                )

    def on_undone(self, error: StoreError) -> None:
        """Another store's statement or commit failed and undid this one's writes too (one
        shared transaction). A run watching through this store is told by the connection;
        otherwise this store's next commit raises the error: nothing is lost silently."""
        if not self._watching:
            self._undone = error

    def _raise_undone(self) -> None:
        undone, self._undone = self._undone, None
        if undone is not None:
            raise undone.with_traceback(None)

    def _lose(self, job_id: str, exc: LeaseLost) -> None:
        self._lost[job_id] = exc
        fence = self._fences[job_id]
        call_in(fence.loop, fence.on_lost, exc)

    def commit_soon(self) -> None:
        """Commit at the end of this event-loop iteration (group commit)."""
        self._db.commit_soon()

    async def durable(self) -> None:
        """Return once everything written so far is committed, by the group commit of this
        loop iteration: for a write that must be durable before what follows (a call
        marked as on the wire before its request goes out). Raises :class:`StoreError` if
        that commit failed (or the store failed under a run), and
        :class:`~batchain.errors.LeaseLost` if this store's writes are refused."""
        self._raise_undone()
        if self._lost:
            raise next(iter(self._lost.values())).with_traceback(None)
        try:
            await self._db.durable()
        except StoreError:
            self._undone = None  # told now
            raise
        if self._lost:
            raise next(iter(self._lost.values())).with_traceback(None)

    def watch(self, job_id: str, on_failure: Callable[[StoreError], None]) -> None:
        """Tell ``on_failure`` when a statement or commit on this store's file fails (a full
        disk, say), whichever store object of this process made it. By then the writes since
        the last commit are undone, every job's; every later write is refused with the same
        error until no run watches any more (:meth:`unwatch`)."""
        with self._lock:
            self._watching.add(job_id)
            self._db.watch(job_id, on_failure)

    def unwatch(self, job_id: str) -> None:
        with self._lock:
            self._watching.discard(job_id)
            self._db.unwatch(job_id)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._closed = True
            self._db.release()

    # -- jobs -----------------------------------------------------------------------

    def create_job(self, job: JobRecord) -> None:
        self._write(
            "INSERT INTO jobs (id, status, mode, created_at, updated_at, chain_ref, options,"
            " n_items, inputs_complete, note, input_ref) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                job.id,
                job.status.value,
                job.mode,
                job.created_at,
                job.updated_at,
                job.chain_ref,
                json.dumps(job.options),
                job.n_items,
                int(job.inputs_complete),
                job.note,
                job.input_ref,
            ),
        )
        self.commit()

    def get_job(self, job_id: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE id=?", (job_id,))
        return JobRecord.from_row(rows[0]) if rows else None

    def job_ids(self, statuses: tuple[JobStatus, ...]) -> list[str]:
        values = [s.value for s in statuses]
        where = f"status IN {_in(values)}"
        rows = self._read(f"SELECT id FROM jobs WHERE {where} ORDER BY created_at, id", values)
        return [r[0] for r in rows]

    def list_jobs(self, limit: int | None = 100) -> list[JobRecord]:
        """The newest jobs first (``limit`` None: all of them)."""
        if limit is None:
            rows = self._read("SELECT * FROM jobs ORDER BY created_at DESC")
        else:
            rows = self._read("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [JobRecord.from_row(r) for r in rows]

    def set_job_status(self, job_id: str, new: JobStatus, note: str | None = None) -> None:
        job = self.get_job(job_id)
        if job is None:
            raise KeyError(job_id)
        check_transition(job.status, new)
        self._forget(job_id)
        self._write(
            "UPDATE jobs SET status=?, updated_at=?, note=? WHERE id=?",
            (new.value, time.time(), note, job_id),
        )
        self.commit()

    def acquire_lease(self, job_id: str, owner: str, ttl: float) -> LeaseClaim:
        """Claim the right to run a job, atomically: the claim, or the owner that holds it.

        A lease held by a process that is gone on this host is taken over at once; one held
        elsewhere expires ``ttl`` seconds after its last renewal. Every claim gets a new
        epoch, so the holder before it can tell (see :meth:`fence`). A lease surely held
        is found by a read, without the store's write lock: workers that look at a running
        job again and again do not hold up the process that runs it.
        """
        peek = self._read("SELECT lease_owner, lease_until FROM jobs WHERE id=?", (job_id,))
        if peek and _held_by_another(peek[0][0], peek[0][1], owner):
            return LeaseClaim(None, str(peek[0][0]))
        with self._lock:
            self._db.commit(self)
            self._raise_undone()
            if self._db.failure is not None:
                raise self._db.failure.with_traceback(None)
            if self.read_only:
                raise StoreError(f"store {self.name} is read-only: it can be read, not changed")
            try:
                # IMMEDIATE: the read and the write below are one step for every process
                self._conn.execute("BEGIN IMMEDIATE")
                row = self._conn.execute(
                    "SELECT lease_owner, lease_until, lease_epoch FROM jobs WHERE id=?", (job_id,)
                ).fetchone()
                if row is None:
                    raise KeyError(job_id)
                holder, until, epoch = row[0], row[1], int(row[2] or 0)
                now = time.time()
                if _held_by_another(holder, until, owner, now):
                    self._conn.execute("ROLLBACK")
                    return LeaseClaim(None, str(holder))
                self._conn.execute(
                    "UPDATE jobs SET lease_owner=?, lease_until=?, lease_epoch=? WHERE id=?",
                    (owner, now + ttl, epoch + 1, job_id),
                )
                self._conn.execute("COMMIT")
            except self._db.errors as exc:
                raise self._db.failed(exc, self) from None
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        return LeaseClaim(epoch + 1, owner)

    def renew_lease(self, job_id: str, owner: str, epoch: int, ttl: float) -> bool:
        """Extend a lease this owner still holds at this epoch; False if it was taken over."""
        with self._lock:
            changed = self._write(
                "UPDATE jobs SET lease_until=? WHERE id=? AND lease_owner=? AND lease_epoch=?",
                (time.time() + ttl, job_id, owner, epoch),
            ).rowcount
            self.commit()
        return changed == 1

    def release_lease(self, job_id: str, owner: str, epoch: int) -> None:
        self.unfence(job_id)
        self._write(
            "UPDATE jobs SET lease_owner=NULL, lease_until=NULL"
            " WHERE id=? AND lease_owner=? AND lease_epoch=?",
            (job_id, owner, epoch),
        )
        self.commit()

    def fence(
        self,
        job_id: str,
        owner: str,
        epoch: int,
        on_lost: Callable[[LeaseLost], None],
        runner: str | None = None,
    ) -> None:
        """Make every later write of this store conditional on ``owner`` still holding the
        lease of ``job_id`` at ``epoch`` (and, with ``runner``, its seat among the job's
        runners): checked as each write transaction begins (see :meth:`on_begin`); once
        lost, ``on_lost`` is told, the store's writes are undone and its commits raise
        :class:`~batchain.errors.LeaseLost`."""
        with self._lock:
            # a transaction open now began after the claim (which committed what was open
            # before it), so the lease was ours when it began
            self._fences[job_id] = _Fence(owner, epoch, on_lost, running_loop(), runner)
            self._lost.pop(job_id, None)
            self._db.fenced(self)

    def fence_runner(self, job_id: str, runner: str, on_lost: Callable[[LeaseLost], None]) -> None:
        """:meth:`fence` for a process that helps with a job's items: every later write is
        conditional on ``runner`` keeping its seat among the job's runners (see
        :meth:`batchain.store.claims.ClaimQueries.join_job`)."""
        with self._lock:
            self._fences[job_id] = _Fence(runner, 0, on_lost, running_loop(), runner)
            self._lost.pop(job_id, None)
            self._db.fenced(self)

    def unfence(self, job_id: str) -> None:
        with self._lock:
            self._fences.pop(job_id, None)
            self._lost.pop(job_id, None)

    def update_job(self, job_id: str, **fields: Any) -> None:
        allowed = {"chain_ref", "options", "n_items", "inputs_complete", "mode"}  # stats: record_job_stats
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update job fields {sorted(bad)}")
        sets = ", ".join(f"{k}=?" for k in fields)
        values = [
            json.dumps(v) if k == "options" else int(v) if isinstance(v, bool) else v
            for k, v in fields.items()
        ]
        self._write(f"UPDATE jobs SET {sets}, updated_at=? WHERE id=?", [*values, time.time(), job_id])

    def record_job_stats(
        self, job_id: str, stats: Mapping[str, Any] | None = None, runner: str = "", items: int = 0
    ) -> None:
        """The job's stats become ``stats`` (None: they stay), but for ``runners``, the items
        each process ran over every run: that stays as stored, with ``items`` more by
        ``runner``. The read and the write are one step under the store's write lock, so
        runs leaving one job together each add their count; none overwrites another's."""
        with self._lock:
            self._begin()  # the write lock, held to the commit: the row cannot change under us
            rows = self._read("SELECT stats FROM jobs WHERE id=?", (job_id,))
            if not rows:
                return
            stored: dict[str, Any] = json.loads(rows[0][0] or "{}")
            runners = {str(k): int(v) for k, v in dict(stored.get("runners", {})).items()}
            if items:
                runners[runner] = runners.get(runner, 0) + items
            new = {**(stored if stats is None else stats), "runners": runners}
            self._write(
                "UPDATE jobs SET stats=?, updated_at=? WHERE id=?", (json.dumps(new), time.time(), job_id)
            )

    # -- items ----------------------------------------------------------------------

    def add_items(self, job_id: str, rows: list[tuple[int, str]]) -> None:
        """Insert pending items ``(idx, input_json)``; existing ones are left alone."""
        added = self._insert_many(
            "OR IGNORE INTO items (job_id, idx, status, input)",
            "(?,?,'pending',?)",
            [(job_id, idx, text) for idx, text in rows],
        )
        self._count(job_id, {ItemStatus.PENDING: added})

    def _recount(self, job_id: str) -> None:
        """Set the job's item counters from its items (a walk over them)."""
        self._write("DELETE FROM job_item_counts WHERE job_id=?", (job_id,))
        self._write(
            "INSERT INTO job_item_counts (job_id, status, n)"
            " SELECT job_id, status, COUNT(*) FROM items WHERE job_id=? GROUP BY status",
            (job_id,),
        )

    def _count(self, job_id: str, deltas: dict[ItemStatus, int]) -> None:
        """Move the job's item counters by ``deltas``, in the transaction that moved the items."""
        rows = [(job_id, status.value, n) for status, n in deltas.items() if n]
        if rows:
            self._write_many(
                "INSERT INTO job_item_counts (job_id, status, n) VALUES (?,?,?)"
                " ON CONFLICT(job_id, status) DO UPDATE SET n = job_item_counts.n + excluded.n",
                rows,
            )

    def iter_items(
        self,
        job_id: str,
        statuses: tuple[ItemStatus, ...] | None = None,
        page: int = 1000,
    ) -> Iterator[ItemRecord]:
        """Items in index order, read page by page so memory stays flat."""
        last = -1
        where, source = "", "items"
        params: list[Any] = []
        if statuses:
            where = f" AND status IN {_in(tuple(s.value for s in statuses))}"
            params = [s.value for s in statuses]
            if len(statuses) == 1:
                # the few pending (or failed) items of a large job, without walking the rest
                source = "items INDEXED BY items_by_status"
        while True:
            rows = self._read(
                f"SELECT * FROM {source} WHERE job_id=? AND idx>?" + where + " ORDER BY idx LIMIT ?",
                [job_id, last, *params, page],
            )
            if not rows:
                return
            for r in rows:
                yield ItemRecord(
                    job_id=r["job_id"],
                    idx=r["idx"],
                    status=ItemStatus(r["status"]),
                    input=r["input"],
                    output=r["output"],
                    error=r["error"],
                    attempts=r["attempts"],
                )
            last = rows[-1]["idx"]

    def iter_outputs(self, job_id: str, page: int = 5000) -> Iterator[tuple[int, str | None]]:
        """``(idx, output)`` of every item in index order, page by page."""
        last = -1
        while True:
            rows = self._read(
                "SELECT idx, output FROM items WHERE job_id=? AND idx>? ORDER BY idx LIMIT ?",
                (job_id, last, page),
            )
            if not rows:
                return
            for r in rows:
                yield r[0], r[1]
            last = rows[-1][0]

    def set_waits(self, job_id: str, rows: list[tuple[int, str]]) -> None:
        """Note the call each item waits for, ``(idx, key)``: a later run finds it there
        instead of building the item's request again."""
        self._insert_many(
            "OR REPLACE INTO waits (job_id, idx, key)", "(?,?,?)", [(job_id, idx, key) for idx, key in rows]
        )

    def iter_pending_waits(
        self, job_id: str, page: int = 2000, *, skip_batches: Collection[str] = ()
    ) -> Iterator[tuple[int, str, str | None, CallRecord | None]]:
        """Pending items in index order: ``(idx, input, key of the call it waits for,
        that call)``, the last two None where none was noted (or the call is gone)."""
        skip = sorted(skip_batches)
        # the items parked_items gave, whose batches the caller took: not read again
        parked = (
            f" AND NOT (c.batch_id IS NOT NULL AND c.batch_id IN {_in(skip)}"
            f" AND c.status IN {_literal(_PARKED_CALL)})"
            if skip
            else ""
        )
        last = -1
        while True:
            rows = self._read(
                "SELECT i.idx AS idx, i.input AS input, w.key AS wait, c.* FROM items i"
                " INDEXED BY items_by_status LEFT JOIN waits w ON w.job_id = i.job_id AND w.idx = i.idx"
                " LEFT JOIN calls c ON c.key = w.key"
                f" WHERE i.job_id=? AND i.status='pending' AND i.idx>?{parked} ORDER BY i.idx LIMIT ?",
                (job_id, last, *skip, page),
            )
            if not rows:
                return
            for r in rows:
                record = _call_record(r) if r["key"] is not None else None
                yield r["idx"], r["input"], r["wait"], record
            last = rows[-1]["idx"]

    def parked_items(self, job_id: str, page: int = 20000) -> dict[str, array[int]]:
        """Pending items whose noted call is in a provider batch and not answered, by the
        batch's uid: what a resumed run leaves waiting on those batches without reading the
        items (:meth:`iter_pending_waits` with ``skip_batches`` then passes them over)."""
        out: dict[str, array[int]] = {}
        last = -1
        while True:
            rows = self._read(
                "SELECT i.idx, c.batch_id FROM items i INDEXED BY items_by_status"
                " JOIN waits w ON w.job_id = i.job_id AND w.idx = i.idx JOIN calls c ON c.key = w.key"
                f" WHERE i.job_id=? AND i.status='pending' AND i.idx>? AND c.batch_id IS NOT NULL"
                f" AND c.status IN {_literal(_PARKED_CALL)} ORDER BY i.idx LIMIT ?",
                (job_id, last, page),
            )
            if not rows:
                return out
            for idx, batch in rows:
                idxs = out.get(batch)
                if idxs is None:
                    idxs = out[batch] = array("q")
                idxs.append(idx)
            last = rows[-1][0]

    def pending_waits_of(
        self, job_id: str, idxs: list[int]
    ) -> Iterator[tuple[int, str, str | None, CallRecord | None]]:
        for start in range(0, len(idxs), _IN_CHUNK):
            part = sorted(idxs[start : start + _IN_CHUNK])
            rows = self._read(
                "SELECT i.idx AS idx, i.input AS input, w.key AS wait, c.* FROM items i"
                " LEFT JOIN waits w ON w.job_id = i.job_id AND w.idx = i.idx"
                " LEFT JOIN calls c ON c.key = w.key"
                f" WHERE i.job_id=? AND i.idx IN {_in(part)} AND i.status='pending' ORDER BY i.idx",
                (job_id, *part),
            )
            for r in rows:
                record = _call_record(r) if r["key"] is not None else None
                yield r["idx"], r["input"], r["wait"], record

    def waits_of(self, job_id: str, idxs: list[int]) -> Iterator[tuple[int, str, str]]:
        for start in range(0, len(idxs), _IN_CHUNK):
            part = sorted(idxs[start : start + _IN_CHUNK])
            rows = self._read(
                "SELECT w.idx AS idx, w.key AS key, i.input AS input FROM waits w"
                " JOIN items i ON i.job_id = w.job_id AND i.idx = w.idx"
                f" WHERE w.job_id=? AND w.idx IN {_in(part)} AND i.status='pending'",
                (job_id, *part),
            )
            for r in rows:
                yield r["idx"], r["key"], r["input"]

    def finish_item(
        self,
        job_id: str,
        idx: int,
        status: ItemStatus,
        output: str | None = None,
        error: str | None = None,
    ) -> None:
        self.finish_items(job_id, [(idx, status, output, error)])

    def finish_items(self, job_id: str, rows: list[tuple[int, ItemStatus, str | None, str | None]]) -> None:
        """:meth:`finish_item` of many items: ``(idx, status, output, error)`` each."""
        by_status: dict[ItemStatus, list[tuple[Any, ...]]] = {}
        for idx, status, output, error in rows:
            by_status.setdefault(status, []).append((output, error, job_id, idx))
        for status, params in by_status.items():
            olds = _predecessors(status)
            # the statuses as literals: bound, they were a third of the values bound per item
            changed = self._write_many(
                f"UPDATE items SET status='{status.value}', output=?, error=?, attempts=attempts+1"
                f" WHERE job_id=? AND idx=? AND status IN {_literal(olds)}",
                params,
            )
            if len(olds) == 1:  # an item finishes only from pending
                self._count(job_id, {ItemStatus(olds[0]): -changed, status: changed})
            else:
                self._recount(job_id)
            if changed != len(params):
                where = ", ".join(f"#{p[3]}" for p in params[:5]) + (" ..." if len(params) > 5 else "")
                raise IllegalTransition(
                    f"job {job_id}: {len(params) - changed} of items {where} cannot become {status.value}"
                )

    def reset_items(self, job_id: str, from_statuses: tuple[ItemStatus, ...]) -> int:
        """Move failed/cancelled items back to pending (``batchain retry``)."""
        for old in from_statuses:
            check_transition(old, ItemStatus.PENDING)
        moved = 0
        self._forget(job_id)
        for old in from_statuses:
            n = self._write(
                "UPDATE items SET status='pending', output=NULL, error=NULL WHERE job_id=? AND status=?",
                (job_id, old.value),
            ).rowcount
            self._count(job_id, {old: -n, ItemStatus.PENDING: n})
            moved += n
        self.commit()
        return moved

    def cancel_pending_items(self, job_id: str) -> int:
        self._forget(job_id)
        cur = self._write(
            "UPDATE items SET status='cancelled', error=? WHERE job_id=? AND status='pending'",
            (json.dumps({"type": "Cancelled", "message": "job cancelled", "where": "cancel"}), job_id),
        )
        self._count(job_id, {ItemStatus.PENDING: -cur.rowcount, ItemStatus.CANCELLED: cur.rowcount})
        self.commit()
        return cur.rowcount

    def item_counts(self, job_id: str) -> dict[str, int]:
        """The job's items by status (statuses with none left out): one lookup of its
        counters, whatever the job's size."""
        if not self._counted:  # an older store opened read-only: count the items
            rows = self._read(
                "SELECT status, COUNT(*) AS n FROM items WHERE job_id=? GROUP BY status", (job_id,)
            )
        else:
            rows = self._read("SELECT status, n FROM job_item_counts WHERE job_id=? AND n > 0", (job_id,))
        return {r["status"]: r["n"] for r in rows}

    def missing_items(self, job_id: str, n_items: int) -> list[int]:
        """Indexes below ``n_items`` (the inputs read) that have no stored item: none in a
        sound store. Stored ones are walked page by page, so memory stays flat."""
        missing: list[int] = []
        expected = 0
        while True:
            rows = self._read(
                "SELECT idx FROM items WHERE job_id=? AND idx>=? AND idx<? ORDER BY idx LIMIT 5000",
                (job_id, expected, n_items),
            )
            for (idx,) in rows:
                missing.extend(range(expected, idx))
                expected = idx + 1
            if len(rows) < 5000:
                break
        missing.extend(range(expected, n_items))
        return missing

    # -- calls ----------------------------------------------------------------------

    def get_call(self, key: str) -> CallRecord | None:
        rows = self._read("SELECT * FROM calls WHERE key=?", (key,))
        return _call_record(rows[0]) if rows else None

    def get_calls(self, keys: list[str]) -> dict[str, CallRecord]:
        """The stored calls among ``keys``, by key (one query per 500 keys)."""
        found: dict[str, CallRecord] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            for r in self._read(f"SELECT * FROM calls WHERE key IN {_in(tuple(part))}", part):
                found[r["key"]] = _call_record(r)
        return found

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
        olds = _predecessors(status)
        self._write(
            "INSERT INTO calls (key, provider, model, endpoint, status, attempts, job_id,"
            " request, updated_at, request_hash) VALUES (?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET status=excluded.status, attempts=calls.attempts+?,"
            " job_id=excluded.job_id, request=COALESCE(excluded.request, calls.request),"
            " updated_at=excluded.updated_at"
            f" WHERE calls.status IN {_in(olds)}",
            (
                key,
                provider,
                model,
                endpoint,
                status.value,
                int(status == CallStatus.SENT),
                job_id,
                request,
                time.time(),
                request_hash,
                int(status == CallStatus.SENT),
                *olds,
            ),
        )

    def begin_calls(self, calls: list[tuple[str, str, str, str, str]], job_id: str) -> None:
        """:meth:`begin_call` of many calls parked for a batch: ``(key, provider, model,
        endpoint, request_hash)`` each."""
        olds = _predecessors(CallStatus.PENDING)
        now = time.time()
        self._write_many(
            "INSERT INTO calls (key, provider, model, endpoint, status, job_id, updated_at,"
            " request_hash) VALUES (?,?,?,?,'pending',?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET status=excluded.status, job_id=excluded.job_id,"
            f" updated_at=excluded.updated_at WHERE calls.status IN {_literal(olds)}",
            (
                (key, provider, model, endpoint, job_id, now, h or None)
                for key, provider, model, endpoint, h in sorted(calls, key=_first)
            ),
        )

    def call_succeeded(
        self, key: str, response: str, usage: Usage, tier: str, cost: Decimal | None = None
    ) -> None:
        """Record an answered call; ``cost`` is its price in USD (None: unknown)."""
        self.calls_succeeded([(key, response, usage, tier, cost)])

    def calls_succeeded(self, rows: list[tuple[str, str, Usage, str, Decimal | None]]) -> None:
        """:meth:`call_succeeded` of many calls: ``(key, response, usage, tier, cost)`` each."""
        olds = _predecessors(CallStatus.SUCCEEDED)
        now = time.time()
        self._write_many(
            f"UPDATE calls SET status='succeeded', response=?, error=NULL, tier=?, cost=?,"
            f" input_tokens=?, output_tokens=?, cache_read_tokens=?, cache_creation_tokens=?,"
            f" reasoning_tokens=?, updated_at=? WHERE key=? AND status IN {_literal(olds)}",
            (
                (
                    response,
                    tier,
                    None if cost is None else str(cost),
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cache_read_tokens,
                    usage.cache_creation_tokens,
                    usage.reasoning_tokens,
                    now,
                    key,
                )
                for key, response, usage, tier, cost in sorted(rows, key=_first)
            ),
        )
        self.commit_soon()

    def call_failed(self, key: str, error: str, *, retryable: bool) -> None:
        new = CallStatus.PENDING if retryable else CallStatus.FAILED
        olds = _predecessors(new)
        self._write(
            f"UPDATE calls SET status=?, error=?, updated_at=? WHERE key=? AND status IN {_in(olds)}",
            (new.value, error, time.time(), key, *olds),
        )
        self.commit_soon()

    def link_call(self, job_id: str, key: str, item_idx: int, source: str) -> None:
        """Note that ``item_idx`` of ``job_id`` used call ``key`` (paid, cache or shared)."""
        self._write(
            "INSERT OR IGNORE INTO job_calls (job_id, key, item_idx, source) VALUES (?,?,?,?)",
            (job_id, key, item_idx, source),
        )

    def link_calls(self, rows: list[tuple[str, str, int, str]]) -> None:
        """:meth:`link_call` of many: ``(job_id, key, item_idx, source)`` each."""
        self._insert_many(
            "OR IGNORE INTO job_calls (job_id, key, item_idx, source)",
            "(?,?,?,?)",
            sorted(rows, key=_link_order),
        )

    def link_first(self, rows: list[tuple[str, str, int, str]]) -> int:
        """:meth:`link_calls`, each only if its item has no link to that call yet (an item
        fed again, in batch mode or after a restart, keeps the link that says how it first
        got the call). Returns how many were new."""
        return max(
            0,
            self._write_many(
                "INSERT OR IGNORE INTO job_calls (job_id, key, item_idx, source) SELECT ?1, ?2, ?3, ?4"
                " WHERE NOT EXISTS (SELECT 1 FROM job_calls WHERE job_id=?1 AND key=?2 AND item_idx=?3)",
                sorted(rows, key=_link_order),
            ),
        )

    def first_deliveries(self, job_id: str, pairs: list[tuple[int, str]]) -> set[tuple[int, str]]:
        """Of ``(item_idx, key)`` pairs, those whose item paid for the call (a ``paid``
        link) and was not yet told its answer (no :meth:`tell` row): by primary keys, one
        query per few hundred pairs."""
        found: set[tuple[int, str]] = set()
        paid = LinkSource.PAID.value
        for start in range(0, len(pairs), _PAIRS_PER_QUERY):
            part = pairs[start : start + _PAIRS_PER_QUERY]
            # ?1 the job, ?2 the link source, then each pair's item and key
            values = ",".join(f"(?{3 + 2 * n},?{4 + 2 * n})" for n in range(len(part)))
            rows = self._read(
                f"WITH p(idx, key) AS (VALUES {values}) SELECT idx, key FROM p"
                " WHERE EXISTS (SELECT 1 FROM job_calls j"
                " WHERE j.job_id=?1 AND j.key=p.key AND j.item_idx=p.idx AND j.source=?2)"
                " AND NOT EXISTS (SELECT 1 FROM told t"
                " WHERE t.job_id=?1 AND t.item_idx=p.idx AND t.key=p.key)",
                [job_id, paid, *(v for pair in part for v in pair)],
            )
            found.update((int(r[0]), str(r[1])) for r in rows)
        return found

    def tell(self, job_id: str, pairs: list[tuple[int, str]]) -> None:
        """Note that each item of ``(item_idx, key)`` pairs was told its call's answer
        unmarked, as paid for (see :meth:`first_deliveries`)."""
        self._write_many(
            "INSERT OR IGNORE INTO told (job_id, item_idx, key) VALUES (?,?,?)",
            sorted((job_id, idx, key) for idx, key in pairs),
        )

    def job_usage(self, job_id: str, sources: tuple[str, ...] = (LinkSource.PAID,)) -> Usage:
        """Usage of the distinct calls this job used through ``sources``."""
        return self._memo(job_id, "job_usage", [*sources], lambda: self._job_usage(job_id, sources), _usage)

    def _job_usage(self, job_id: str, sources: tuple[str, ...]) -> Usage:
        rows = self._read(
            f"SELECT COUNT(*) AS n, {', '.join(f'SUM({c}) AS {c}' for c in _USAGE_COLS.split(', '))}"
            f" FROM calls WHERE status='succeeded' AND key IN (SELECT DISTINCT key FROM job_calls"
            f" WHERE job_id=? AND source IN {_in(sources)})",
            (job_id, *sources),
        )
        r = rows[0]
        return Usage(
            r["input_tokens"] or 0,
            r["output_tokens"] or 0,
            r["cache_read_tokens"] or 0,
            r["cache_creation_tokens"] or 0,
            r["reasoning_tokens"] or 0,
            r["n"] or 0,
        )

    def job_spent(self, job_id: str) -> Decimal:
        """What this job's paid calls cost (calls with an unknown price count as zero)."""
        rows = self._read(
            "SELECT cost FROM calls WHERE cost IS NOT NULL AND key IN (SELECT DISTINCT key FROM"
            " job_calls WHERE job_id=? AND source='paid')",
            (job_id,),
        )
        return sum((Decimal(r["cost"]) for r in rows), Decimal(0))

    def item_calls(self, job_id: str) -> dict[int, list[tuple[str, str, Usage]]]:
        """Every answered call each item used (paid, cached or shared alike)."""
        rows = self._read(
            f"SELECT jc.item_idx AS idx, c.provider, c.model, {_USAGE_COLS} FROM"
            " (SELECT DISTINCT item_idx, key FROM job_calls WHERE job_id=?) jc"
            " JOIN calls c ON c.key = jc.key WHERE c.status='succeeded' ORDER BY jc.item_idx",
            (job_id,),
        )
        out: dict[int, list[tuple[str, str, Usage]]] = {}
        for r in rows:
            usage = Usage(
                r["input_tokens"],
                r["output_tokens"],
                r["cache_read_tokens"],
                r["cache_creation_tokens"],
                r["reasoning_tokens"],
                1,
            )
            out.setdefault(r["idx"], []).append((r["provider"], r["model"], usage))
        return out

    def item_usage(self, job_id: str) -> dict[int, Usage]:
        return {idx: sum((u for _, _, u in calls), Usage()) for idx, calls in self.item_calls(job_id).items()}

    def job_call_stats(self, job_id: str) -> dict[str, int]:
        return self._memo(job_id, "job_call_stats", [], lambda: self._job_call_stats(job_id), _counts)

    def _job_call_stats(self, job_id: str) -> dict[str, int]:
        rows = self._read(
            # a batch call is linked to its item when parked: paid once it succeeded
            "SELECT j.source AS source, COUNT(DISTINCT j.key) AS n FROM job_calls j"
            f" JOIN calls c ON c.key = j.key WHERE j.job_id=? AND {_LINK_COUNTS} GROUP BY j.source",
            (job_id,),
        )
        return {r["source"]: r["n"] for r in rows}

    def calls_in_status(self, status: CallStatus, job_id: str | None = None) -> list[str]:
        # the status is written as a literal (it comes from the enum): SQLite uses a partial
        # index (calls_sent, calls_failed) only for a condition it can see at prepare time
        where = f"status='{CallStatus(status).value}'"
        if job_id is None:
            rows = self._read(f"SELECT key FROM calls WHERE {where}")
        else:
            rows = self._read(f"SELECT key FROM calls WHERE {where} AND job_id=?", (job_id,))
        return [r["key"] for r in rows]

    # -- provider batches -----------------------------------------------------------------

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
        """Record a batch before asking the provider to create it (committed at once)."""
        now = time.time()
        self._write(
            "INSERT INTO provider_batches (id, job_id, provider, lane, status, n_calls, created_at,"
            " updated_at, info) VALUES (?,?,?,?,?,?,?,?,?)",
            (uid, job_id, provider, lane, BatchStatus.CREATING.value, len(keys), now, now, json.dumps(info)),
        )
        if begin:
            # begin_calls' upsert, with the batch: a call takes the batch whatever its status
            # (as the update below), and is (re)started only from a status that allows it
            restart = f"calls.status IN {_literal(_predecessors(CallStatus.PENDING))}"
            self._write_many(
                "INSERT INTO calls (key, provider, model, endpoint, status, job_id, updated_at,"
                " request_hash, batch_id) VALUES (?,?,?,?,'pending',?,?,?,?)"
                " ON CONFLICT(key) DO UPDATE SET batch_id=excluded.batch_id,"
                f" job_id=CASE WHEN {restart} THEN excluded.job_id ELSE calls.job_id END,"
                f" updated_at=CASE WHEN {restart} THEN excluded.updated_at ELSE calls.updated_at END,"
                f" status=CASE WHEN {restart} THEN 'pending' ELSE calls.status END",
                (
                    (key, provider_, model, endpoint, job_id, now, h or None, uid)
                    for key, provider_, model, endpoint, h in sorted(begin, key=_first)
                ),
            )
        if len(begin) < len(keys):  # else every call was just written with the batch
            begun = {row[0] for row in begin}
            self._write_many(
                "UPDATE calls SET batch_id=? WHERE key=?", [(uid, k) for k in sorted(keys) if k not in begun]
            )
        self.commit()

    def batch_submitted(self, uid: str, provider_batch_id: str) -> None:
        """The provider has the batch: remember its id and move its calls to SUBMITTED."""
        self._set_batch(uid, BatchStatus.SUBMITTED, provider_batch_id=provider_batch_id)
        olds = _predecessors(CallStatus.SUBMITTED)
        self._write(
            f"UPDATE calls SET status='submitted', attempts=attempts+1, updated_at=?"
            f" WHERE batch_id=? AND status IN {_in(olds)}",
            (time.time(), uid, *olds),
        )
        self.commit()

    def batch_abandoned(self, uid: str) -> None:
        """The create never reached the provider: its calls wait for the next flush."""
        self._set_batch(uid, BatchStatus.ABANDONED)
        self._write("UPDATE calls SET batch_id=NULL WHERE batch_id=? AND status='pending'", (uid,))
        self.commit()

    def batch_ended(self, uid: str) -> None:
        self._set_batch(uid, BatchStatus.ENDED)
        self.commit()

    def batch_missing(self, uid: str, polls: int, since: float | None) -> None:
        """How many polls in a row the provider said it does not know the batch, since when
        (0 and None: it knows it again). Kept across runs, so one-poll runs add up."""
        self._write(
            "UPDATE provider_batches SET missing_polls=?, missing_since=?, updated_at=? WHERE id=?",
            (polls, since, time.time(), uid),
        )
        self.commit()

    def batch_seen(self, uid: str, provider_status: str, done: int, total: int) -> None:
        """What the provider last said of the batch: its status and how many of its requests
        are done, of how many (for progress and the expected finish)."""
        self._write(
            "UPDATE provider_batches SET provider_status=?, done=?, total=?, seen_at=? WHERE id=?",
            (provider_status, done, total, time.time(), uid),
        )
        self.commit_soon()

    def batch_lost(self, uid: str, reason: str) -> None:
        """The batch is lost (see :attr:`BatchStatus.LOST`): its calls not yet answered go
        back to pending, in no batch, to be sent again."""
        self._set_batch(uid, BatchStatus.LOST)
        # submitted calls, and pending ones of a batch whose create was never confirmed
        olds = (CallStatus.SUBMITTED.value, CallStatus.PENDING.value)
        self._write(
            f"UPDATE calls SET status='pending', batch_id=NULL, error=?, updated_at=?"
            f" WHERE batch_id=? AND status IN {_in(olds)}",
            (reason, time.time(), uid, *olds),
        )
        self.commit()

    def batch_collected(self, uid: str) -> None:
        self._set_batch(uid, BatchStatus.COLLECTED)
        self.commit()

    def _set_batch(self, uid: str, new: BatchStatus, provider_batch_id: str | None = None) -> None:
        olds = _predecessors(new)
        cur = self._write(
            f"UPDATE provider_batches SET status=?, updated_at=?,"
            f" provider_batch_id=COALESCE(?, provider_batch_id) WHERE id=? AND status IN {_in(olds)}",
            (new.value, time.time(), provider_batch_id, uid, *olds),
        )
        if cur.rowcount != 1:
            row = self.get_batch(uid)
            if row is not None and row.status == new.value:
                return  # already there (a resumed run repeating a step)
            raise IllegalTransition(f"provider batch {uid}: cannot become {new.value}")

    def get_batch(self, uid: str) -> BatchRecord | None:
        rows = self._read("SELECT * FROM provider_batches WHERE id=?", (uid,))
        return _batch_row(rows[0]) if rows else None

    def job_batches(self, job_id: str, statuses: tuple[BatchStatus, ...] | None = None) -> list[BatchRecord]:
        """The job's provider batches (of these statuses), in the order they were created."""
        sql = "SELECT * FROM provider_batches WHERE job_id=?"
        params: list[Any] = [job_id]
        if statuses:
            sql += f" AND status IN {_in(tuple(s.value for s in statuses))}"
            params += [s.value for s in statuses]
        return [_batch_row(r) for r in self._read(sql + " ORDER BY created_at, id", params)]

    def waits_at_provider(self, job_id: str) -> bool:
        out = f"status IN {_literal((BatchStatus.SUBMITTED.value, BatchStatus.ENDED.value))}"
        if self._read(f"SELECT 1 FROM provider_batches WHERE job_id=? AND {out} LIMIT 1", (job_id,)):
            return True
        # another job's batch: walks this job's links (only when it has no batch of its own)
        shared = self._read(
            "SELECT 1 FROM job_calls j JOIN calls c ON c.key = j.key"
            " JOIN provider_batches b ON b.id = c.batch_id"
            f" WHERE j.job_id=? AND c.status IN {_literal(_PARKED_CALL)} AND b.{out} LIMIT 1",
            (job_id,),
        )
        return bool(shared)

    def batch_keys(self, uid: str) -> list[str]:
        return [r["key"] for r in self._read("SELECT key FROM calls WHERE batch_id=?", (uid,))]

    def provider_batch_ids(self, provider: str) -> set[str]:
        rows = self._read(
            "SELECT provider_batch_id FROM provider_batches"
            " WHERE provider=? AND provider_batch_id IS NOT NULL",
            (provider,),
        )
        return {r["provider_batch_id"] for r in rows}

    # -- prompt prefixes ------------------------------------------------------------------

    def prompt_prefixes(self, job_id: str) -> list[PrefixRecord]:
        rows = self._read(
            "SELECT lane, prefix, status, batch_id, primer, until FROM prompt_prefixes WHERE job_id=?",
            (job_id,),
        )
        return [PrefixRecord(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in rows]

    def prefix_priming(self, job_id: str, lane: str, prefix: str, batch_id: str, primer: str) -> None:
        """Not committed here: with the priming batch's intent, which follows (a row whose
        batch was never recorded is taken for a failed priming)."""
        self._write(
            "INSERT OR REPLACE INTO prompt_prefixes (job_id, lane, prefix, status, batch_id, primer,"
            " until, updated_at) VALUES (?,?,?,?,?,?,0,?)",
            (job_id, lane, prefix, PrefixStatus.PRIMING.value, batch_id, primer, time.time()),
        )

    def prefix_settled(self, job_id: str, lane: str, prefix: str, status: PrefixStatus, until: float) -> None:
        """Not committed here: with the answers that settled it (or the next group commit)."""
        olds = (*_predecessors(status), status.value)
        self._write(
            "UPDATE prompt_prefixes SET status=?, until=max(until, ?), updated_at=?"
            f" WHERE job_id=? AND lane=? AND prefix=? AND status IN {_in(olds)}",
            (status.value, until, time.time(), job_id, lane, prefix, *olds),
        )

    def prefix_dropped(self, job_id: str, lane: str, prefix: str) -> None:
        self._write(
            "DELETE FROM prompt_prefixes WHERE job_id=? AND lane=? AND prefix=?", (job_id, lane, prefix)
        )
        self.commit_soon()

    def call_requeued(self, key: str, reason: str) -> None:
        """A batched call that did not run (expired, cancelled, 5xx): send it again later."""
        olds = _predecessors(CallStatus.PENDING)
        self._write(
            f"UPDATE calls SET status='pending', batch_id=NULL, error=?, updated_at=?"
            f" WHERE key=? AND status IN {_in(olds)}",
            (reason, time.time(), key, *olds),
        )

    # -- compaction -----------------------------------------------------------------------

    def compact_job(self, job_id: str) -> Compaction:
        """Drop what only a running job reads, for a finished (completed or cancelled) job:
        the calls its items waited for (``waits``) and the request bodies of its answered
        calls (stores of earlier builds kept them), and which paid answers its succeeded
        items were told (``told``: a succeeded item is never fed again). A failed or
        cancelled item's ``told`` rows stay: a retry feeds it again, and must deliver the
        answers it paid for marked ``replay``, not paid a second time. Everything its
        results, its cost report and the cache read stays: items,
        answered calls and their responses, failed calls, the links between items and calls,
        provider batches. One transaction that holds the
        write lock, so a run that starts the job again meanwhile either comes after (and
        finds nothing missing: it builds its requests anew) or keeps it from compacting."""
        with self._lock:
            if self.read_only:
                raise StoreError(f"store {self.name} is read-only: it can be read, not changed")
            self.commit()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
                if row is None:
                    raise KeyError(job_id)
                status = JobStatus(row[0])
                if status not in _FINISHED_JOBS:
                    self._conn.execute("ROLLBACK")
                    return Compaction(job_id, status.value, compacted=False)
                waits = self._conn.execute("DELETE FROM waits WHERE job_id=?", (job_id,)).rowcount
                told = self._conn.execute(
                    "DELETE FROM told WHERE job_id=?1 AND item_idx IN"
                    " (SELECT idx FROM items WHERE job_id=?1 AND status='succeeded')",
                    (job_id,),
                ).rowcount
                self._conn.execute("DELETE FROM prompt_prefixes WHERE job_id=?", (job_id,))
                requests = self._conn.execute(
                    "UPDATE calls SET request=NULL WHERE request IS NOT NULL AND status='succeeded'"
                    " AND key IN (SELECT key FROM job_calls WHERE job_id=?)",
                    (job_id,),
                ).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        return Compaction(job_id, status.value, compacted=True, waits=waits, requests=requests, told=told)

    # -- progress over time ----------------------------------------------------------------

    def record_progress(self, job_id: str, sample: ProgressSample) -> None:
        """Add a sample of a running job's progress (committed with the run's next commit)."""
        self._write(
            "INSERT OR REPLACE INTO job_progress (job_id, t, items_done, items_failed, items_total,"
            " calls_paid, cost, tokens) VALUES (?,?,?,?,?,?,?,?)",
            (
                job_id,
                sample.t,
                sample.items_done,
                sample.items_failed,
                sample.items_total,
                sample.calls_paid,
                None if sample.cost is None else str(sample.cost),
                sample.tokens,
            ),
        )
        self.commit_soon()

    def progress_history(self, job_id: str, since: float | None = None) -> list[ProgressSample]:
        """The job's progress samples in time order (after ``since``, if given); none for a
        job run by a build that recorded none, or in an older store opened read-only."""
        # an older store, not migrated when opened read-only: no table, or no tokens
        tokens = "tokens"
        if self.read_only:
            columns = {r[1] for r in self._read("PRAGMA table_info(job_progress)")}
            if not columns:
                return []
            tokens = "tokens" if "tokens" in columns else "NULL"
        rows = self._read(
            f"SELECT t, items_done, items_failed, items_total, calls_paid, cost, {tokens} FROM"
            " job_progress WHERE job_id=? AND t>? ORDER BY t",
            (job_id, -1.0 if since is None else since),
        )
        return [
            ProgressSample(t, done, failed, total, paid, None if cost is None else Decimal(cost), n)
            for t, done, failed, total, paid, cost, n in rows
        ]

    def rate_scope(self, scope: str, claim: ScopeClaim) -> ScopeRow:
        """One upsert with RETURNING: atomic under the write lock, so two processes claiming
        capacity of one scope get disjoint slices of its clocks."""
        params = (
            scope,
            claim.rpm,
            claim.tpm,
            claim.now,
            claim.after,
            claim.request_s,
            claim.token_s,
            claim.paused_until,
            int(claim.throttled),
            claim.burst_s,
        )
        with self._lock:
            self._begin()
            if self._lost:  # this run's writes are undone anyway: claim nothing shared
                start = max(claim.now, claim.after)
                return ScopeRow(
                    claim.rpm, claim.tpm, start, start, claim.paused_until, claim.throttled, claim.burst_s
                )
            try:
                row = self._conn.execute(_RATE_SCOPE_SQL, params).fetchone()
            except self._db.errors as exc:
                raise self._db.failed(exc, self) from None
        return ScopeRow(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reports ----------------------------------------------------------------------
    # Read-only aggregates for the cost report (batchain.cost.report), summed in SQL so a
    # 100k-call job is priced from a handful of rows; each walks the job's own links, by
    # index. ``thresholds`` are the long-context prompt sizes of the models involved: rows
    # are split into buckets at them. A finished job's aggregates cannot change (only a
    # new run changes its links, and every status change forgets them), so they are
    # computed once and kept in ``job_memo``: `batchain status` of a finished job of any
    # size reads a few rows.

    def _memo(
        self, job_id: str, name: str, args: list[Any], compute: Callable[[], T], decode: Decode[T]
    ) -> T:
        """``compute()``, or what it gave for the job as it is now, if finished (a kept
        aggregate holds while the job's ``updated_at``, its stamp, is the same)."""
        if not self._memos:
            return compute()
        query = json.dumps([name, args])
        rows = self._read(
            "SELECT j.updated_at AS stamp, j.status AS status, m.result AS result FROM jobs j"
            " LEFT JOIN job_memo m ON m.job_id = j.id AND m.query = ? AND m.stamp = j.updated_at"
            " WHERE j.id = ?",
            (query, job_id),
        )
        if not rows or rows[0]["status"] not in _FINISHED:
            return compute()
        if rows[0]["result"] is not None:
            return decode(json.loads(rows[0]["result"]))
        value = compute()
        if not self.read_only:
            self._remember(job_id, query, rows[0]["stamp"], value)
        return value

    def _remember(self, job_id: str, query: str, stamp: float, value: Any) -> None:
        """Keep a finished job's aggregate, if the job has not changed since it was
        computed and the store can take the write at once: keeping it is a saving, never a
        reason for a read to wait or fail. Written straight on the connection, and only
        when no run of this process uses the file: a busy store must not count as a
        failed one (which stops the runs watching it)."""
        with self._lock:
            conn = self._conn
            if conn.in_transaction or self._fences or self._db.in_use:
                return
            conn.execute(f"PRAGMA busy_timeout={_MEMO_WAIT_MS}")
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT OR REPLACE INTO job_memo (job_id, query, stamp, result) SELECT ?, ?, ?, ?"
                    f" FROM jobs WHERE id = ? AND updated_at = ? AND status IN {_in(_FINISHED)}",
                    (job_id, query, stamp, json.dumps(_plain(value)), job_id, stamp, *_FINISHED),
                )
                conn.execute("COMMIT")
            except self._db.errors:  # busy (a runner is writing), or a full disk
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            finally:
                conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s() * 1000)}")

    def _forget(self, job_id: str) -> None:
        """The job is changing: its kept aggregates no longer hold (a new ``updated_at``
        also turns away one being kept by another process right now)."""
        if self._memos:
            self._write("DELETE FROM job_memo WHERE job_id=?", (job_id,))
            self._write("UPDATE jobs SET updated_at=? WHERE id=?", (time.time(), job_id))

    def job_models(self, job_id: str) -> list[tuple[str, str]]:
        """Distinct ``(provider, model)`` of every call the job used, however it got it."""
        return self._memo(job_id, "job_models", [], lambda: self._job_models(job_id), _pairs)

    def _job_models(self, job_id: str) -> list[tuple[str, str]]:
        rows = self._read(
            "SELECT DISTINCT c.provider AS provider, c.model AS model FROM calls c"
            " WHERE c.key IN (SELECT key FROM job_calls WHERE job_id = ?)",
            (job_id,),
        )
        return [(r["provider"], r["model"]) for r in rows]

    def paid_call_groups(self, job_id: str, thresholds: tuple[int, ...] = ()) -> list[PaidCallGroup]:
        """The job's paid, answered calls summed per provider, model, tier, service tier,
        prompt-size bucket and provider batch."""
        return self._memo(
            job_id,
            "paid_call_groups",
            [*thresholds],
            lambda: self._paid_call_groups(job_id, thresholds),
            _paid,
        )

    def _paid_call_groups(self, job_id: str, thresholds: tuple[int, ...]) -> list[PaidCallGroup]:
        rows = self._read(
            f"SELECT c.provider AS provider, c.model AS model, COALESCE(c.tier, 'realtime') AS tier,"
            f" {_REPORT_ST} AS st, {_bucket_sql(thresholds)} AS bucket,"
            f" CASE WHEN c.tier = 'batch' THEN c.batch_id END AS batch_id, {_REPORT_SUMS}"
            f" FROM calls c WHERE c.status = 'succeeded' AND c.key IN ({_REPORT_PAID_KEYS})"
            f" GROUP BY 1, 2, 3, 4, 5, 6",
            (job_id,),
        )
        return [
            PaidCallGroup(
                provider=r["provider"],
                model=r["model"],
                tier=r["tier"],
                service_tier=r["st"],
                bucket=r["bucket"],
                batch_id=r["batch_id"],
                usage=_summed_usage(r),
                cache_write_1h_tokens=int(r["w1h"] or 0),
            )
            for r in rows
        ]

    def reused_call_groups(
        self, job_id: str, sources: tuple[str, ...], thresholds: tuple[int, ...] = ()
    ) -> list[ReusedCallGroup]:
        """Uses of answered calls the job got through ``sources`` (cache, shared, replay),
        one per (call, item) link, summed per source, provider, model and bucket."""
        return self._memo(
            job_id,
            "reused_call_groups",
            [[*sources], [*thresholds]],
            lambda: self._reused_call_groups(job_id, sources, thresholds),
            _reused,
        )

    def _reused_call_groups(
        self, job_id: str, sources: tuple[str, ...], thresholds: tuple[int, ...]
    ) -> list[ReusedCallGroup]:
        rows = self._read(
            f"SELECT j.source AS source, c.provider AS provider, c.model AS model,"
            f" {_bucket_sql(thresholds)} AS bucket, {_REPORT_SUMS}"
            f" FROM job_calls j JOIN calls c ON c.key = j.key"
            f" WHERE j.job_id = ? AND j.source IN {_in(sources)} AND c.status = 'succeeded'"
            f" GROUP BY 1, 2, 3, 4",
            (job_id, *sources),
        )
        return [
            ReusedCallGroup(
                source=r["source"],
                provider=r["provider"],
                model=r["model"],
                bucket=r["bucket"],
                usage=_summed_usage(r),
                cache_write_1h_tokens=int(r["w1h"] or 0),
            )
            for r in rows
        ]

    def item_call_links(self, job_id: str, thresholds: tuple[int, ...] = ()) -> list[ItemCallLink]:
        """Every (item, answered call, source) link of the job, unsorted, with its tokens."""
        rows = self._read(
            f"SELECT j.item_idx AS idx, j.source AS source, c.provider AS provider, c.model AS model,"
            f" COALESCE(c.tier, 'realtime') AS tier, {_REPORT_ST} AS st,"
            f" {_bucket_sql(thresholds)} AS bucket,"
            f" c.input_tokens AS i, c.output_tokens AS o, c.cache_read_tokens AS cr,"
            f" c.cache_creation_tokens AS cw, {_REPORT_W1H} AS w1h"
            f" FROM job_calls j JOIN calls c ON c.key = j.key"
            f" WHERE j.job_id = ? AND c.status = 'succeeded'",
            (job_id,),
        )
        return [
            ItemCallLink(
                idx=int(r["idx"]),
                source=r["source"],
                provider=r["provider"],
                model=r["model"],
                tier=r["tier"],
                service_tier=r["st"],
                bucket=r["bucket"],
                input_tokens=r["i"],
                output_tokens=r["o"],
                cache_read_tokens=r["cr"],
                cache_creation_tokens=r["cw"],
                cache_write_1h_tokens=int(r["w1h"] or 0),
            )
            for r in rows
        ]

    def job_link_counts(self, job_id: str) -> dict[str, int]:
        """(call, item) links of the job by source (:meth:`job_call_stats` counts distinct calls)."""
        return self._memo(job_id, "job_link_counts", [], lambda: self._job_link_counts(job_id), _counts)

    def _job_link_counts(self, job_id: str) -> dict[str, int]:
        rows = self._read(
            "SELECT j.source AS source, COUNT(*) AS n FROM job_calls j JOIN calls c ON c.key = j.key"
            f" WHERE j.job_id = ? AND {_LINK_COUNTS} GROUP BY j.source",
            (job_id,),
        )
        return {r["source"]: int(r["n"]) for r in rows}

    def job_failures(self, job_id: str) -> JobFailures:
        """How many of the job's calls and items failed."""
        return self._memo(job_id, "job_failures", [], lambda: self._job_failures(job_id), _failures)

    def _job_failures(self, job_id: str) -> JobFailures:
        calls = self._read(
            "SELECT COUNT(*) AS n FROM calls WHERE job_id = ? AND status = 'failed'", (job_id,)
        )
        items = self._read(
            "SELECT COUNT(*) AS n FROM items WHERE job_id = ? AND status = 'failed'", (job_id,)
        )
        return JobFailures(calls=int(calls[0]["n"] or 0), items=int(items[0]["n"] or 0))


# -- reports: SQL pieces ------------------------------------------------------------------------

#: OpenAI realtime responses carry the tier that served them (default, flex, priority)
_REPORT_ST = (
    "CASE WHEN c.provider = 'openai' AND COALESCE(c.tier, 'realtime') <> 'batch'"
    " AND json_valid(c.response) THEN json_extract(c.response, '$.service_tier') END"
)
#: Anthropic's 1-hour cache writes (the rest of cache_creation_tokens are 5-minute writes)
_REPORT_W1H = (
    "CASE WHEN c.provider = 'anthropic' AND c.cache_creation_tokens > 0 AND json_valid(c.response)"
    " THEN COALESCE(CAST(json_extract(c.response, '$.usage.cache_creation.ephemeral_1h_input_tokens')"
    " AS INTEGER), 0)"
    " ELSE 0 END"
)
_REPORT_SUMS = (
    "COUNT(*) AS n, SUM(c.input_tokens) AS i, SUM(c.output_tokens) AS o,"
    " SUM(c.cache_read_tokens) AS cr, SUM(c.cache_creation_tokens) AS cw,"
    f" SUM(c.reasoning_tokens) AS rs, SUM({_REPORT_W1H}) AS w1h"
)
#: which links count: a paid link only once its call is answered (batch calls are linked
#: when they are parked, so a call that failed or waits is not counted as paid)
_LINK_COUNTS = "(j.source <> 'paid' OR c.status = 'succeeded')"
_REPORT_PAID_KEYS = "SELECT key FROM job_calls WHERE job_id = ? AND source = 'paid'"


def _bucket_sql(thresholds: tuple[int, ...]) -> str:
    """The prompt-size bucket of ``c.input_tokens``: 0 up to the first threshold, k above the k-th."""
    if not thresholds:
        return "0"
    whens = " ".join(
        f"WHEN c.input_tokens > {int(t)} THEN {k + 1}" for k, t in reversed(list(enumerate(thresholds)))
    )
    return f"CASE {whens} ELSE 0 END"


def _summed_usage(r: Row) -> Usage:
    """The usage of a row of ``_REPORT_SUMS``."""
    return Usage(
        int(r["i"] or 0),
        int(r["o"] or 0),
        int(r["cr"] or 0),
        int(r["cw"] or 0),
        int(r["rs"] or 0),
        int(r["n"] or 0),
    )


# -- reports: kept aggregates (job_memo) -------------------------------------------------------

T = TypeVar("T")
Decode = Callable[[Any], T]


def _plain(value: Any) -> Any:
    """A report aggregate as JSON: records as objects, tuples as lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _usage(data: Any) -> Usage:
    return Usage(**data)


def _counts(data: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in data.items()}


def _pairs(data: Any) -> list[tuple[str, str]]:
    return [(a, b) for a, b in data]


def _failures(data: Any) -> JobFailures:
    return JobFailures(**data)


def _paid(data: Any) -> list[PaidCallGroup]:
    return [PaidCallGroup(**{**g, "usage": Usage(**g["usage"])}) for g in data]


def _reused(data: Any) -> list[ReusedCallGroup]:
    return [ReusedCallGroup(**{**g, "usage": Usage(**g["usage"])}) for g in data]
