"""One SQLite connection per store file per process, shared by every
:class:`~batchain.store.sqlite.SQLiteStore` opened on that file: the one write transaction
it carries, its group commit, and what a failed statement does.

Why one: two connections of one process on one file deadlock. A job's writes of a loop
iteration form one transaction, committed at the end of the iteration (group commit). A
second job on the same loop writing through a connection of its own waits in SQLite's busy
handler, which blocks the loop's thread, so the first transaction's commit never runs: the
second job failed with "database is locked" after the busy timeout (issue 12, case 13).
With one connection, every job's writes join the same transaction and its group commit.

Transactions are short. A write begins one with ``BEGIN IMMEDIATE`` (the write lock at
once, so a stale read snapshot can never make a later write fail without waiting), and
inside an event loop every write schedules the group commit, so a transaction ends with
the loop iteration that began it: it is never held across an await. Another process waits
for the write lock at most one loop iteration of this one; waiting longer than the busy
timeout (say, a process stopped while holding it) is a :class:`StoreError`, in one line.

A write cannot half-happen (issue 12, case 3). A statement or commit that fails (a full
disk, an I/O error, a damaged file, a lock held too long) rolls back the whole open
transaction: every write since the last commit, of every store on the file in this
process, so of every job writing to it. Each one that wrote learns it: the store whose
statement failed by its error, whoever awaits the commit (:meth:`durable`) by the same
error, every run watching the file (:meth:`watch`) by being told, and any other store
that wrote at its next commit. While a run watches, every later write through the
connection is refused with the same one-line error, so nothing built on the undone
writes is recorded.

Leases are per store: each store's fences are checked as a transaction begins, holding the
write lock (see :meth:`SQLiteStore.on_begin <batchain.store.sqlite.SQLiteStore.on_begin>`),
so one job's lost lease undoes that job's writes only, never the others' in the same
transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from batchain.errors import StoreError
from batchain.store.checkpoint import Checkpointer

__all__ = [
    "BUSY_TIMEOUT_S",
    "Conn",
    "Cursor",
    "SharedConnection",
    "Where",
    "Writer",
    "busy_timeout_s",
    "call_in",
    "file_store",
    "primary_code",
    "problem",
    "running_loop",
]

log = logging.getLogger("batchain.store")

#: how long a write waits for another process's write lock before giving up
BUSY_TIMEOUT_S = 30.0

#: free bytes under which an I/O error of the store is taken for a full disk
_FULL_BELOW = 1 << 20

_T = TypeVar("_T")


def busy_timeout_s() -> float:
    """``$BATCHAIN_BUSY_TIMEOUT_S`` (tests shorten it), else 30 s."""
    return float(os.environ.get("BATCHAIN_BUSY_TIMEOUT_S") or BUSY_TIMEOUT_S)


def _disk_full(path: Path, code: int) -> bool:
    """Did a statement fail because the store's disk is full? SQLite says so (SQLITE_FULL)
    when a write comes up short, but growing its ``-shm`` index (which even a reader of a
    WAL store may do) fails as a plain I/O error: then the free space tells."""
    if code == sqlite3.SQLITE_FULL:
        return True
    if code != sqlite3.SQLITE_IOERR:
        return False
    try:
        return shutil.disk_usage(path.parent).free < _FULL_BELOW
    except OSError:
        return False


def primary_code(exc: Exception) -> int:
    """SQLite's primary result code of ``exc`` (``SQLITE_BUSY`` for every busy variant;
    0 for an error that is not SQLite's)."""
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def problem(path: Path, exc: Exception) -> StoreError:
    """What went wrong with the store at ``path``, as one line naming the file."""
    code = primary_code(exc)
    why = str(exc)
    if _disk_full(path, code):
        said = "" if code == sqlite3.SQLITE_FULL else f" ({why})"  # SQLite's words would repeat ours
        return StoreError(f"disk full: store {path} could not be written{said}", disk_full=True)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreError(f"store {path} is damaged or not a batchain store ({why})")
    if code == sqlite3.SQLITE_READONLY:
        return StoreError(f"store {path} is read-only: it can be read, not changed ({why})")
    if code == sqlite3.SQLITE_IOERR:
        return StoreError(f"store {path} could not be read or written: its disk failed ({why})")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"store {path} is locked: another process has held its write lock for more "
            f"than {busy_timeout_s():g} s (stopped or stuck?); try again once it is done"
        )
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return StoreError(f"store {path} cannot be opened ({why})")
    return StoreError(f"store {path} failed: {getattr(exc, 'sqlite_errorname', type(exc).__name__)}: {why}")


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def call_in(loop: asyncio.AbstractEventLoop | None, tell: Callable[[_T], None], what: _T) -> None:
    """``tell(what)`` in ``loop``'s thread: now if that is this thread (or there is no
    loop), else as soon as that loop runs. A store file is shared by the jobs of every
    thread of the process; what a job is told must reach it in its own loop."""
    if loop is None or running_loop() is loop:
        tell(what)
        return
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody listens any more
        loop.call_soon_threadsafe(tell, what)


