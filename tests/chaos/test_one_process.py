"""Several jobs on one store (issue 12, case 13): two ``arun`` jobs in one process, on the
default store or on one explicit path, both run side by side and complete (the second used
to fail with ``database is locked`` after 30 s); so do two processes on one store; and a
lock held too long by another process is one clear ``StoreError``."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda

import batchain
from batchain.errors import LeaseLost, StoreError
from batchain.sandbox import Sandbox
from batchain.store import SQLiteStore
from batchain.store.records import JobRecord
from tests.engine.conftest import make_openai

HERE = Path(__file__).parent
pytestmark = pytest.mark.timeout(180)
FAST = dict(batch_validating_s=0.02, batch_processing_s=0.3, batch_finalizing_s=0.02)


def _chain(sb: Sandbox, model: str) -> Runnable[Any, Any]:
    gpt = make_openai(sb, model)
    return ChatPromptTemplate.from_template("Summarise item {n}") | gpt | StrOutputParser()


def _sync_chain(sb: Sandbox, model: str) -> Runnable[Any, Any]:
    """A sync step that calls the model: it runs on the job's own threads."""
    gpt = make_openai(sb, model)
    return RunnableLambda(lambda row: str(gpt.invoke(f"Summarise item {row['n']}").content))


def _check(job: batchain.Job, n: int) -> None:
    assert job.status == batchain.JobStatus.COMPLETED, job.record.note
    results = job.results()
    assert [r.index for r in results] == list(range(n))
    assert all(r.ok and r.output for r in results)


def _check_ledger(sb: Sandbox, calls: int, tier: str) -> None:
    ledger = sb.ledger()
    assert not sb.duplicates(), "a request was billed twice"
    assert len(ledger) == calls
    assert {e.tier for e in ledger} == {tier}


def _spans_overlap(sb: Sandbox, a: str, b: str) -> bool:
    """Did the two models' requests (one model a job) run at the same time?"""
    times: dict[str, list[float]] = {a: [], b: []}
    for e in sb.ledger():
        times[e.model].append(e.ts)
    return min(times[a]) < max(times[b]) and min(times[b]) < max(times[a])


async def _both(first: Awaitable[batchain.Job], second: Awaitable[batchain.Job]) -> list[batchain.Job]:
    return list(await asyncio.gather(first, second))


