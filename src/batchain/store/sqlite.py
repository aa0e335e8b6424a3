"""The SQLite store: one WAL-mode file holding jobs, items, calls and provider batches.

The queries are :class:`~batchain.store.sql.SQLStore`'s; this module opens the file:
settings, the schema and its migrations, and what a file alone has (its size, vacuum).

With ``synchronous=NORMAL`` a commit in WAL mode is an append to the log, so a killed
process loses at most the writes of the loop iteration it was in; a power cut can lose a
bit more.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from pathlib import Path

from batchain.errors import StoreError
from batchain.store.base import lease_owner
from batchain.store.checkpoint import BACKSTOP_PAGES
from batchain.store.connection import (
    Conn,
    SharedConnection,
    busy_timeout_s,
    file_store,
    primary_code,
    problem,
)
from batchain.store.schema import (
    ADDED_COLUMNS,
    DROPPED_INDEXES,
    SCHEMA,
    SCHEMA_OBJECTS,
    SCHEMA_VERSION,
    check_version,
)
from batchain.store.sql import SQLStore

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "default_store_path", "lease_owner"]


def _sqlite(conn: Conn) -> sqlite3.Connection:
    """The SQLite connection a SQLite store's shared connection holds."""
    assert isinstance(conn, sqlite3.Connection)
    return conn


