"""The Store protocol on every backend: SQLite and PostgreSQL hold the same records, enforce
the same transitions, fence the same leases and report the same aggregates."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from batchain.errors import LeaseLost, StoreError
from batchain.states import BatchStatus, CallStatus, IllegalTransition, ItemStatus, JobStatus, LinkSource
from batchain.store import SCHEMA_VERSION, JobRecord, Store, Usage, open_store
from batchain.store.records import ProgressSample, ScopeClaim


def _job(store: Store, job_id: str = "j1", mode: str = "batch") -> None:
    now = time.time()
    store.create_job(JobRecord(job_id, JobStatus.CREATED, mode, now, now))


def _batch_calls(store: Store, uid: str, keys: list[str], job_id: str = "j1") -> None:
    begin = [(k, "openai", "gpt-4o-mini", "/v1/chat/completions", f"h-{k}") for k in keys]
    store.batch_intent(uid, job_id, "openai", "openai|u|gpt-4o-mini", keys, {"n": len(keys)}, begin)


def test_jobs_items_and_counts(any_store: str | Path) -> None:
    with open_store(any_store) as store:
        _job(store)
        _job(store, "j2", "realtime")
        assert [j.id for j in store.list_jobs()] == ["j2", "j1"]
        assert [j.id for j in store.list_jobs(None)] == ["j2", "j1"]
        assert [j.id for j in store.list_jobs(1)] == ["j2"]
        store.update_job("j1", n_items=3, inputs_complete=True, options={"a": [1, 2]})
        with pytest.raises(ValueError, match="stats"):  # one writer of stats: record_job_stats
            store.update_job("j1", stats={"x": 1})
        store.add_items("j1", [(0, '"a"'), (1, '"b"'), (2, '{"q": "\\u00e9 %s ?"}')])
        store.add_items("j1", [(0, '"again"')])  # an existing item is left alone
        store.commit()
        job = store.get_job("j1")
        assert job is not None and job.n_items == 3 and job.inputs_complete and job.options == {"a": [1, 2]}
        assert [(i.idx, i.input) for i in store.iter_items("j1")] == [
            (0, '"a"'),
            (1, '"b"'),
            (2, '{"q": "\\u00e9 %s ?"}'),
        ]
        store.finish_items("j1", [(0, ItemStatus.SUCCEEDED, '"A"', None), (2, ItemStatus.FAILED, None, "{}")])
        store.commit()
        assert store.item_counts("j1") == {"pending": 1, "succeeded": 1, "failed": 1}
        assert [i.idx for i in store.iter_items("j1", (ItemStatus.PENDING,))] == [1]
        assert list(store.iter_outputs("j1")) == [(0, '"A"'), (1, None), (2, None)]
        assert store.missing_items("j1", 5) == [3, 4]
        assert store.reset_items("j1", (ItemStatus.FAILED,)) == 1
        assert store.item_counts("j1") == {"pending": 2, "succeeded": 1}
        assert store.cancel_pending_items("j1") == 2
        assert store.item_counts("j1") == {"succeeded": 1, "cancelled": 2}


def test_transitions_are_enforced_in_the_store(any_store: str | Path) -> None:
    with open_store(any_store) as store:
        _job(store)
        store.set_job_status("j1", JobStatus.RUNNING)
        store.set_job_status("j1", JobStatus.COMPLETED)
        with pytest.raises(IllegalTransition):
            store.set_job_status("j1", JobStatus.WAITING)
        store.add_items("j1", [(0, '"a"')])
        store.finish_item("j1", 0, ItemStatus.SUCCEEDED, '"A"')
        with pytest.raises(IllegalTransition):
            store.finish_item("j1", 0, ItemStatus.FAILED, error="{}")
        store.commit()
        # a succeeded call is never overwritten by a late duplicate
        store.begin_call(
            "k", provider="openai", model="m", endpoint="/e", job_id="j1", status=CallStatus.SENT
        )
        store.call_succeeded("k", '{"ok":1}', Usage(10, 2, requests=1), "realtime", Decimal("0.25"))
        store.begin_call(
            "k", provider="openai", model="m", endpoint="/e", job_id="j2", status=CallStatus.SENT
        )
        store.call_failed("k", "boom", retryable=False)
        store.commit()
        call = store.get_call("k")
        assert call is not None and call.status == CallStatus.SUCCEEDED and call.job_id == "j1"
        assert call.usage.input_tokens == 10 and call.attempts == 1
        _batch_calls(store, "b1", ["c1"])
        with pytest.raises(IllegalTransition):
            store.batch_collected("b1")  # creating -> collected skips submitted and ended


def test_provider_batches_and_their_calls(any_store: str | Path) -> None:
    with open_store(any_store) as store:
        _job(store)
        store.add_items("j1", [(i, f'"{i}"') for i in range(4)])
        store.set_waits("j1", [(0, "c0"), (1, "c1"), (2, "c2"), (3, "c3")])
        store.set_waits("j1", [(3, "c3")])  # noted again: replaced, not doubled
        store.link_calls([("j1", f"c{i}", i, LinkSource.PAID) for i in range(4)])
        _batch_calls(store, "b1", ["c0", "c1", "c2"])
        _batch_calls(store, "b2", ["c3"])
        store.batch_submitted("b1", "batch_abc")
        store.batch_submitted("b2", "batch_def")
        assert sorted(store.batch_keys("b1")) == ["c0", "c1", "c2"]
        assert {k: c.status for k, c in store.get_calls(["c0", "c3", "nope"]).items()} == {
            "c0": CallStatus.SUBMITTED,
            "c3": CallStatus.SUBMITTED,
        }
        parked = store.parked_items("j1")
        assert {b: sorted(v) for b, v in parked.items()} == {"b1": [0, 1, 2], "b2": [3]}
        assert sorted((i, k) for i, k, _ in store.waits_of("j1", [0, 3])) == [(0, "c0"), (3, "c3")]
        store.calls_succeeded(
            [
                (k, json.dumps({"k": k}), Usage(3, 4, requests=1), "batch", Decimal("0.5"))
                for k in ("c0", "c1")
            ]
        )
        store.call_requeued("c2", "expired")
        store.batch_ended("b1")
        store.batch_collected("b1")
        store.batch_lost("b2", "the provider lost it")
        store.commit()
        assert store.get_batch("b1") is not None and store.get_batch("b1").status == BatchStatus.COLLECTED  # type: ignore[union-attr]
        assert store.provider_batch_ids("openai") == {"batch_abc", "batch_def"}
        assert [b.id for b in store.job_batches("j1")] == ["b1", "b2"]
        assert [b.id for b in store.job_batches("j1", (BatchStatus.LOST,))] == ["b2"]
        lost = store.get_call("c3")
        assert lost is not None and lost.status == CallStatus.PENDING and lost.batch_id is None
        assert store.job_spent("j1") == Decimal("1.0")
        assert store.job_usage("j1") == Usage(6, 8, requests=2)
        assert store.job_call_stats("j1") == {"paid": 2}
        # the parked items' waits, as a resumed run reads them
        pending = {
            idx: (key, rec.status if rec else None) for idx, _, key, rec in store.iter_pending_waits("j1")
        }
        assert pending[2] == ("c2", CallStatus.PENDING) and pending[0] == ("c0", CallStatus.SUCCEEDED)
        assert store.first_deliveries("j1", [(0, "c0"), (1, "c1")]) == {(0, "c0"), (1, "c1")}
        store.tell("j1", [(0, "c0")])
        assert store.first_deliveries("j1", [(0, "c0"), (1, "c1")]) == {(1, "c1")}
        assert store.link_first([("j1", "c0", 0, LinkSource.REPLAY), ("j1", "c0", 9, LinkSource.REPLAY)]) == 1


def test_reports_read_tokens_tiers_and_cache_writes(any_store: str | Path) -> None:
    """The cost report's aggregates, including what they read inside stored answers (the
    service tier of an OpenAI answer, Anthropic's 1-hour cache writes)."""
    with open_store(any_store) as store:
        _job(store)
        store.add_items("j1", [(0, '"a"'), (1, '"b"')])
        for key, provider in (("o1", "openai"), ("a1", "anthropic")):
            store.begin_call(
                key, provider=provider, model="m", endpoint="/e", job_id="j1", status=CallStatus.SENT
            )
            store.link_call("j1", key, 0, LinkSource.PAID)
        store.link_call("j1", "o1", 1, LinkSource.SHARED)
        openai = {"service_tier": "flex", "usage": {"prompt_tokens": 100}}
        anthropic = {"usage": {"cache_creation": {"ephemeral_1h_input_tokens": 40}}}
        store.call_succeeded(
            "o1", json.dumps(openai), Usage(100, 10, requests=1), "realtime", Decimal("0.01")
        )
        store.call_succeeded("a1", json.dumps(anthropic), Usage(50, 5, 0, 60, requests=1), "realtime")
        store.commit()
        groups = {g.provider: g for g in store.paid_call_groups("j1", (60,))}
        assert groups["openai"].service_tier == "flex" and groups["openai"].bucket == 1
        assert groups["anthropic"].cache_write_1h_tokens == 40 and groups["anthropic"].bucket == 0
        assert groups["openai"].usage == Usage(100, 10, requests=1)
        reused = store.reused_call_groups("j1", (LinkSource.SHARED,))
        assert [(g.source, g.provider, g.usage.input_tokens) for g in reused] == [("shared", "openai", 100)]
        assert store.job_link_counts("j1") == {"paid": 2, "shared": 1}
        assert sorted(store.job_models("j1")) == [("anthropic", "m"), ("openai", "m")]
        assert {idx: len(calls) for idx, calls in store.item_calls("j1").items()} == {0: 2, 1: 1}
        assert len(store.item_call_links("j1")) == 3
        # a finished job's aggregates are kept, and hold until it changes
        store.set_job_status("j1", JobStatus.RUNNING)
        store.set_job_status("j1", JobStatus.COMPLETED)
        first = store.paid_call_groups("j1", (60,))
        assert store.paid_call_groups("j1", (60,)) == first
        assert store.job_failures("j1").calls == 0


