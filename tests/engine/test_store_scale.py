"""The store at any size: every query uses an index, item counts are counters, older
stores are migrated.

The query-plan test drives every method of the :class:`~batchain.store.base.Store`
Protocol, records each SQL statement the SQLite store runs (with its parameters, so a
partial index is judged as the real statement sees it), and asks SQLite how it would run
it: none may walk a whole large table (``SCAN calls`` and the like). A new Store method
must be added to the driver below, or the test fails.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from batchain.states import BatchStatus, CallStatus, ItemStatus, JobStatus, LinkSource, PrefixStatus
from batchain.store import SCHEMA_VERSION, JobRecord, SQLiteStore, Store, Usage
from batchain.store.records import ProgressSample, ScopeClaim

#: tables that grow with the number of calls or items
LARGE = {"calls", "items", "job_calls", "waits", "job_item_counts", "told"}


class Recorder:
    """A connection that notes every statement (and its first parameters) it runs."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.seen: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self.seen.append((sql, tuple(params)))
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        rows = list(rows)
        if rows:
            self.seen.append((sql, tuple(rows[0])))
        return self.conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def _job(store: SQLiteStore, job_id: str, status: JobStatus = JobStatus.CREATED) -> None:
    now = time.time()
    store.create_job(JobRecord(job_id, JobStatus.CREATED, "batch", now, now))
    if status != JobStatus.CREATED:
        store.set_job_status(job_id, JobStatus.RUNNING)
    if status not in (JobStatus.CREATED, JobStatus.RUNNING):
        store.set_job_status(job_id, status)


