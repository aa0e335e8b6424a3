"""Durable storage of jobs, items, calls and provider batches: a SQLite file (the default),
or a PostgreSQL database that processes on several machines share."""

import contextlib
import os
import weakref
from collections import deque

from batchain.store.base import Store
from batchain.store.records import CallRecord, ItemRecord, JobRecord, Usage
from batchain.store.schema import SCHEMA_VERSION
from batchain.store.sqlite import SQLiteStore, default_store_path

#: a store, or where to open one: a file's path, a ``postgresql://`` URL (None: the
#: default store, ``$BATCHAIN_STORE`` or ``~/.batchain/store.sqlite``)
StoreArg = Store | str | os.PathLike[str] | None


def is_postgres_url(value: object) -> bool:
    """Is ``value`` a PostgreSQL URL (``postgresql://...``)?"""
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


#: each store batchain opened for job handles (by id), with the handles holding it
_HANDLES: dict[int, tuple[Store, "weakref.WeakSet[object]"]] = {}
#: stores whose handles were garbage collected, looked at by the next :func:`open_store`
_DROPPED: deque[int] = deque()


def close_with(owner: object, store: Store) -> None:
    """Close ``store`` once ``owner`` (a job handle that opened it), and every handle that
    :func:`share` made hold it since, are garbage collected.

    Not in the collector's own step: that may run on a thread that holds the store's lock,
    or the lock of the shared connections. The store waits in a queue (an append takes no
    lock) until the next :func:`open_store`, so a process that runs many jobs on many files
    keeps only the ones in use open."""
    entry = _HANDLES.setdefault(id(store), (store, weakref.WeakSet()))
    entry[1].add(owner)
    weakref.finalize(owner, _DROPPED.append, id(store))


def share(owner: object, store: Store) -> None:
    """``owner``, a handle given ``store``, keeps it open too if batchain opened it."""
    if id(store) in _HANDLES:
        close_with(owner, store)


def _close_dropped() -> None:
    while _DROPPED:
        try:
            key = _DROPPED.popleft()
        except IndexError:  # another thread took the last one
            return
        entry = _HANDLES.get(key)
        if entry is None or len(entry[1]):
            continue  # closed already, or another handle holds it
        del _HANDLES[key]
        with contextlib.suppress(Exception):  # a store that cannot commit now never will
            entry[0].close()


def open_store(store: StoreArg, *, read_only: bool | None = None, own_connection: bool = False) -> Store:
    """A store given as one, or opened from its path or URL (None: the default store);
    ``read_only`` and ``own_connection`` as the backends take them."""
    if isinstance(store, Store):
        return store
    _close_dropped()
    if store is None and is_postgres_url(os.environ.get("BATCHAIN_STORE")):
        store = os.environ["BATCHAIN_STORE"]
    if is_postgres_url(store):
        from batchain.store.postgres import PostgresStore  # psycopg: an extra

        assert isinstance(store, str)
        return PostgresStore(store, read_only=bool(read_only), own_connection=own_connection)
    return SQLiteStore(store, read_only=read_only, own_connection=own_connection)


__all__ = [
    "SCHEMA_VERSION",
    "CallRecord",
    "ItemRecord",
    "JobRecord",
    "SQLiteStore",
    "Store",
    "StoreArg",
    "Usage",
    "close_with",
    "default_store_path",
    "is_postgres_url",
    "open_store",
    "share",
]
