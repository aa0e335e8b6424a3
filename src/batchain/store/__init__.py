"""Durable storage of jobs, items, calls and provider batches."""

import os

from batchain.store.base import Store
from batchain.store.records import CallRecord, ItemRecord, JobRecord, Usage
from batchain.store.sqlite import SCHEMA_VERSION, SQLiteStore, default_store_path

#: a store, or where to open one (None: the default store)
StoreArg = Store | str | os.PathLike[str] | None


def open_store(store: StoreArg) -> Store:
    """A store given as one, or opened from its path (None: the default store)."""
    if isinstance(store, Store):
        return store
    return SQLiteStore(store)


__all__ = [
    "SCHEMA_VERSION",
    "CallRecord",
    "ItemRecord",
    "JobRecord",
    "SQLiteStore",
    "Store",
    "StoreArg",
    "Usage",
    "default_store_path",
    "open_store",
]