def _writable(path: Path) -> bool:
    """Can a store live at ``path`` and be changed (the file, and its folder for the journal)?"""
    if path.exists():
        return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def default_store_path() -> Path:
    """``$BATCHAIN_STORE`` if set, else ``~/.batchain/store.sqlite``."""
    env = os.environ.get("BATCHAIN_STORE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".batchain" / "store.sqlite"


def _use_wal(conn: sqlite3.Connection) -> None:
    """Put the store in WAL mode. Switching a new store's journal reads it, then takes its
    exclusive lock. When several processes switch it at the same moment, each holds the
    read lock the others wait for, and SQLite answers all but one busy at once, without
    its busy handler (waiting would deadlock): they retry here, up to the busy timeout,
    instead of failing. A store already in WAL mode needs no lock."""
    deadline = time.monotonic() + busy_timeout_s()
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if primary_code(exc) != sqlite3.SQLITE_BUSY or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the store to this build's schema, in one transaction that holds the write
    lock, so two processes opening an older store at once migrate it once. A store already
    there is only read: opening it never waits for a writer."""
    if _up_to_date(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _stored_version(conn)
        for index in DROPPED_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        old_calls = _set_aside_calls(conn)
        old_links = _set_aside_job_calls(conn)
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        if old_calls:
            _refill_calls(conn)
        if old_links:
            conn.execute(
                "INSERT INTO job_calls (job_id, item_idx, key, source) SELECT job_id, item_idx, key,"
                " source FROM job_calls_old ORDER BY job_id, item_idx, key, source"
            )
            conn.execute("DROP TABLE job_calls_old")
        for table, column, decl in ADDED_COLUMNS:
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        if version is None or version < 2:
            # the counters start from what the items say (nothing, in a new store)
            conn.execute("DELETE FROM job_item_counts")
            conn.execute(
                "INSERT INTO job_item_counts (job_id, status, n)"
                " SELECT job_id, status, COUNT(*) FROM items GROUP BY job_id, status"
            )
        if version != SCHEMA_VERSION:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _set_aside_calls(conn: sqlite3.Connection) -> bool:
    """Rename a ``calls`` table of schema 2 or older (``WITHOUT ROWID``) to ``calls_old``,
    for :func:`_refill_calls`. A call's row holds its request and answer (about a kilobyte),
    and SQLite keeps a ``WITHOUT ROWID`` table's whole rows in its key's B-tree: with random
    keys (hashes) every insert and every answer written splits pages all over it. In a rowid
    table the rows are appended and only the key's index is random: writing a large batch's
    calls takes several times less time (bench/bench_calls_table.py)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='calls'").fetchone()
    if row is None or "WITHOUT ROWID" not in row[0].upper():
        return False
    indexes = conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='calls'")
    for (index,) in indexes.fetchall():
        if not index.startswith("sqlite_autoindex"):
            conn.execute(f"DROP INDEX {index}")
    conn.execute("ALTER TABLE calls RENAME TO calls_old")
    return True


def _set_aside_job_calls(conn: sqlite3.Connection) -> bool:
    """Rename a ``job_calls`` table of schema 3 or older, keyed by call before item, to
    ``job_calls_old`` for its rows to be copied into the new one. Items are linked in their
    order, and call keys are hashes: keyed by call, every link landed at a random place in
    the B-tree and wrote a page of its own (at 200,000 links, eight times the time of links
    keyed by item, which are appended)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='job_calls'").fetchone()
    if row is None or "PRIMARY KEY (job_id, key," not in " ".join(row[0].split()):
        return False
    conn.execute("ALTER TABLE job_calls RENAME TO job_calls_old")
    return True


def _refill_calls(conn: sqlite3.Connection) -> None:
    """Copy ``calls_old`` into the new ``calls`` table, every column they share, and drop it."""
    new = [r[1] for r in conn.execute("PRAGMA table_info(calls)")]
    old = {r[1] for r in conn.execute("PRAGMA table_info(calls_old)")}
    shared = ", ".join(c for c in new if c in old)
    conn.execute(f"INSERT INTO calls ({shared}) SELECT {shared} FROM calls_old ORDER BY key")
    conn.execute("DROP TABLE calls_old")


def _up_to_date(conn: sqlite3.Connection) -> bool:
    """Does the store have this build's version, and every table, index and column?"""
    if _stored_version(conn) != SCHEMA_VERSION:
        return False
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    if not set(SCHEMA_OBJECTS) <= have or have & set(DROPPED_INDEXES):
        return False
    tables = {table for table, _, _ in ADDED_COLUMNS}
    columns = {(t, r[1]) for t in tables for r in conn.execute(f"PRAGMA table_info({t})")}
    return all((table, column) in columns for table, column, _ in ADDED_COLUMNS)


def _stored_version(conn: sqlite3.Connection) -> int | None:
    """The schema version the store records (None: a new store, or one from before
    versions were recorded)."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if has_meta is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return None if row is None else int(row[0])


class SQLiteStore(SQLStore):
    """Jobs, items, calls and provider batches in one SQLite file (WAL).

    Every store opened on one file in one process shares one connection and its write
    transaction (:mod:`batchain.store.connection`): several jobs of one process run side by
    side on one store, their writes committed together once per loop iteration, and a
    failed statement undoes, and is told to, all of them."""

    #: a multi-row INSERT's rows (SQLite takes 32,766 parameters in a statement; 100 rows
    #: took as little time as 250 or 500)
    rows_per_insert = 100

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        read_only: bool | None = None,
        own_connection: bool = False,
    ) -> None:
        """Open (or create) the store at ``path``. A store that cannot be written (a
        read-only medium, or ``read_only=True``) is opened for reading only; one that is
        damaged or newer than this batchain is refused with :class:`StoreError`, unchanged.
        ``own_connection`` (read-only stores only): a connection of its own instead of the
        process's shared one, so its long reads (a cost report) hold up no other store."""
        self.path = Path(path) if path is not None else default_store_path()
        self.name = str(self.path)
        self.location = self.path
        self.read_only = read_only if read_only is not None else not _writable(self.path)
        if own_connection and not self.read_only:
            raise ValueError("own_connection is for read-only stores: writers share one connection")
        existed = self.path.exists()
        try:
            db = SharedConnection.open(
                file_store(self.path), self.read_only, self._connect, self._prepare, private=own_connection
            )
        except sqlite3.Error as exc:
            error = problem(self.path, exc)
            # a full disk refused the rest: leave no empty file behind (only then: another
            # process may be creating the same store, and an unlinked file fails its reads)
            if not existed and error.disk_full:
                with contextlib.suppress(OSError):
                    if self.path.stat().st_size == 0:
                        self.path.unlink()
            raise error from None
        self._open(db, _stored_version(_sqlite(db.conn)))

    def _connect(self) -> sqlite3.Connection:
        if not self.read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    full = f"disk full: store {self.path} could not be written"
                    raise StoreError(full, disk_full=True) from None
                raise StoreError(f"store {self.path}: cannot create its folder ({exc.strerror})") from None
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s()
            )
        else:
            if not self.path.exists():
                raise StoreError(f"store {self.path} does not exist (and cannot be created: read-only)")
            # immutable: a read-only medium cannot hold SQLite's lock files; nothing writes to it
            immutable = "&immutable=1" if not os.access(self.path.parent, os.W_OK) else ""
            uri = f"{self.path.resolve().as_uri()}?mode=ro{immutable}"
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s()
            )
        conn.row_factory = sqlite3.Row
        return conn

    def _prepare(self, db: Conn) -> None:
        """A new connection: refuse a newer store, then settings and migrations."""
        conn = _sqlite(db)
        self._check_version(conn)
        if not self.read_only:
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            # 16 MB of pages instead of 2: a batch's calls are written, then read and
            # updated by key, all over the table (measured at 50,000 items: a fifth less
            # client time collecting)
            conn.execute("PRAGMA cache_size=-16384")
            # the WAL is copied into the file by a thread of its own (see store/checkpoint.py)
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s() * 1000)}")
            _migrate(conn)

    def _check_version(self, conn: sqlite3.Connection) -> None:
        """Refuse a newer store before changing anything in it."""
        check_version(self.name, _stored_version(conn))

    def vacuum(self) -> None:
        """Rewrite the store file without its free pages, packing every table and index
        (needs as much free disk as the store takes, and no other process writing)."""
        with self._lock:
            if self.read_only:
                raise StoreError(f"store {self.path} is read-only: it can be read, not changed")
            self.commit()
            try:
                self._conn.execute("VACUUM")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:
                raise StoreError(
                    f"store {self.path} could not be vacuumed ({exc}): another process is using it, "
                    "or the disk lacks room for a copy of it; try again when no job runs"
                ) from None

    def size(self) -> int:
        """Bytes the store takes on disk (its file and its write-ahead log)."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