def _drive(store: SQLiteStore) -> set[str]:
    """Call every Store method on a job with items, calls and provider batches; returns the
    names called."""
    called: set[str] = set()

    def call(name: str, *args: Any, **kw: Any) -> Any:
        called.add(name)
        result = getattr(store, name)(*args, **kw)
        if hasattr(result, "__next__"):
            result = list(result)
        return result

    keys = [f"{i:064x}" for i in range(40)]
    _job(store, "other")
    call("create_job", JobRecord("j", JobStatus.CREATED, "batch", time.time(), time.time()))
    call("get_job", "j")
    call("list_jobs", 20)
    assert call("job_ids", (JobStatus.CREATED,)) == ["other", "j"]  # oldest first
    call("set_job_status", "j", JobStatus.RUNNING)
    claim = call("acquire_lease", "j", "me:1", 30.0)
    call("renew_lease", "j", "me:1", claim.epoch, 30.0)
    call("fence", "j", "me:1", claim.epoch, lambda exc: None)
    call("watch", "j", lambda exc: None)
    call("update_job", "j", n_items=40, inputs_complete=True)
    call("record_job_stats", "j", {"sent": 1}, runner="me:1", items=2)
    call("add_items", "j", [(i, json.dumps(i)) for i in range(40)])
    call("begin_calls", [(k, "openai", "m", "/v1/chat/completions", "h") for k in keys[:30]], "j")
    call(
        "begin_call",
        keys[30],
        provider="openai",
        model="m",
        endpoint="/v1/chat/completions",
        job_id="j",
        status=CallStatus.SENT,
    )
    call("set_waits", "j", [(i, keys[i]) for i in range(30)])
    call("commit")
    call("get_call", keys[0])
    call("get_calls", keys[:20])
    call("iter_pending_waits", "j")
    call("pending_waits_of", "j", [3, 1, 2])
    call("waits_of", "j", [3, 1, 2])
    call("iter_items", "j", (ItemStatus.PENDING,))
    call("join_job", "j", "me:1#1", 30.0)
    call("join_job", "j", "me:1#h", 30.0)
    assert call("renew_seat", "j", "me:1#h", 30.0)
    store.join_job("other", "me:1#o", 30.0)
    call("fence_runner", "other", "me:1#o", lambda exc: None)
    assert call("claim_chunk", "j", "me:1#1", 10) == 0
    assert call("claim_chunk", "j", "me:1#h", 10) == 1  # chunk 0 is held
    assert not call("take_chunk", "j", 1, "me:1#1") and call("take_chunk", "j", 2, "me:1#1")
    assert call("pending_elsewhere", "j", "me:1#1", 10) == 10
    assert [(r.runner, r.chunks) for r in call("job_runners", "j")] == [("me:1#1", 2), ("me:1#h", 1)]
    assert [idx for idx, _ in call("pending_in", "j", 10, 20)] == list(range(10, 20))
    call("release_chunk", "j", 1, "me:1#h")
    call("leave_job", "j", "me:1#h")
    call("unfence", "other")
    call("batch_intent", "b1", "j", "openai", "openai|u|m", keys[:20], {"round": 1, "nonce": "b1"})
    call("batch_submitted", "b1", "batch_1")
    parked = call("parked_items", "j")
    assert {b: sorted(idxs) for b, idxs in parked.items()} == {"b1": list(range(20))}
    skipped = [row[0] for row in call("iter_pending_waits", "j", skip_batches={"b1"})]
    assert skipped == list(range(20, 40))
    call("batch_seen", "b1", "in_progress", 5, 20)
    call("batch_missing", "b1", 1, time.time())
    call("batch_keys", "b1")
    call("job_batches", "j", (BatchStatus.SUBMITTED, BatchStatus.ENDED))
    call("waits_at_provider", "j")
    call("get_batch", "b1")
    call("provider_batch_ids", "openai")
    call("batch_ended", "b1")
    answered = [(k, '{"x":1}', Usage(10, 2, requests=1), "batch", Decimal("0.001")) for k in keys[:19]]
    call("calls_succeeded", answered)
    call("call_requeued", keys[19], "missing")
    call("link_calls", [("j", k, i, LinkSource.PAID) for i, k in enumerate(keys[:19])])
    call("link_first", [("j", keys[0], 0, LinkSource.REPLAY), ("j", keys[1], 7, LinkSource.REPLAY)])
    call("first_deliveries", "j", [(0, keys[0]), (7, keys[1]), (1, keys[1])])
    call("tell", "j", [(0, keys[0]), (1, keys[1])])
    call("batch_collected", "b1")
    call("batch_intent", "b2", "j", "openai", "openai|u|m", keys[20:25], {"round": 2, "nonce": "b2"})
    call("batch_abandoned", "b2")
    call("batch_intent", "b3", "j", "openai", "openai|u|m", keys[25:30], {"round": 2, "nonce": "b3"})
    call("batch_submitted", "b3", "batch_3")
    call("batch_lost", "b3", "forgotten")
    call("call_succeeded", keys[30], '{"x":2}', Usage(5, 1, requests=1), "realtime", None)
    call("call_failed", keys[20], "bad request", retryable=False)
    call("link_call", "j", keys[30], 30, LinkSource.PAID)
    call("link_call", "j", keys[0], 31, LinkSource.SHARED)
    call("calls_in_status", CallStatus.SENT, "j")
    call("calls_in_status", CallStatus.SENT)
    call("finish_items", "j", [(i, ItemStatus.SUCCEEDED, '"ok"', None) for i in range(19)])
    call("finish_item", "j", 20, ItemStatus.FAILED, None, '{"type":"X","message":"m"}')
    call("item_counts", "j")
    call("missing_items", "j", 40)
    call("iter_items", "j", (ItemStatus.FAILED,))
    call("iter_items", "j", (ItemStatus.FAILED, ItemStatus.CANCELLED))
    call("iter_outputs", "j")
    call("job_usage", "j")
    call("job_spent", "j")
    call("item_calls", "j")
    call("item_usage", "j")
    call("job_call_stats", "j")
    call("job_models", "j")
    call("paid_call_groups", "j", (200_000,))
    call("reused_call_groups", "j", (LinkSource.CACHE, LinkSource.SHARED), (200_000,))
    call("item_call_links", "j", (200_000,))
    call("job_link_counts", "j")
    call("job_failures", "j")
    call("reset_items", "j", (ItemStatus.FAILED, ItemStatus.CANCELLED))
    call("cancel_pending_items", "j")
    call("commit_soon")
    now = time.time()
    call("rate_scope", "openai|u|k|m", ScopeClaim(now=now, request_s=0.25, token_s=0.25, rpm=600.0))
    call("rate_scope", "openai|u|k|m", ScopeClaim(now=now, after=now + 1, paused_until=now + 2))
    call("prefix_priming", "j", "anthropic|u|m", "p1", "b9", keys[0])
    call("prefix_settled", "j", "anthropic|u|m", "p1", PrefixStatus.WRITTEN, now + 3600)
    assert [p.prefix for p in call("prompt_prefixes", "j")] == ["p1"]
    call("prefix_dropped", "j", "anthropic|u|m", "p1")
    call("record_progress", "j", ProgressSample(now, 1, 0, 2, 1, Decimal("0.01")))
    assert [s.items_done for s in call("progress_history", "j", since=now - 1)] == [1]

    async def settle() -> None:
        called.add("durable")
        await store.durable()

    asyncio.run(settle())
    call("unwatch", "j")
    call("unfence", "j")
    call("release_lease", "j", "me:1", claim.epoch)
    call("set_job_status", "j", JobStatus.CANCELLED)
    call("compact_job", "j")
    call("size")
    call("vacuum")
    call("commit")
    return called


