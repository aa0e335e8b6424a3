"""``calls_lost_in_crashes`` counts the requests that were on the wire when a process died
(issue 12, case 10), not every call that was waiting for a concurrency slot: it is at most
the kills times ``max_concurrency``, and at least what the sandbox ledger billed twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import batchain
from batchain.sandbox import Sandbox
from tests import preloaded

CRASH = Path(__file__).parent.parent / "engine" / "crash"
pytestmark = pytest.mark.timeout(180)

N = 600
CONCURRENCY = 8
DONE = "SELECT COUNT(*) FROM calls WHERE status='succeeded'"
SENT = "SELECT COUNT(*) FROM calls WHERE status='sent'"


def _child(sb: Sandbox, store: Path, action: str) -> preloaded.Child:
    env = dict(
        os.environ,
        CRASH_OPENAI_BASE_URL=sb.openai_base_url,
        CRASH_PROVIDER="openai",
        CRASH_MAX_CONCURRENCY=str(CONCURRENCY),
    )
    env.pop("BATCHAIN_FAILPOINT", None)
    args = [str(CRASH / "run_job.py"), str(store), "job-lost", str(N), action]
    args += [f"{CRASH / 'chain_for_crash.py'}:chain", "realtime"]
    return preloaded.popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _count(store: Path, sql: str) -> int:
    if not store.exists():
        return 0
    con = sqlite3.connect(store, timeout=30)
    try:
        return int(con.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # tables not made yet
        return 0
    finally:
        con.close()


def _wait_for(store: Path, target: int, proc: preloaded.Child) -> None:
    deadline = time.monotonic() + 90
    while _count(store, DONE) < target:
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise AssertionError(f"child exited early: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "the child made no progress"
        time.sleep(0.01)


def test_calls_lost_in_crashes_counts_only_requests_on_the_wire(sandbox: Sandbox, tmp_path: Path) -> None:
    # slow enough that every slot is busy and many more calls wait for one at each kill
    sandbox.configure(latency_ms=25, latency_jitter_ms=10)
    store = tmp_path / "lost.sqlite"
    kills = [150, 500, 900]  # answered calls (of 2 x N) at which the runner is SIGKILLed
    proc = _child(sandbox, store, "start")
    marked = 0
    for target in kills:
        _wait_for(store, target, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        at_kill = _count(store, SENT)
        assert at_kill <= CONCURRENCY, f"{at_kill} calls marked as on the wire with {CONCURRENCY} slots"
        marked += at_kill
        proc = _child(sandbox, store, "resume")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]

    job = batchain.Job.open("job-lost", store=store)
    assert job.status == batchain.JobStatus.COMPLETED
    results = job.results()
    assert [r.index for r in results] == list(range(N))
    assert all(r.ok for r in results)

    lost = job.stats["calls_lost_in_crashes"]
    paid_twice = sum(c - 1 for c in sandbox.duplicates().values())
    assert lost == marked
    assert paid_twice <= lost <= len(kills) * CONCURRENCY, (paid_twice, lost)
    ledger = sandbox.ledger()
    assert len({e.request_hash for e in ledger}) == 2 * N  # every call answered...
    assert len(ledger) == 2 * N + paid_twice  # ...and billed again only if lost in a crash