def test_leases_fence_writes(any_store: str | Path) -> None:
    """A lease taken over stops the old holder: its writes are undone, its commit raises."""
    with open_store(any_store) as first, open_store(any_store) as second:
        _job(first)
        claim = first.acquire_lease("j1", "host:1", ttl=0.2)
        assert claim.epoch == 1 and first.renew_lease("j1", "host:1", 1, 0.2)
        held = second.acquire_lease("j1", "elsewhere:2", ttl=30)
        assert held.epoch is None and held.holder == "host:1"
        lost: list[LeaseLost] = []
        first.fence("j1", "host:1", 1, lost.append)
        time.sleep(0.3)  # the lease expires
        taken = second.acquire_lease("j1", "elsewhere:2", ttl=30)
        assert taken.epoch == 2
        first.add_items("j1", [(0, '"written by the stalled holder"')])
        with pytest.raises(LeaseLost):
            first.commit()
        assert lost and second.item_counts("j1") == {}


def test_a_lease_surely_held_is_found_without_the_write_lock(store_path: Path) -> None:
    """Workers look at a running job again and again: a lease held by a live process is
    found by a read, and the look takes no write lock from the process that runs it."""
    with open_store(store_path) as store:
        _job(store)
        holder = f"{socket.gethostname()}:{os.getppid()}"  # a live process on this host
        assert store.acquire_lease("j1", holder, ttl=30).epoch == 1
        statements: list[str] = []
        raw = store._db.conn  # type: ignore[attr-defined]  # the SQLite connection, to trace
        raw.set_trace_callback(statements.append)
        try:
            busy = store.acquire_lease("j1", "elsewhere:2", ttl=30)
        finally:
            raw.set_trace_callback(None)
        assert busy.epoch is None and busy.holder == holder
        assert statements and not [s for s in statements if s.startswith(("BEGIN", "UPDATE"))], statements
        # a holder gone from this host is still taken over at once, in the locked step
        _job(store, "j2")
        assert store.acquire_lease("j2", f"{socket.gethostname()}:{_dead_pid()}", ttl=30).epoch == 1
        assert store.acquire_lease("j2", "elsewhere:2", ttl=30).epoch == 2


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_rate_scope_claims_move_a_shared_clock(any_store: str | Path) -> None:
    with open_store(any_store) as store:
        now = time.time()
        claim = ScopeClaim(
            rpm=60.0, tpm=None, now=now, after=0.0, request_s=1.0, token_s=0.0, paused_until=0.0
        )
        a = store.rate_scope("openai|gpt", claim)
        b = store.rate_scope("openai|gpt", claim)
        store.commit()
        assert a.request_from == pytest.approx(now) and b.request_from == pytest.approx(now + 1.0)
        assert b.rpm == 60.0 and b.tpm is None and not b.throttled


