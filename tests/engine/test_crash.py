"""Kill the process at any point; a resumed job still gives every item exactly one result
and never pays again for a call that had already been answered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import batchain
from batchain.sandbox import Sandbox
from tests import preloaded
from tests.pgserver import count_in

HERE = Path(__file__).parent / "crash"
N = 2000


def _child(
    sb: Sandbox,
    store: Path | str,
    job_id: str,
    action: str,
    *,
    mode: str = "realtime",
    n: int = N,
    failpoint: str | None = None,
    chain: str | None = None,
    provider: str = "openai",
) -> preloaded.Child:
    env = dict(
        os.environ,
        CRASH_OPENAI_BASE_URL=sb.openai_base_url,
        CRASH_ANTHROPIC_BASE_URL=sb.anthropic_base_url,
    )
    env.pop("BATCHAIN_FAILPOINT", None)
    if failpoint:
        env["BATCHAIN_FAILPOINT"] = failpoint
    env["CRASH_PROVIDER"] = provider
    chain = chain or ("chain_for_crash.py" if mode == "realtime" else "batch_chain.py")
    return preloaded.popen(
        [
            str(HERE / "run_job.py"),
            str(store),
            job_id,
            str(n),
            action,
            f"{HERE / chain}:chain",
            mode,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(store: Path | str, sql: str, target: int, proc: preloaded.Child) -> None:
    deadline = time.monotonic() + 60
    while count_in(store, sql) < target:
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise AssertionError("child made no progress")
        time.sleep(0.01)


ITEMS_DONE = "SELECT COUNT(*) FROM items WHERE status='succeeded'"
ITEMS_STORED = "SELECT COUNT(*) FROM items"
CALLS_DONE = "SELECT COUNT(*) FROM calls WHERE status='succeeded'"
CALLS_SENT = "SELECT COUNT(*) FROM calls WHERE status='sent'"


def test_sigkill_at_several_points_then_resume(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(latency_ms=15, latency_jitter_ms=10)
    store = tmp_path / "crash.sqlite"
    job_id = "job-crash"
    # kill points: while inputs are still being read, mid-run, late in the run
    kill_points = [(ITEMS_STORED, 150), (CALLS_DONE, 1500), (ITEMS_DONE, 1800)]
    in_flight_at_kills = 0
    proc = _child(sandbox, store, job_id, "start")
    for sql, target in kill_points:
        _wait_for(store, sql, target, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        in_flight_at_kills += count_in(store, CALLS_SENT)
        proc = _child(sandbox, store, job_id, "resume")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]

    job = batchain.Job.open(job_id, store=store)
    assert job.status == batchain.JobStatus.COMPLETED
    results = job.results()
    assert [r.index for r in results] == list(range(N))
    assert all(r.ok for r in results)
    assert results[7].output["summary"]
    assert results[7].input == {"n": 7}

    ledger = sandbox.ledger()
    distinct = {e.request_hash for e in ledger}
    assert len(distinct) == 2 * N  # every call answered once...
    duplicates = sandbox.duplicates()
    paid_twice = sum(c - 1 for c in duplicates.values())
    # ...and only calls that were on the wire at a kill can have been paid twice; the job
    # knows how many those were
    assert paid_twice <= in_flight_at_kills
    assert job.stats["calls_lost_in_crashes"] == in_flight_at_kills
    assert len(ledger) - len(distinct) == sum(c - 1 for c in duplicates.values())


def test_sigterm_drains_in_flight_calls_so_nothing_is_paid_twice(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(latency_ms=40)
    store, n = tmp_path / "term.sqlite", 600  # a quarter of the calls done at the signal
    proc = _child(sandbox, store, "job-term", "start", n=n)
    _wait_for(store, CALLS_DONE, 300, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert count_in(store, CALLS_SENT) == 0
    job = batchain.Job.open("job-term", store=store)
    assert job.status == batchain.JobStatus.PAUSED and job.counts["pending"] > 0
    proc = _child(sandbox, store, "job-term", "resume", n=n)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert batchain.Job.open("job-term", store=store).counts["succeeded"] == n
    assert not sandbox.duplicates()
    assert len(sandbox.ledger()) == 2 * n


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_pauses_like_ctrl_c(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(latency_ms=40)
    store = tmp_path / "int.sqlite"
    proc = _child(sandbox, store, "job-int", "start")
    _wait_for(store, CALLS_DONE, 200, proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert count_in(store, CALLS_SENT) == 0
    assert batchain.Job.open("job-int", store=store).status == batchain.JobStatus.PAUSED


# -- batch mode: never pays twice, whatever the kill point ------------------------------------

BATCH_N = 300
FAST = dict(batch_validating_s=0.02, batch_processing_s=0.3, batch_finalizing_s=0.02)


def _finish(sb: Sandbox, store: Path | str, job_id: str) -> batchain.Job:
    proc = _child(sb, store, job_id, "resume", mode="batch", n=BATCH_N)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()[-3000:]
    job = batchain.Job.open(job_id, store=store)
    assert job.status == batchain.JobStatus.COMPLETED
    results = job.results()
    assert [r.index for r in results] == list(range(BATCH_N))
    assert all(r.ok and r.output["title"] for r in results)
    assert not sb.duplicates(), "a request was billed twice"
    assert len(sb.ledger()) == 2 * BATCH_N
    assert {e.tier for e in sb.ledger()} == {"batch"}
    return job


@pytest.mark.parametrize(
    "point",
    [
        "batch_before_create",
        "batch_after_upload",
        "batch_after_create:openai",
        "batch_after_create:anthropic",
        "batch_before_download",
    ],
)
def test_batch_sigkill_at_failpoint_then_resume(sandbox: Sandbox, any_store: Path | str, point: str) -> None:
    sandbox.configure(**FAST)
    store = any_store
    proc = _child(sandbox, store, "job-b", "start", mode="batch", n=BATCH_N, failpoint=point)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    job = _finish(sandbox, store, "job-b")
    if point.startswith("batch_after_create"):
        assert job.stats["batches_reconciled"] == 1  # found at the provider, not resubmitted


BATCHES = "SELECT COUNT(*) FROM provider_batches WHERE status='submitted'"
COLLECTED = "SELECT COUNT(*) FROM provider_batches WHERE status='collected'"


@pytest.mark.parametrize("when", ["polling", "later_round"])
def test_batch_sigkill_while_waiting_then_resume(sandbox: Sandbox, any_store: Path | str, when: str) -> None:
    sandbox.configure(**FAST)
    store = any_store
    proc = _child(sandbox, store, "job-w", "start", mode="batch", n=BATCH_N)
    if when == "polling":
        _wait_for(store, BATCHES, 1, proc)
    else:
        _wait_for(store, COLLECTED, 1, proc)
        _wait_for(store, BATCHES, 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _finish(sandbox, store, "job-w")


# -- the bulk path (one-stage chains in batch mode): the same guarantees -----------------------

BULK_N = 400


def _finish_bulk(sb: Sandbox, store: Path | str, job_id: str, provider: str) -> batchain.Job:
    proc = _child(
        sb, store, job_id, "resume", mode="batch", n=BULK_N, chain="bulk_chain.py", provider=provider
    )
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()[-3000:]
    job = batchain.Job.open(job_id, store=store)
    assert job.status == batchain.JobStatus.COMPLETED
    results = job.results()
    assert [r.index for r in results] == list(range(BULK_N))
    assert all(r.ok and r.output.endswith(f"Summarise item {r.index}") for r in results)
    assert not sb.duplicates(), "a request was billed twice"
    assert len(sb.ledger()) == BULK_N
    assert {e.tier for e in sb.ledger()} == {"batch"}
    # the bulk path noted the call of every item, so the resume did not rebuild requests
    assert count_in(store, "SELECT COUNT(*) FROM waits") == BULK_N
    return job


@pytest.mark.parametrize(
    ("point", "provider"),
    [
        ("batch_before_create", "openai"),
        ("batch_after_upload", "openai"),
        ("batch_after_create:openai", "openai"),
        ("batch_after_create:anthropic", "anthropic"),
        ("batch_before_download", "openai"),
        ("batch_before_download", "anthropic"),
        ("batch_after_apply", "openai"),
    ],
)
def test_bulk_sigkill_at_failpoint_then_resume(
    sandbox: Sandbox, any_store: Path | str, point: str, provider: str
) -> None:
    sandbox.configure(**FAST)
    store = any_store
    proc = _child(
        sandbox,
        store,
        "job-bulk",
        "start",
        mode="batch",
        n=BULK_N,
        failpoint=point,
        chain="bulk_chain.py",
        provider=provider,
    )
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    job = _finish_bulk(sandbox, store, "job-bulk", provider)
    if point.startswith("batch_after_create"):
        assert job.stats["batches_reconciled"] == 1  # found at the provider, not resubmitted


def test_bulk_sigkill_while_polling_then_resume(sandbox: Sandbox, any_store: Path | str) -> None:
    sandbox.configure(**FAST)
    store = any_store
    proc = _child(sandbox, store, "job-bw", "start", mode="batch", n=BULK_N, chain="bulk_chain.py")
    _wait_for(store, BATCHES, 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _finish_bulk(sandbox, store, "job-bw", "openai")
