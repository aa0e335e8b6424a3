"""Durable storage of jobs, items, calls and provider batches."""

from batchain.store.base import Store
from batchain.store.records import CallRecord, ItemRecord, JobRecord, Usage
from batchain.store.sqlite import SCHEMA_VERSION, SQLiteStore, default_store_path

__all__ = [
    "SCHEMA_VERSION",
    "CallRecord",
    "ItemRecord",
    "JobRecord",
    "SQLiteStore",
    "Store",
    "Usage",
    "default_store_path",
]