def test_progress_compaction_and_prefixes(any_store: str | Path) -> None:
    with open_store(any_store) as store:
        _job(store)
        store.add_items("j1", [(0, '"a"')])
        store.set_waits("j1", [(0, "c0")])
        store.record_progress("j1", ProgressSample(1.0, 0, 0, 1, 0, None, None))
        store.record_progress("j1", ProgressSample(2.0, 1, 0, 1, 1, Decimal("0.5"), 10))
        store.prefix_priming("j1", "lane", "p", "b9", "primer")
        store.commit()
        assert [p.batch_id for p in store.prompt_prefixes("j1")] == ["b9"]
        assert [(s.t, s.cost) for s in store.progress_history("j1")] == [(1.0, None), (2.0, Decimal("0.5"))]
        assert [s.t for s in store.progress_history("j1", since=1.0)] == [2.0]
        assert not store.compact_job("j1").compacted  # not finished
        store.finish_item("j1", 0, ItemStatus.SUCCEEDED, '"A"')
        store.set_job_status("j1", JobStatus.RUNNING)
        store.set_job_status("j1", JobStatus.COMPLETED)
        done = store.compact_job("j1")
        assert done.compacted and done.waits == 1
        assert store.prompt_prefixes("j1") == [] and store.size() > 0


def test_writes_from_many_threads_commit_once_each(any_store: str | Path) -> None:
    """Threads of one process share the store's connection and its transaction."""
    with open_store(any_store) as store:
        _job(store)

        def add(start: int) -> None:
            for i in range(start, start + 50):
                store.add_items("j1", [(i, f'"{i}"')])
                store.commit()

        threads = [threading.Thread(target=add, args=(k * 50,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.item_counts("j1") == {"pending": 200}


def test_a_newer_store_is_refused_unchanged(any_store: str | Path) -> None:
    with open_store(any_store) as store:
        _job(store)
        store._write("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))  # type: ignore[attr-defined]
        store.commit()
    with pytest.raises(StoreError, match="newer than this batchain"):
        open_store(any_store)


def test_a_postgres_store_never_names_its_password(pg_url: str) -> None:
    secret = "pw-0123456789SECRET"
    with_password = pg_url.replace("postgres@", f"postgres:{secret}@", 1)
    with open_store(with_password) as store:  # the test server trusts any password
        assert secret not in store.name and "options" not in store.name
        _job(store)
        with pytest.raises(StoreError) as failed:
            store._write("INSERT INTO no_such_table VALUES (1)")  # type: ignore[attr-defined]
        assert secret not in str(failed.value)
    unreachable = "postgresql://postgres:" + secret + "@127.0.0.1:1/postgres"
    with pytest.raises(StoreError) as refused:
        open_store(unreachable)
    assert secret not in str(refused.value) and "cannot be reached" in str(refused.value)


def test_a_postgres_server_that_never_answers_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connect that gets no answer (a host that accepts and stays silent) ends, after the
    busy timeout, in a one-line StoreError, instead of waiting as long as the OS lets it."""
    monkeypatch.setenv("BATCHAIN_BUSY_TIMEOUT_S", "2")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nothing ever answers
    port = silent.getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match="cannot be reached") as refused:
            open_store(f"postgresql://postgres:pw-SECRET@127.0.0.1:{port}/postgres")
    finally:
        silent.close()
    assert "pw-SECRET" not in str(refused.value)
    assert time.monotonic() - started < 15


def test_a_write_waiting_for_the_postgres_stores_lock_ends(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding the store's write lock: a write waits the busy timeout,
    then fails in one line naming the store, as on SQLite (test_one_process)."""
    import psycopg

    from batchain.store.postgres import _lock_key

    monkeypatch.setenv("BATCHAIN_BUSY_TIMEOUT_S", "0.5")
    with open_store(pg_url) as store, psycopg.connect(pg_url, autocommit=True) as other:
        _job(store)
        database, schema = other.execute("SELECT current_database(), current_schema()").fetchone()  # type: ignore[misc]
        other.execute("SELECT pg_advisory_lock(%s)", (_lock_key(database, schema),))
        started = time.monotonic()
        with pytest.raises(StoreError, match="is locked"):
            store.add_items("j1", [(0, '"a"')])
        assert time.monotonic() - started < 5
        other.execute("SELECT pg_advisory_unlock_all()")
    with open_store(pg_url) as again:  # nothing half-written; the store goes on
        assert again.item_counts("j1") == {}
        again.add_items("j1", [(0, '"a"')])
        again.commit()
        assert again.item_counts("j1") == {"pending": 1}