def _settle(waiter: asyncio.Future[BaseException | None], outcome: BaseException | None) -> None:
    """Tell whoever awaits ``waiter`` how a commit ended (from any thread)."""
    if waiter.done():
        return
    loop = waiter.get_loop()
    if running_loop() is loop:
        waiter.set_result(outcome)
        return
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, waiter, outcome)


class Cursor(Protocol):
    """What a statement gives back: the DB-API cursor's part the stores use."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    """A database connection as the stores use it: :class:`sqlite3.Connection`, or the
    PostgreSQL store's (:class:`batchain.store.postgres.PgConnection`), which speaks the
    same SQL through its dialect."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Where:
    """Where a store lives, as its shared connection needs to know it."""

    #: one shared connection per key (and read-only flag) per process
    key: str
    #: a file (SQLite): its identity is checked on open, its WAL checkpointed by a thread
    path: Path | None
    #: the driver's errors: a statement raising one fails the open transaction
    errors: tuple[type[Exception], ...]
    #: one line naming the store for such an error
    describe: Callable[[Exception], StoreError]


def file_store(path: Path) -> Where:
    """A SQLite file."""
    return Where(str(path.resolve()), path, (sqlite3.Error,), lambda exc: problem(path, exc))


class Writer(Protocol):
    """A store writing through the shared connection."""

    def on_begin(self, conn: Conn) -> None:
        """A write transaction began, holding the write lock (its lease fences are checked)."""
        ...

    def on_undone(self, error: StoreError) -> None:
        """Its writes in the open transaction were undone by another store's failure."""
        ...