def _aliases(sql: str) -> dict[str, str]:
    """Table of each name a statement's plan may use: tables and their aliases."""
    names = {t: t for t in LARGE}
    for table, alias in re.findall(r"\b(?:FROM|JOIN|UPDATE)\s+(\w+)\s+(?:AS\s+)?(\w+)", sql, re.I):
        if alias.upper() not in {"WHERE", "SET", "INDEXED", "LEFT", "JOIN", "ON", "GROUP", "ORDER"}:
            names[alias] = table
    return names


def _scans(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[str]:
    """The plan steps of ``sql`` that walk a whole large table (a partial index, which holds
    only calls in flight or failed, may be walked)."""
    partial = {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql LIKE '%WHERE%'")
    }
    names = _aliases(sql)
    bad = []
    for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params):
        detail = row[3]
        m = re.match(r"SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?", detail)
        if m and names.get(m.group(1)) in LARGE and m.group(2) not in partial:
            bad.append(detail)
    return bad


def test_no_store_query_walks_a_whole_large_table(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")
    recorder = Recorder(store._conn)
    store._conn = recorder  # type: ignore[assignment]
    called = _drive(store)

    protocol = {n for n, v in vars(Store).items() if callable(v) and not n.startswith("_")}
    # (close is called at the end: the plans are asked of its connection first)
    assert protocol - called == {"close"}, "add the new Store methods to _drive"

    conn = recorder.conn
    statements = {(sql, params) for sql, params in recorder.seen if sql.lstrip().split()[0].upper() in _DML}
    assert len({sql for sql, _ in statements}) > 50  # the driver reached the store's queries
    bad = {}
    for sql, params in statements:
        scans = _scans(conn, sql, params)
        if scans:
            bad[" ".join(sql.split())] = scans
    assert bad == {}
    store.close()


_DML = {"SELECT", "UPDATE", "DELETE", "INSERT", "WITH"}


def test_the_check_sees_a_full_scan(tmp_path: Path) -> None:
    """The plan check itself: a query by a column with no index is caught, through an alias."""
    store = SQLiteStore(tmp_path / "s.sqlite")
    conn = store._conn
    assert _scans(conn, "SELECT c.key FROM calls c WHERE c.model=?", ("m",)) == ["SCAN c"]
    assert _scans(conn, "SELECT key FROM calls WHERE status=?", ("succeeded",)) == ["SCAN calls"]
    assert _scans(conn, "SELECT key FROM calls WHERE status='sent'", ()) == []  # partial index
    assert _scans(conn, "SELECT key FROM calls WHERE batch_id=?", ("b",)) == []
    store.close()


# -- item counters ---------------------------------------------------------------------------------


def _counted(store: SQLiteStore, job_id: str) -> dict[str, int]:
    rows = store._read("SELECT status, COUNT(*) AS n FROM items WHERE job_id=? GROUP BY status", (job_id,))
    return {r["status"]: r["n"] for r in rows}


def test_item_counters_follow_every_item_change(store_path: Path) -> None:
    rng = random.Random(7)
    with SQLiteStore(store_path) as store:
        _job(store, "j", JobStatus.RUNNING)
        _job(store, "k", JobStatus.RUNNING)
        store.add_items("k", [(0, "0")])
        n = 0
        for _ in range(60):
            op = rng.choice(["add", "finish", "reset", "cancel", "readd"])
            if op == "add":
                store.add_items("j", [(n + i, str(n + i)) for i in range(rng.randint(1, 20))])
                n = max(r.idx for r in store.iter_items("j")) + 1
            elif op == "readd" and n:  # existing items are left alone: not counted twice
                store.add_items("j", [(rng.randrange(n), "x") for _ in range(5)])
            elif op == "finish":
                pending = [r.idx for r in store.iter_items("j", (ItemStatus.PENDING,))]
                picked = rng.sample(pending, min(len(pending), rng.randint(0, 8)))
                status = rng.choice([ItemStatus.SUCCEEDED, ItemStatus.FAILED])
                store.finish_items("j", [(i, status, None, None) for i in picked])
            elif op == "reset":
                store.reset_items("j", (ItemStatus.FAILED, ItemStatus.CANCELLED))
            elif op == "cancel" and rng.random() < 0.3:
                store.cancel_pending_items("j")
            assert store.item_counts("j") == _counted(store, "j")
        store.commit()
        assert store.item_counts("k") == {"pending": 1}


def test_a_refused_finish_counts_only_what_changed(store_path: Path) -> None:
    from batchain.states import IllegalTransition

    with SQLiteStore(store_path) as store:
        _job(store, "j", JobStatus.RUNNING)
        store.add_items("j", [(0, "0"), (1, "1")])
        store.finish_item("j", 0, ItemStatus.SUCCEEDED, '"a"')
        with pytest.raises(IllegalTransition):
            store.finish_items(
                "j", [(0, ItemStatus.SUCCEEDED, None, None), (1, ItemStatus.SUCCEEDED, None, None)]
            )
        assert store.item_counts("j") == _counted(store, "j") == {"succeeded": 2}


def _make_v1(path: Path) -> None:
    """Turn a store into what schema version 1 left: no counters, no new indexes or columns."""
    con = sqlite3.connect(path)
    con.executescript(
        """
        DROP TABLE job_item_counts;
        DROP INDEX calls_by_batch; DROP INDEX provider_batches_by_job; DROP INDEX jobs_by_created;
        ALTER TABLE provider_batches DROP COLUMN provider_status;
        ALTER TABLE provider_batches DROP COLUMN done;
        ALTER TABLE provider_batches DROP COLUMN total;
        ALTER TABLE provider_batches DROP COLUMN seen_at;
        ALTER TABLE jobs DROP COLUMN input_ref;
        UPDATE meta SET value='1' WHERE key='schema_version';
        """
    )
    con.commit()
    con.close()


def test_an_older_store_gets_counters_and_indexes_on_open(store_path: Path) -> None:
    with SQLiteStore(store_path) as store:
        _job(store, "j", JobStatus.RUNNING)
        store.add_items("j", [(i, str(i)) for i in range(10)])
        store.finish_items("j", [(i, ItemStatus.SUCCEEDED, None, None) for i in range(4)])
        store.batch_intent("b", "j", "openai", "lane", [], {})
    _make_v1(store_path)

    # read-only, an older store is not migrated: counts come from the items
    with SQLiteStore(store_path, read_only=True) as old:
        assert old.item_counts("j") == {"pending": 6, "succeeded": 4}
        assert old.job_batches("j")[0].provider_status is None
        assert old.get_job("j").input_ref is None  # type: ignore[union-attr]
    with SQLiteStore(store_path) as store:
        assert store.item_counts("j") == {"pending": 6, "succeeded": 4}
        version = store._read("SELECT value FROM meta WHERE key='schema_version'")[0][0]
        assert int(version) == SCHEMA_VERSION == 4
        names = {r[0] for r in store._read("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"calls_by_batch", "provider_batches_by_job", "jobs_by_created"} <= names
        assert "input_ref" in {r[1] for r in store._read("PRAGMA table_info(jobs)")}
        store.batch_seen("b", "in_progress", 1, 2)
        store.commit()
    with SQLiteStore(store_path) as again:  # migrated once: counters not added twice
        assert again.item_counts("j") == {"pending": 6, "succeeded": 4}
        assert again.get_batch("b").provider_status == "in_progress"  # type: ignore[union-attr]


# -- a finished job's report aggregates are kept ---------------------------------------------------


def _finished_job(store: SQLiteStore) -> None:
    _job(store, "j", JobStatus.RUNNING)
    store.add_items("j", [(0, "0"), (1, "1")])
    store.begin_calls([("k0", "openai", "m", "/e", "h0"), ("k1", "openai", "m", "/e", "h1")], "j")
    store.calls_succeeded([("k0", "{}", Usage(10, 2, requests=1), "batch", None)])
    store.call_failed("k1", "bad", retryable=False)
    store.link_calls([("j", "k0", 0, LinkSource.PAID)])
    store.finish_items("j", [(0, ItemStatus.SUCCEEDED, '"a"', None), (1, ItemStatus.FAILED, None, "{}")])
    store.set_job_status("j", JobStatus.COMPLETED)


def _memos(store: SQLiteStore) -> int:
    return int(store._read("SELECT COUNT(*) FROM job_memo")[0][0])


def test_a_finished_jobs_aggregates_are_kept_until_it_changes(store_path: Path) -> None:
    with SQLiteStore(store_path) as store:
        _finished_job(store)
        first = (store.job_usage("j"), store.job_failures("j"), store.paid_call_groups("j", (100,)))
        assert _memos(store) == 3
        # later reads come from job_memo, equal to what the rows give
        assert (store.job_usage("j"), store.job_failures("j"), store.paid_call_groups("j", (100,))) == first
        assert first[0].input_tokens == 10 and first[1].items == 1
        # a retry resets the failed item: the kept aggregates are forgotten
        assert store.reset_items("j", (ItemStatus.FAILED,)) == 1
        assert _memos(store) == 0
        assert store.job_failures("j").items == 0
        store.set_job_status("j", JobStatus.RUNNING)
        store.link_calls([("j", "k0", 1, LinkSource.SHARED)])
        assert store.job_link_counts("j") == {"paid": 1, "shared": 1}
        assert _memos(store) == 0  # a running job's aggregates are never kept


def test_an_aggregate_computed_before_a_job_changed_is_not_kept(store_path: Path) -> None:
    """Another process changes the job while this one computes: what it computed is not kept."""
    with SQLiteStore(store_path) as store, SQLiteStore(store_path) as other:
        _finished_job(store)

        original = store._job_link_counts

        def meanwhile(job_id: str) -> dict[str, int]:
            counts = original(job_id)
            other.set_job_status("j", JobStatus.RUNNING)  # a retry starts...
            other.link_calls([("j", "k0", 1, LinkSource.SHARED)])
            other.set_job_status("j", JobStatus.COMPLETED)  # ...and ends
            other.commit()
            return counts

        store._job_link_counts = meanwhile  # type: ignore[method-assign]
        assert store.job_link_counts("j") == {"paid": 1}  # what it read, before the retry
        assert _memos(store) == 0
        del store._job_link_counts
        assert store.job_link_counts("j") == {"paid": 1, "shared": 1}


def _make_v2_calls(path: Path) -> None:
    """Give a store schema 2's ``calls``: a WITHOUT ROWID table, with its indexes."""
    con = sqlite3.connect(path)
    sql = con.execute("SELECT sql FROM sqlite_master WHERE name='calls'").fetchone()[0]
    of_calls = "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name='calls' AND sql IS NOT NULL"
    indexes = [r[0] for r in con.execute(of_calls)]
    con.executescript(
        "ALTER TABLE calls RENAME TO calls_v3;"
        + sql.rstrip().rstrip(";")
        + " WITHOUT ROWID;"
        + "INSERT INTO calls SELECT * FROM calls_v3; DROP TABLE calls_v3;"
        + ";".join(indexes)
        + ";"
        + "UPDATE meta SET value='2' WHERE key='schema_version';"
    )
    con.commit()
    con.close()


def test_calls_of_a_schema_2_store_move_to_a_rowid_table(store_path: Path) -> None:
    begin = [(f"k{i}", "openai", "gpt-4o-mini", "", f"h{i}") for i in range(5)]
    with SQLiteStore(store_path) as store:
        _job(store, "j", JobStatus.RUNNING)
        store.batch_intent("b", "j", "openai", "lane", [k for k, *_ in begin], {}, begin)
        store.batch_submitted("b", "batch_1")
        store.calls_succeeded([("k0", '{"ok": 1}', Usage(3, 4), "batch", None)])
        store.commit()
    _make_v2_calls(store_path)
    assert "WITHOUT ROWID" in _table_sql(store_path, "calls")

    with SQLiteStore(store_path) as store:
        assert "WITHOUT ROWID" not in _table_sql(store_path, "calls")
        calls = store.get_calls([f"k{i}" for i in range(6)])
        assert sorted(calls) == [f"k{i}" for i in range(5)]
        assert calls["k0"].response == '{"ok": 1}' and calls["k0"].usage.output_tokens == 4
        assert {c.batch_id for c in calls.values()} == {"b"}
        assert sorted(store.batch_keys("b")) == [f"k{i}" for i in range(5)]
        names = {r[0] for r in store._read("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"calls_sent", "calls_failed", "calls_by_batch"} <= names
        assert "calls_old" not in {r[0] for r in store._read("SELECT name FROM sqlite_master")}


def test_links_of_a_schema_3_store_are_keyed_by_item_after_open(store_path: Path) -> None:
    links = [("j", f"k{9 - i}", i, LinkSource.PAID.value) for i in range(10)]
    with SQLiteStore(store_path) as store:
        _job(store, "j", JobStatus.RUNNING)
        store.link_calls([*links, ("j", "k0", 3, LinkSource.SHARED.value)])
        store.commit()
    con = sqlite3.connect(store_path)
    con.executescript(
        "ALTER TABLE job_calls RENAME TO v4;"
        "CREATE TABLE job_calls (job_id TEXT NOT NULL, key TEXT NOT NULL, item_idx INTEGER NOT NULL,"
        " source TEXT NOT NULL, PRIMARY KEY (job_id, key, item_idx, source)) WITHOUT ROWID;"
        "INSERT INTO job_calls SELECT job_id, key, item_idx, source FROM v4; DROP TABLE v4;"
        "UPDATE meta SET value='3' WHERE key='schema_version';"
    )
    con.commit()
    con.close()

    with SQLiteStore(store_path) as store:
        assert "PRIMARY KEY (job_id, item_idx, key, source)" in _table_sql(store_path, "job_calls")
        rows = store._read("SELECT job_id, key, item_idx, source FROM job_calls")
        assert [tuple(r) for r in rows] == sorted(
            [*links, ("j", "k0", 3, "shared")], key=lambda r: (r[0], r[2], r[1], r[3])
        )
        # the item-first key answers the (job, call, item) lookup of who still awaits an answer
        assert store.first_deliveries("j", [(0, "k9"), (3, "k0"), (3, "k6"), (4, "k1")]) == {
            (0, "k9"),
            (3, "k6"),
        }
        assert "job_calls_old" not in {r[0] for r in store._read("SELECT name FROM sqlite_master")}


def _table_sql(path: Path, table: str) -> str:
    con = sqlite3.connect(path)
    try:
        return str(con.execute("SELECT sql FROM sqlite_master WHERE name=?", (table,)).fetchone()[0])
    finally:
        con.close()


def test_progress_samples_of_a_store_without_their_tokens(store_path: Path) -> None:
    with SQLiteStore(store_path) as store:
        _job(store, "j", JobStatus.RUNNING)
        store.record_progress("j", ProgressSample(1.0, 1, 0, 5, 1, Decimal("0.5"), 40))
        store.commit()
    con = sqlite3.connect(store_path)  # as the build before tokens were sampled left it
    con.execute("ALTER TABLE job_progress DROP COLUMN tokens")
    con.commit()
    con.close()

    # read-only, as the dashboard opens it: not migrated, the samples say no tokens
    with SQLiteStore(store_path, read_only=True) as store:
        assert store.progress_history("j") == [ProgressSample(1.0, 1, 0, 5, 1, Decimal("0.5"), None)]
    # opened to write, it gains the column; the old samples still have no tokens
    with SQLiteStore(store_path) as store:
        store.record_progress("j", ProgressSample(2.0, 2, 0, 5, 2, Decimal(1), 80))
        store.commit()
        assert [s.tokens for s in store.progress_history("j")] == [None, 80]