@pytest.mark.parametrize("where", ["default", "explicit"])
def test_two_realtime_jobs_in_one_process_share_one_store(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    sandbox.configure(latency_ms=20, latency_jitter_ms=10)
    path = tmp_path / "store.sqlite"
    monkeypatch.setenv("BATCHAIN_STORE", str(path))
    store = None if where == "default" else str(path)
    n_long, n_short = 400, 150
    # the long job has sync steps and starts first; the short one ends first, and the
    # threads it leaves behind are its own (the long job's keep working)
    long = batchain.arun(
        _sync_chain(sandbox, "gpt-4o-mini"),
        [{"n": i} for i in range(n_long)],
        store=store,
        job_id="long",
        max_concurrency=16,
        threads=16,
        progress=False,
    )
    short = batchain.arun(
        _chain(sandbox, "gpt-4.1-mini"),
        [{"n": 10_000 + i} for i in range(n_short)],
        store=store,
        job_id="short",
        max_concurrency=16,
        progress=False,
    )
    start = time.monotonic()
    jobs = asyncio.run(_both(long, short))
    elapsed = time.monotonic() - start
    _check(jobs[0], n_long)
    _check(jobs[1], n_short)
    assert jobs[0].store.path == jobs[1].store.path == path
    _check_ledger(sandbox, n_long + n_short, "realtime")
    assert _spans_overlap(sandbox, "gpt-4o-mini", "gpt-4.1-mini")  # side by side, not in turn
    assert elapsed < 30, f"{elapsed:.0f} s: the old failure waited out the 30 s busy timeout"


def test_two_batch_jobs_in_one_process_share_one_store(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(**FAST)
    path = tmp_path / "store.sqlite"
    n = 200
    first = batchain.arun(
        _chain(sandbox, "gpt-4o-mini"),
        [{"n": i} for i in range(n)],
        mode="batch",
        store=path,
        job_id="b1",
        progress=False,
        poll_min=0.05,
        poll_max=0.2,
    )
    second = batchain.arun(
        _sync_chain(sandbox, "gpt-4.1-mini"),  # not the bulk path: item coroutines park
        [{"n": 10_000 + i} for i in range(n)],
        mode="batch",
        store=SQLiteStore(path),  # a store object of its own on the same file
        job_id="b2",
        threads=64,
        progress=False,
        poll_min=0.05,
        poll_max=0.2,
    )
    jobs = asyncio.run(_both(first, second))
    for job in jobs:
        _check(job, n)
    _check_ledger(sandbox, 2 * n, "batch")


def test_a_realtime_and_a_batch_job_in_one_process(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(latency_ms=10, **FAST)
    path = tmp_path / "store.sqlite"
    n = 200
    batch = batchain.arun(
        _chain(sandbox, "gpt-4o-mini"),
        [{"n": i} for i in range(n)],
        mode="batch",
        store=path,
        job_id="b",
        progress=False,
        poll_min=0.05,
        poll_max=0.2,
    )
    realtime = batchain.arun(
        _chain(sandbox, "gpt-4.1-mini"),
        [{"n": 10_000 + i} for i in range(n)],
        store=path,
        job_id="r",
        progress=False,
    )
    jobs = asyncio.run(_both(batch, realtime))
    for job in jobs:
        _check(job, n)
    ledger = sandbox.ledger()
    assert not sandbox.duplicates()
    assert sorted(e.tier for e in ledger) == ["batch"] * n + ["realtime"] * n


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_two_processes_on_one_store_both_complete(sandbox: Sandbox, tmp_path: Path, mode: str) -> None:
    sandbox.configure(latency_ms=10, **FAST)
    path, n = tmp_path / "store.sqlite", 300
    env = dict(os.environ, ONE_OPENAI_BASE_URL=sandbox.openai_base_url)
    children = [
        subprocess.Popen(
            [sys.executable, str(HERE / "run_one.py"), str(path), f"p{k}", str(n), str(k * 10_000), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    for child in children:
        _, err = child.communicate(timeout=150)
        assert child.returncode == 0, err[-3000:]
    for k in range(2):
        _check(batchain.Job.open(f"p{k}", store=path), n)
    _check_ledger(sandbox, 2 * n, mode)


def test_a_lock_held_too_long_by_another_process_is_one_clear_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHAIN_BUSY_TIMEOUT_S", "0.3")
    path = tmp_path / "locked.sqlite"
    SQLiteStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)  # another process, as far as SQLite can tell
    holder.execute("BEGIN IMMEDIATE")
    try:
        store = SQLiteStore(path)
        now = time.time()
        record = JobRecord(
            id="j", status=batchain.JobStatus.CREATED, mode="realtime", created_at=now, updated_at=now
        )
        with pytest.raises(StoreError) as caught:
            store.create_job(record)
        message = str(caught.value)
        assert "\n" not in message
        assert str(path) in message and "locked" in message and "0.3 s" in message
        assert store.get_job("j") is None  # reads still work
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.create_job(record)  # and once the lock is free, writes do
    assert store.get_job("j") is not None


# -- one shared transaction: failures and fences -------------------------------------------------


def _job(store: SQLiteStore, job_id: str) -> None:
    now = time.time()
    store.create_job(
        JobRecord(
            id=job_id, status=batchain.JobStatus.RUNNING, mode="realtime", created_at=now, updated_at=now
        )
    )


def _n_items(path: Path, job_id: str) -> int:
    """What another process reads: what was committed."""
    con = sqlite3.connect(path)
    try:
        return int(con.execute("SELECT n_items FROM jobs WHERE id=?", (job_id,)).fetchone()[0])
    finally:
        con.close()


def test_a_failed_write_undoes_every_job_on_the_file_and_tells_each(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    first, second = SQLiteStore(path), SQLiteStore(path)  # one connection, one transaction
    _job(first, "a")
    _job(second, "b")
    told: dict[str, list[StoreError]] = {"a": [], "b": []}
    first.watch("a", told["a"].append)
    second.watch("b", told["b"].append)
    first.update_job("a", n_items=3)
    second.update_job("b", n_items=4)
    _hold_size(first, True)
    with pytest.raises(StoreError, match="disk full") as failed:
        second.add_items("b", [(i, '"x"' * 2000) for i in range(300)])
    assert told == {"a": [failed.value], "b": [failed.value]}  # each job on the file is told
    for store in (first, second):  # and no store on it takes a write while they watch
        with pytest.raises(StoreError, match="disk full"):
            store.update_job("a", n_items=9)
    _hold_size(first, False)
    first.unwatch("a")
    second.unwatch("b")
    assert (_n_items(path, "a"), _n_items(path, "b")) == (0, 0)  # both undone, as a whole
    first.update_job("a", n_items=1)  # no run builds on the undone writes: usable again
    first.commit()
    assert _n_items(path, "a") == 1
    first.close()
    second.close()


def _take_over(path: Path, job_id: str) -> None:
    """Another process takes the job's lease (its runner here stalled past it)."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute(
            "UPDATE jobs SET lease_owner='elsewhere:1', lease_epoch=lease_epoch+1 WHERE id=?", (job_id,)
        )
    finally:
        con.close()


def _claim(store: SQLiteStore, job_id: str, lost: list[LeaseLost]) -> None:
    claim = store.acquire_lease(job_id, "here:1", 60)
    assert claim.epoch is not None
    store.fence(job_id, "here:1", claim.epoch, lost.append)


def test_a_lost_lease_undoes_only_that_jobs_writes_in_the_shared_transaction(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    first, second = SQLiteStore(path), SQLiteStore(path)
    _job(first, "a")
    _job(second, "b")
    lost_a: list[LeaseLost] = []
    lost_b: list[LeaseLost] = []
    _claim(first, "a", lost_a)
    _claim(second, "b", lost_b)
    _take_over(path, "a")
    second.update_job("b", n_items=7)  # begins the transaction: every fence is checked
    first.update_job("a", n_items=5)
    assert len(lost_a) == 1 and not lost_b
    second.commit()
    with pytest.raises(LeaseLost, match="job a: another process"):
        first.commit()
    assert (_n_items(path, "a"), _n_items(path, "b")) == (0, 7)
    first.unfence("a")
    first.close()
    second.close()


def test_one_store_object_running_two_jobs_stops_both_when_one_loses_its_lease(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = SQLiteStore(path)
    _job(store, "a")
    _job(store, "b")
    lost_a: list[LeaseLost] = []
    lost_b: list[LeaseLost] = []
    _claim(store, "a", lost_a)
    _claim(store, "b", lost_b)
    _take_over(path, "a")
    store.update_job("b", n_items=7)  # whose write? the store cannot tell: it keeps none
    assert "another process" in str(lost_a[0])
    assert len(lost_b) == 1 and "job b: stopped" in str(lost_b[0]) and "job a" in str(lost_b[0])
    with pytest.raises(LeaseLost):
        store.commit()
    assert _n_items(path, "b") == 0
    store.unfence("a")
    store.unfence("b")
    store.update_job("b", n_items=8)  # no fence lost any more: it writes again
    store.commit()
    assert _n_items(path, "b") == 8
    store.close()


def _hold_size(store: SQLiteStore, full: bool) -> None:
    """SQLite's page limit on the file's shared connection: the SQLITE_FULL of a full disk."""
    with store._lock:
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0] if full else 0xFFFFFFFE
        store._conn.execute(f"PRAGMA max_page_count={int(pages)}")


def test_whoever_waits_for_a_commit_or_wrote_in_it_learns_it_was_undone(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    waiter, bystander, failing = SQLiteStore(path), SQLiteStore(path), SQLiteStore(path)
    _job(waiter, "a")
    _job(bystander, "b")

    async def mark() -> None:
        waiter.update_job("a", n_items=2)  # must be durable before going on (a "sent" mark)
        await waiter.durable()

    async def mark_then_fail() -> None:
        waiting = asyncio.ensure_future(mark())
        await asyncio.sleep(0)  # it marks, and waits for this iteration's group commit
        bystander.update_job("b", n_items=3)  # no run watches: told at its next commit
        _hold_size(failing, True)
        with pytest.raises(StoreError, match="disk full"):  # another job's write fails
            failing.add_items("a", [(i, '"x"' * 2000) for i in range(300)])
        with pytest.raises(StoreError, match="disk full"):
            await waiting

    asyncio.run(mark_then_fail())
    _hold_size(failing, False)
    with pytest.raises(StoreError, match="disk full"):
        bystander.commit()
    bystander.commit()  # told once; its later writes are its own
    assert (_n_items(path, "a"), _n_items(path, "b")) == (0, 0)
    for store in (waiter, bystander, failing):
        store.close()
