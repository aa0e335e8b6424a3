"""One SQLite connection per store file per process, shared by every
:class:`~batchain.store.sqlite.SQLiteStore` opened on that file, and the one write
transaction it carries.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from batchain.errors import StoreError

__all__ = ["BUSY_TIMEOUT_S", "BeginWatcher", "SharedConnection", "busy_timeout_s", "store_errors"]

#: how long a write waits for another process's write lock before giving up
BUSY_TIMEOUT_S = 30.0


def busy_timeout_s() -> float:
    """``$BATCHAIN_BUSY_TIMEOUT_S`` (tests shorten it), else 30 s."""
    return float(os.environ.get("BATCHAIN_BUSY_TIMEOUT_S") or BUSY_TIMEOUT_S)


class BeginWatcher(Protocol):
    """Told when a write transaction begins, holding the write lock (lease fences)."""

    def on_begin(self, conn: sqlite3.Connection) -> None: ...


@contextlib.contextmanager
def store_errors(path: Path) -> Iterator[None]:
    """SQLite's "database is locked" as one clear line naming the store."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise StoreError(
                f"store {path} is locked: another process has held its write lock for more "
                f"than {busy_timeout_s():g} s (stopped or stuck?); try again once it is done"
            ) from None
        raise


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` now (a store deleted and made again is another file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_OPEN: weakref.WeakValueDictionary[tuple[str, bool], SharedConnection] = weakref.WeakValueDictionary()
_OPEN_LOCK = threading.Lock()


class SharedConnection:
    """The process's connection to one store file, its lock and its write transaction.

    Stores hold it while they are open (:meth:`acquire`/:meth:`release`); it closes when
    the last one closes, or when none refers to it any more."""

    def __init__(self, path: Path, conn: sqlite3.Connection, key: tuple[str, bool]) -> None:
        self.path = path
        self.conn = conn
        self._key = key
        #: one statement at a time, from any thread; a store method holds it throughout
        self.lock = threading.RLock()
        self.in_tx = False
        self._refs = 0
        self._identity = _identity(path)
        self._watchers: weakref.WeakSet[BeginWatcher] = weakref.WeakSet()
        #: loops with a group commit scheduled, and who waits for it there
        self._scheduled: set[asyncio.AbstractEventLoop] = set()
        self._waiters: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}

    @classmethod
    def open(
        cls,
        path: Path,
        read_only: bool,
        connect: Callable[[], sqlite3.Connection],
        prepare: Callable[[sqlite3.Connection], None],
    ) -> SharedConnection:
        """The open connection to the file at ``path``, or a new one (``connect``, then
        ``prepare`` once: checks, settings, migrations)."""
        key = (str(path.resolve()), read_only)
        with _OPEN_LOCK:
            shared = _OPEN.get(key)
            if shared is None or shared._identity != _identity(path):
                conn = connect()
                try:
                    prepare(conn)
                except BaseException:
                    conn.close()
                    raise
                shared = cls(path, conn, key)
                _OPEN[key] = shared
            shared._refs += 1
            return shared

    def release(self) -> None:
        """A store closed: commit, and close the connection once no store holds it."""
        with _OPEN_LOCK, self.lock:
            self.commit()
            self._refs -= 1
            if self._refs > 0:
                return
            if _OPEN.get(self._key) is self:
                del _OPEN[self._key]
            self.conn.close()

    def watch(self, watcher: BeginWatcher) -> None:
        with self.lock:
            self._watchers.add(watcher)

    # -- the write transaction --------------------------------------------------------------

    def begin(self) -> None:
        """Before a write (holding :attr:`lock`): join the open write transaction, or begin
        one holding the write lock; inside an event loop, its commit is scheduled."""
        if not self.in_tx:
            with store_errors(self.path):
                self.conn.execute("BEGIN IMMEDIATE")
            self.in_tx = True
            try:
                for watcher in list(self._watchers):
                    watcher.on_begin(self.conn)
            except BaseException:
                self.rollback()
                raise
        self._schedule()

    def commit(self) -> None:
        with self.lock:
            if self.in_tx:
                with store_errors(self.path):
                    self.conn.execute("COMMIT")
                self.in_tx = False

    def rollback(self) -> None:
        with self.lock:
            if self.in_tx:
                self.conn.execute("ROLLBACK")
                self.in_tx = False

    def _schedule(self) -> None:
        """Inside an event loop, commit at the end of this iteration (holding :attr:`lock`)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # sync callers commit themselves
        if loop not in self._scheduled:
            self._scheduled.add(loop)
            loop.call_soon(self._group_commit, loop)

    def commit_soon(self) -> None:
        """Commit at the end of this event-loop iteration (at once outside a loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.commit()
            return
        with self.lock:
            self._schedule()

    def _group_commit(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:
            self._scheduled.discard(loop)
            waiters = self._waiters.pop(loop, [])
        try:
            self.commit()
        except BaseException as exc:
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved by whoever awaits it
            raise
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def flushed(self) -> None:
        """Return once everything written so far is committed (the group commit of this
        loop iteration)."""
        loop = asyncio.get_running_loop()
        with self.lock:
            if not self.in_tx:
                return
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(loop, []).append(fut)
            self._schedule()
        await fut