def _identity(path: Path | None) -> tuple[int, int] | None:
    """Which file is at ``path`` now (a store deleted and made again is another file)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_OPEN: weakref.WeakValueDictionary[tuple[str, bool], SharedConnection] = weakref.WeakValueDictionary()
_OPEN_LOCK = threading.Lock()


class SharedConnection:
    """The process's connection to one store (a file, or a database), its lock and its
    write transaction.

    Stores hold it while they are open (:meth:`open`/:meth:`release`); it closes when the
    last one closes, or when none refers to it any more."""

    def __init__(self, where: Where, conn: Conn, key: tuple[str, bool], *, checkpoints: bool = False) -> None:
        self.where = where
        self.conn = conn
        #: the driver's errors (see :attr:`Where.errors`)
        self.errors = where.errors
        self._key = key
        #: the thread that copies the WAL into the file (a writable shared connection's);
        #: told to stop when this closes, or when nothing refers to this any more
        self._checkpointer = Checkpointer(where.path) if checkpoints and where.path is not None else None
        if self._checkpointer is not None:
            weakref.finalize(self, self._checkpointer.stop, wait=False)
        #: one statement at a time, from any thread; a store method holds it throughout
        self.lock = threading.RLock()
        self._refs = 0
        self._closed = False
        self._identity = _identity(where.path)
        #: stores whose lease fences are checked as a transaction begins
        self._fenced: weakref.WeakSet[Writer] = weakref.WeakSet()
        #: stores that wrote in the open transaction
        self._writers: weakref.WeakSet[Writer] = weakref.WeakSet()
        #: runs told when a statement fails, by job id, with the loop each one runs on
        self._watchers: dict[str, tuple[Callable[[StoreError], None], asyncio.AbstractEventLoop | None]] = {}
        #: the failure every write repeats while a run watches
        self.failure: StoreError | None = None
        #: loops with a group commit scheduled
        self._scheduled: set[asyncio.AbstractEventLoop] = set()
        #: who awaits the end of the open transaction (:meth:`durable`), in any loop
        self._waiters: list[asyncio.Future[BaseException | None]] = []

    @classmethod
    def open(
        cls,
        where: Where,
        read_only: bool,
        connect: Callable[[], Conn],
        prepare: Callable[[Conn], None],
        *,
        private: bool = False,
    ) -> SharedConnection:
        """The open connection to the store ``where``, or a new one (``connect``, then
        ``prepare`` once: checks, settings, migrations); ``private``: always a new one, that
        no other store shares."""
        key = (where.key, read_only)
        if private:
            own = cls._new(where, key, connect, prepare)
            own._refs = 1
            return own
        with _OPEN_LOCK:
            shared = _OPEN.get(key)
            if shared is None or shared._identity != _identity(where.path):
                shared = _OPEN[key] = cls._new(where, key, connect, prepare, checkpoints=not read_only)
            shared._refs += 1
            return shared

    @classmethod
    def _new(
        cls,
        where: Where,
        key: tuple[str, bool],
        connect: Callable[[], Conn],
        prepare: Callable[[Conn], None],
        *,
        checkpoints: bool = False,
    ) -> SharedConnection:
        """A new connection, prepared (closed again if preparing it failed); with
        ``checkpoints``, a :class:`Checkpointer` copies its WAL into the file."""
        conn = connect()
        try:
            prepare(conn)
        except BaseException:
            conn.close()
            raise
        return cls(where, conn, key, checkpoints=checkpoints)

    def release(self) -> None:
        """A store closed: commit, and close the connection once no store holds it."""
        with _OPEN_LOCK, self.lock:
            try:
                self.commit()
            finally:
                self._refs -= 1
                if self._refs <= 0:
                    if _OPEN.get(self._key) is self:
                        del _OPEN[self._key]
                    self._closed = True
                    if self._checkpointer is not None:
                        self._checkpointer.stop()
                    self.conn.close()

    def fenced(self, store: Writer) -> None:
        """Check ``store``'s lease fences as every later write transaction begins."""
        with self.lock:
            self._fenced.add(store)

    # -- failures ---------------------------------------------------------------------------

    @property
    def in_use(self) -> bool:
        """Does a run of this process use the file (a fence or a watch on it)?"""
        return bool(self._watchers) or len(self._fenced) > 0

    def watch(self, job_id: str, on_failure: Callable[[StoreError], None]) -> None:
        """Tell ``on_failure`` (in the loop running now) when a statement or commit on this
        file fails; every later write is refused until no run watches any more."""
        loop = running_loop()
        with self.lock:
            self._watchers[job_id] = (on_failure, loop)

    def unwatch(self, job_id: str) -> None:
        with self.lock:
            self._watchers.pop(job_id, None)
            if not self._watchers:
                self.failure = None  # no run builds on the undone writes any more

    def failed(self, exc: Exception, by: Writer | None = None) -> StoreError:
        """A statement of ``by`` failed (holding :attr:`lock`): undo the whole open
        transaction (SQLite may have undone only the statement); tell whoever awaits its
        commit, and every other store that wrote in it; while runs watch the file, tell
        them all and refuse every later write. Returns the error, for ``by`` to raise."""
        error = self.where.describe(exc)
        with contextlib.suppress(*self.errors):
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        self._settle_waiters(error)
        writers = list(self._writers)
        self._writers.clear()
        for writer in writers:
            if writer is not by:
                writer.on_undone(error)
        if self._watchers and self.failure is None:
            self.failure = error
            for tell, loop in list(self._watchers.values()):
                call_in(loop, tell, error)
        return error

    # -- the write transaction --------------------------------------------------------------

    def begin(self, writer: Writer) -> None:
        """Before a write of ``writer`` (holding :attr:`lock`): refuse it if the file failed
        under a run; join the open write transaction, or begin one holding the write lock
        and check every store's fences; inside an event loop, its commit is scheduled.

        Whether a transaction is open is asked of SQLite itself: after some failures it
        rolled the transaction back on its own, and a later write must then begin a new
        one, never be committed by itself (autocommit)."""
        if self.failure is not None:
            raise self.failure.with_traceback(None)
        if not self.conn.in_transaction:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                for store in list(self._fenced):
                    store.on_begin(self.conn)
            except self.errors as exc:
                raise self.failed(exc, writer) from None
            except BaseException:
                self.rollback()
                raise
        self._writers.add(writer)
        self._schedule()

    def commit(self, by: Writer | None = None) -> None:
        """Commit the open transaction: every store's writes on this file."""
        with self.lock:
            if self._closed or not self.conn.in_transaction:
                return
            try:
                self.conn.execute("COMMIT")
            except self.errors as exc:
                raise self.failed(exc, by) from None
            self._writers.clear()
            self._settle_waiters(None)

    def rollback(self) -> None:
        with self.lock:
            if not self._closed and self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def _settle_waiters(self, outcome: BaseException | None) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _settle(waiter, outcome)

    def _schedule(self) -> None:
        """Inside an event loop, commit at the end of this iteration (holding :attr:`lock`)."""
        loop = running_loop()
        if loop is None:
            return  # sync callers commit themselves
        if loop not in self._scheduled:
            self._scheduled.add(loop)
            loop.call_soon(self._group_commit, loop)

    def commit_soon(self) -> None:
        """Commit at the end of this event-loop iteration (at once outside a loop)."""
        if running_loop() is None:
            self.commit()
            return
        with self.lock:
            self._schedule()

    def _group_commit(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:
            self._scheduled.discard(loop)
            try:
                self.commit()
            except StoreError as exc:
                if not self._watchers:  # else the runs were told, and stop
                    log.error("%s", exc)

    async def durable(self) -> None:
        """Return once everything written so far is committed (by the group commit of this
        loop iteration, or any commit before it, in any thread); raise the
        :class:`StoreError` if that transaction was rolled back instead, or if the file
        failed under a run."""
        loop = asyncio.get_running_loop()
        with self.lock:
            if self.failure is not None:
                raise self.failure.with_traceback(None)
            if self._closed or not self.conn.in_transaction:
                return
            waiter: asyncio.Future[BaseException | None] = loop.create_future()
            self._waiters.append(waiter)
            self._schedule()
        outcome = await waiter
        if outcome is not None:
            raise outcome.with_traceback(None)
