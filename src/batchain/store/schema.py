"""The store's tables and indexes, one schema for every backend.

Written in SQLite's words; the PostgreSQL store reads the same text through its dialect
(:mod:`batchain.store.postgres`), so both hold the same tables, columns, keys and indexes,
at the same :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import re

from batchain.errors import StoreError

__all__ = ["ADDED_COLUMNS", "DROPPED_INDEXES", "SCHEMA", "SCHEMA_OBJECTS", "SCHEMA_VERSION", "check_version"]

#: 2: per-job item counters (``job_item_counts``), calls by provider batch, provider batches by
#: job, jobs by creation time, and what the provider last said of each batch.
#: 3: ``calls`` is a rowid table (see :func:`batchain.store.sqlite._set_aside_calls`); ``jobs.input_ref``
#: (``told``, added later, kept the version: it is a table of its own that an older build of
#: schema 3 never reads, and a schema-3 store gets it on open like any missing table; so did
#: ``rate_scopes``, the rate-limit scopes every process on the store paces by, and
#: ``prompt_prefixes``, the prompt prefixes a job's batches prime for the provider's cache)
#: 4: ``job_calls`` is keyed by item before call (see :func:`batchain.store.sqlite._set_aside_job_calls`)
#: (``job_progress``, each run's progress over time for the dashboard, kept the version
#: as ``told`` did; so did ``job_runners`` and ``item_claims``, the processes running a
#: job's items and the chunks of items each holds: see :mod:`batchain.store.claims`)
SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    mode TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    chain_ref TEXT,
    options TEXT NOT NULL DEFAULT '{}',
    n_items INTEGER NOT NULL DEFAULT 0,
    inputs_complete INTEGER NOT NULL DEFAULT 0,
    note TEXT,
    stats TEXT NOT NULL DEFAULT '{}',
    lease_owner TEXT,
    lease_until REAL,
    lease_epoch INTEGER NOT NULL DEFAULT 0,
    input_ref TEXT
);
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_status ON items (job_id, status, idx);
CREATE TABLE IF NOT EXISTS job_item_counts (
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (job_id, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    tier TEXT,
    job_id TEXT,
    request TEXT,
    response TEXT,
    error TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    cost TEXT,
    request_hash TEXT,
    batch_id TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_sent ON calls (job_id) WHERE status = 'sent';
CREATE INDEX IF NOT EXISTS calls_failed ON calls (job_id) WHERE status = 'failed';
CREATE INDEX IF NOT EXISTS calls_by_batch ON calls (batch_id) WHERE batch_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS job_calls (
    job_id TEXT NOT NULL,
    key TEXT NOT NULL,
    item_idx INTEGER NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (job_id, item_idx, key, source)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_memo (
    job_id TEXT NOT NULL,
    query TEXT NOT NULL,
    stamp REAL NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (job_id, query)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS waits (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS told (
    job_id TEXT NOT NULL,
    item_idx INTEGER NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (job_id, item_idx, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS provider_batches (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    lane TEXT NOT NULL,
    status TEXT NOT NULL,
    provider_batch_id TEXT,
    n_calls INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    info TEXT,
    missing_polls INTEGER NOT NULL DEFAULT 0,
    missing_since REAL,
    provider_status TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    seen_at REAL
);
CREATE TABLE IF NOT EXISTS rate_scopes (
    scope TEXT PRIMARY KEY,
    rpm REAL,
    tpm REAL,
    next_request_at REAL NOT NULL DEFAULT 0,
    next_token_at REAL NOT NULL DEFAULT 0,
    paused_until REAL NOT NULL DEFAULT 0,
    throttled INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    burst_s REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS prompt_prefixes (
    job_id TEXT NOT NULL,
    lane TEXT NOT NULL,
    prefix TEXT NOT NULL,
    status TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    primer TEXT NOT NULL,
    until REAL NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (job_id, lane, prefix)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_progress (
    job_id TEXT NOT NULL,
    t REAL NOT NULL,
    items_done INTEGER NOT NULL,
    items_failed INTEGER NOT NULL,
    items_total INTEGER NOT NULL,
    calls_paid INTEGER NOT NULL,
    cost TEXT,
    tokens INTEGER,
    PRIMARY KEY (job_id, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_runners (
    job_id TEXT NOT NULL,
    runner TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (job_id, runner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS item_claims (
    job_id TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    runner TEXT NOT NULL,
    PRIMARY KEY (job_id, chunk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS provider_batches_by_job ON provider_batches (job_id, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
"""

# Why each index exists (every index costs a write on every insert, and on every update of
# a column it holds or filters on):
# - items_by_status: pending items of a job (resume), failed ones (status, retry). Item
#   status changes update it: one entry per item change, the price of finding the few
#   pending items of a large job without walking all of it.
# - calls_sent, calls_failed: partial, so only calls in flight or failed are in them.
# - calls_by_batch: the calls of a provider batch (submitting, collecting, losing one).
#   Partial on batch_id, which is written once when a call is put in a batch (and cleared
#   if the batch is lost or abandoned); status changes do not touch it, so marking a batch's
#   calls succeeded costs nothing more. Realtime calls are never in it.
# - provider_batches_by_job, jobs_by_created: tiny tables written a few times per batch or
#   job; they keep `batchain jobs`, `status` and every poll off a scan.
# - told has no index but its key: its rows are looked up by (job, item, call) only.
# - rate_scopes: one small row per rate-limit scope, read and written by its key only.
# - prompt_prefixes: a few rows per job, read by job (its key's first column) once a run.
# - job_runners, item_claims: a few rows per running job (its runners, and the chunks of
#   items they hold now: a chunk's row goes when its items are done), read by job.
# - job_item_counts is not an index but a counter row per (job, item status), changed once
#   per store call that changes items (not once per item), so counting a job's items is one
#   lookup instead of a walk over them.

#: columns added after a table was first shipped: (table, column, declaration). Stores
#: made by an older build get them on open; nothing is ever dropped or renamed.
ADDED_COLUMNS = [
    ("jobs", "stats", "TEXT NOT NULL DEFAULT '{}'"),
    ("jobs", "lease_owner", "TEXT"),
    ("jobs", "lease_until", "REAL"),
    ("jobs", "lease_epoch", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "input_ref", "TEXT"),
    ("calls", "cost", "TEXT"),
    ("calls", "request_hash", "TEXT"),
    ("provider_batches", "missing_polls", "INTEGER NOT NULL DEFAULT 0"),
    ("provider_batches", "missing_since", "REAL"),
    ("provider_batches", "provider_status", "TEXT"),
    ("provider_batches", "done", "INTEGER NOT NULL DEFAULT 0"),
    ("provider_batches", "total", "INTEGER NOT NULL DEFAULT 0"),
    ("provider_batches", "seen_at", "REAL"),
    ("rate_scopes", "burst_s", "REAL"),
    ("job_progress", "tokens", "INTEGER"),
]

#: indexes of earlier builds, dropped on open: every status change of every call had to
#: update them, a large part of a big batch's store time, for queries that only ever look
#: for calls in flight or failed (``calls_sent``, ``calls_failed``)
DROPPED_INDEXES = ("calls_by_status", "calls_by_job")

#: the tables and indexes the schema creates
SCHEMA_OBJECTS = tuple(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA))


def check_version(name: str, version: int | None) -> None:
    """Refuse a store written by a newer batchain (``version`` above this build's), before
    anything in it is changed."""
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"store {name} has schema version {version}, newer than this batchain "
            f"({SCHEMA_VERSION}); upgrade batchain"
        )
