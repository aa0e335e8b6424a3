"""The PostgreSQL store: the same tables, queries and rules as the SQLite store, in a
database that processes on many machines share.

``store="postgresql://user:password@host:5432/db"`` (or ``BATCHAIN_STORE`` set to such a
URL) opens it; a ``search_path`` in the URL's options (``?options=-csearch_path%3Dteam``)
puts the store's tables in that schema. Needs the ``postgresql`` extra (psycopg 3).

The queries are :class:`~batchain.store.sql.SQLStore`'s, run through
:class:`PgConnection`, which reads them in PostgreSQL's words
(:mod:`batchain.store.dialect`). A write transaction takes the store's advisory lock
first, as SQLite's ``BEGIN IMMEDIATE`` takes its file's write lock: one writer at a time
per store, so a lease checked as a transaction begins holds until it commits, and a
rate-limit claim or a lease claim is one step for every process. Transactions are short
(a group commit per event-loop iteration), as on SQLite.

The URL's password never reaches a message: the store names itself by its URL without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from batchain.errors import StoreError
from batchain.store import is_postgres_url
from batchain.store.connection import Conn, Cursor, SharedConnection, Where, busy_timeout_s
from batchain.store.dialect import JSON_FUNCTIONS, ddl, translate
from batchain.store.schema import ADDED_COLUMNS, DROPPED_INDEXES, SCHEMA, SCHEMA_VERSION, check_version
from batchain.store.sql import SQLStore

if TYPE_CHECKING:
    import psycopg

__all__ = ["PgConnection", "PostgresStore", "redacted"]


def redacted(url: str) -> str:
    """``url`` without its password (and without its query, which may carry one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the extra is not installed
        raise StoreError("a PostgreSQL store needs psycopg: pip install 'batchain[postgresql]'") from None
    return psycopg


def _plain(value: Any) -> Any:
    """A value as SQLite gives it: sums of integers are integers (PostgreSQL's are numeric)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class _RowBase(tuple[Any, ...]):
    """A result row by position or column name, as :class:`sqlite3.Row`."""

    __slots__ = ()
    #: set by each query's own subclass (:func:`_row_class`)
    _index: ClassVar[dict[str, int]] = {}
    _names: ClassVar[tuple[str, ...]] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


_ROW_CLASSES: dict[tuple[str, ...], type[_RowBase]] = {}


def _row_class(names: tuple[str, ...]) -> type[_RowBase]:
    cls = _ROW_CLASSES.get(names)
    if cls is None:
        index: dict[str, int] = {}
        for i, name in enumerate(names):
            index.setdefault(name, i)  # SELECT i.idx AS idx, c.*: the first one named wins
        cls = _ROW_CLASSES[names] = type(
            "Row", (_RowBase,), {"__slots__": (), "_index": index, "_names": names}
        )
    return cls


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Any]:
    description = cursor.description
    if description is None:
        return tuple
    cls = _row_class(tuple(d.name for d in description))
    return lambda values: cls(_plain(v) for v in values)


class PgConnection:
    """A psycopg connection that takes the store's SQL as a :class:`sqlite3.Connection`
    takes it (see :class:`~batchain.store.connection.Conn`): SQLite's words translated,
    rows by position or name, ``BEGIN IMMEDIATE`` as a transaction holding the store's
    advisory lock."""

    def __init__(self, conn: psycopg.Connection[Any], lock_key: int) -> None:
        self._conn = conn
        self._lock_key = lock_key

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        cursor = self._conn.cursor(row_factory=_row_factory)
        if sql == "BEGIN IMMEDIATE":
            cursor.execute("BEGIN")
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            return cursor
        statement = translate(sql)
        cursor.execute(statement.text, _bound(parameters, statement.named))
        return cursor

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        # bound on the server: the statement is prepared once and each row sent as its
        # values alone, instead of a whole query text the server parses and plans again
        cursor: psycopg.Cursor[Any] = _psycopg().Cursor(self._conn, row_factory=_row_factory)
        statement = translate(sql)
        cursor.executemany(statement.text, (_bound(p, statement.named) for p in parameters))
        return cursor

    def close(self) -> None:
        self._conn.close()


def _bound(parameters: Any, named: bool) -> Any:
    if not named:
        return tuple(parameters)
    return {f"p{n}": v for n, v in enumerate(parameters, 1)}


def _bounded(url: str) -> dict[str, Any]:
    """Connection settings that put an end to every wait on the server, unless the URL
    sets its own: a connect that gets no answer gives up after the busy timeout, and a
    server gone silent mid-statement (a dead host, a cut network) is found by TCP
    keepalives and a send timeout in about as long, instead of the OS's hours."""
    from psycopg.conninfo import conninfo_to_dict

    limit = max(2, round(busy_timeout_s()))  # libpq takes whole seconds, 2 at the least
    wanted: dict[str, Any] = {
        "connect_timeout": limit,
        "keepalives": 1,
        "keepalives_idle": limit,
        "keepalives_interval": max(1, limit // 3),
        "keepalives_count": 3,
        "tcp_user_timeout": limit * 1000,
    }
    given = conninfo_to_dict(url)
    return {k: v for k, v in wanted.items() if k not in given}


def _lock_key(database: str, schema: str) -> int:
    """The advisory lock of the store in ``schema`` of ``database`` (a signed 64-bit key)."""
    digest = hashlib.sha256(f"batchain:{database}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _problem(name: str, exc: Exception) -> StoreError:
    """What went wrong with the store ``name``, in one line."""
    state = getattr(exc, "sqlstate", None) or ""
    why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if state in ("55P03", "57014"):  # lock_not_available, query_canceled (a timeout)
        return StoreError(
            f"store {name} is locked: another process has held its write lock for more "
            f"than {busy_timeout_s():g} s (stopped or stuck?); try again once it is done"
        )
    if state == "53100":  # disk_full
        return StoreError(f"disk full: store {name} could not be written ({why})", disk_full=True)
    if state.startswith("08") or state.startswith("57P") or not state:
        return StoreError(f"store {name} cannot be reached ({why})")
    if state.startswith("28"):
        return StoreError(f"store {name} refused the credentials given ({why})")
    if state == "25006":  # read_only_sql_transaction
        return StoreError(f"store {name} is read-only: it can be read, not changed ({why})")
    return StoreError(f"store {name} failed: {type(exc).__name__}: {why}")


def _stored_version(conn: Conn) -> int | None:
    """The schema version the store records (None: a new store)."""
    if conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0] is not True:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return None if row is None else int(row[0])


def _statements(schema: str) -> Iterator[str]:
    for statement in schema.split(";"):
        if statement.strip():
            yield statement.strip()


def _migrate(conn: Conn) -> None:
    """Bring the store to this build's schema, in one transaction holding the store's lock,
    so two processes opening a new store at once create it once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for index in DROPPED_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        for statement in _statements(SCHEMA):
            conn.execute(ddl(statement))
        for table, column, declaration in ADDED_COLUMNS:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {ddl(declaration)}")
        for function in JSON_FUNCTIONS:
            conn.execute(function)
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class PostgresStore(SQLStore):
    """Jobs, items, calls and provider batches in a PostgreSQL database (the current schema
    of the URL's connection).

    As with SQLite, every store opened on one URL in one process shares one connection and
    its write transaction (:mod:`batchain.store.connection`)."""

    def __init__(self, url: str, *, read_only: bool = False, own_connection: bool = False) -> None:
        """Open (or create) the store at ``url``. One that is newer than this batchain is
        refused with :class:`StoreError`, unchanged; so is one that cannot be reached.
        ``own_connection`` (read-only stores only): a connection of its own instead of the
        process's shared one, so its long reads (a cost report) hold up no other store."""
        if not is_postgres_url(url):
            raise ValueError(f"not a PostgreSQL URL: {redacted(url)!r}")
        if own_connection and not read_only:
            raise ValueError("own_connection is for read-only stores: writers share one connection")
        self.url = url
        self.location = url
        self.name = redacted(url)
        self.read_only = read_only
        psycopg = _psycopg()
        where = Where(url, None, (psycopg.Error,), lambda exc: _problem(self.name, exc))
        try:
            db = SharedConnection.open(where, read_only, self._connect, self._prepare, private=own_connection)
        except psycopg.Error as exc:
            raise _problem(self.name, exc) from None
        self._open(db, _stored_version(db.conn))

    def _connect(self) -> Conn:
        psycopg = _psycopg()
        # one statement is bound on the client: the IN lists of lookups vary in length, and
        # each length would be a statement of its own to prepare (many rows: executemany)
        conn = psycopg.connect(
            self.url, autocommit=True, cursor_factory=psycopg.ClientCursor, **_bounded(self.url)
        )
        try:
            conn.execute(f"SET lock_timeout = {int(busy_timeout_s() * 1000)}")
            if self.read_only:
                conn.execute("SET default_transaction_read_only = on")
            database, schema = conn.execute("SELECT current_database(), current_schema()").fetchone()
        except BaseException:
            conn.close()
            raise
        if schema is None:
            conn.close()
            raise StoreError(f"store {self.name}: its search_path names no schema that exists")
        return PgConnection(conn, _lock_key(database, schema))

    def _prepare(self, conn: Conn) -> None:
        """A new connection: refuse a newer store, then the schema."""
        version = _stored_version(conn)
        check_version(self.name, version)
        if self.read_only:
            if version is None:
                raise StoreError(f"store {self.name} holds no batchain store (and cannot be made: read-only)")
            return
        if version != SCHEMA_VERSION:
            _migrate(conn)

    def vacuum(self) -> None:
        """Reclaim dead rows' space and refresh the planner's statistics of every table."""
        with self._lock:
            if self.read_only:
                raise StoreError(f"store {self.name} is read-only: it can be read, not changed")
            self.commit()
            try:
                self._conn.execute("VACUUM (ANALYZE)")
            except self._db.errors as exc:
                raise self._db.failed(exc, self) from None

    def size(self) -> int:
        """Bytes the store's tables and indexes take in the database."""
        row = self._read(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        )
        return int(row[0][0])
