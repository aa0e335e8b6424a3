"""Racing and stalled runners (issue 12, cases 1 and 2), with the sandbox ledger as judge:
one process runs a job at a time, and a process that stalled past its lease acts no more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchain.sandbox import Sandbox
from batchain.states import JobStatus
from batchain.store import open_store
from batchain.store.records import JobRecord
from tests import preloaded
from tests.pgserver import count_in

HERE = Path(__file__).parent
CRASH = HERE.parent / "engine" / "crash"
pytestmark = pytest.mark.timeout(240)


def _env(sb: Sandbox, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        CRASH_OPENAI_BASE_URL=sb.openai_base_url,
        CRASH_ANTHROPIC_BASE_URL=sb.anthropic_base_url,
        CRASH_PROVIDER="openai",
    )
    env.pop("BATCHAIN_FAILPOINT", None)
    env.update(extra)
    return env


def _job(
    sb: Sandbox, store: Path | str, job_id: str, n: int, action: str, mode: str, **env: str
) -> preloaded.Child:
    chain = CRASH / ("chain_for_crash.py" if mode == "realtime" else "batch_chain.py")
    args = [
        str(CRASH / "run_job.py"),
        str(store),
        job_id,
        str(n),
        action,
        f"{chain}:chain",
        mode,
    ]
    return preloaded.popen(
        args, env=_env(sb, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _results(store: Path | str, job_id: str) -> dict[str, int]:
    with open_store(store) as st:
        counts = st.item_counts(job_id)
        job = st.get_job(job_id)
        assert job is not None
        return {**counts, "n_items": job.n_items}


def test_a_lease_is_claimed_by_exactly_one_of_many_racing_processes(any_store: Path | str) -> None:
    store = any_store
    with open_store(store) as st:
        now = time.time()
        st.create_job(
            JobRecord(id="race", status=JobStatus.CREATED, mode="batch", created_at=now, updated_at=now)
        )
    start = time.time() + 1.5
    children = [
        subprocess.Popen(
            [sys.executable, str(HERE / "claim_lease.py"), str(store), "race", str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    answers = [c.communicate(timeout=60)[0].strip() for c in children]
    assert sorted(answers) == ["busy"] * 5 + ["won"], answers


@pytest.mark.parametrize("trial", range(3))
def test_two_resumers_racing_a_batch_job_pay_nothing_twice(
    sandbox: Sandbox, any_store: Path | str, trial: int
) -> None:
    sandbox.configure(batch_validating_s=0.05, batch_processing_s=1.0, batch_finalizing_s=0.05)
    store, n = any_store, 60
    first = _job(sandbox, store, "job-race", n, "start", "batch", BATCHAIN_FAILPOINT="batch_after_create")
    first.communicate(timeout=60)  # killed right after its first create: the job is left running
    start_at = str(time.time() + 3.0)  # after both children have imported everything
    racers = [
        _job(sandbox, store, "job-race", n, "resume", "batch", CHAOS_START_AT=start_at) for _ in range(2)
    ]
    outcomes = [(r.wait(timeout=120), r.stderr.read() if r.stderr else "") for r in racers]
    codes = sorted(code for code, _ in outcomes)
    assert codes[0] == 0, outcomes
    for code, err in outcomes:
        assert code == 0 or "JobBusy" in err, err[-2000:]
    assert _results(store, "job-race")["succeeded"] == n
    assert not sandbox.duplicates(), "a request was billed twice"
    assert {e.tier for e in sandbox.ledger()} == {"batch"}
    assert len(sandbox.ledger()) == 2 * n  # two rounds: every call billed once


def test_a_runner_stalled_past_its_lease_stops_and_pays_nothing_more(
    sandbox: Sandbox, any_store: Path | str
) -> None:
    """SIGSTOP longer than the lease, a second process resumes, then SIGCONT: one of them
    finishes the job; the other stops (it lost the lease, or never got it); nothing is billed
    twice beyond the calls that were on the wire when the first one stopped."""
    sandbox.configure(latency_ms=30)
    store, n, lease = any_store, 800, "1.0"
    a = _job(sandbox, store, "job-stall", n, "start", "realtime", BATCHAIN_LEASE_S=lease)
    deadline = time.monotonic() + 60
    while _done_items(store) < 40:
        assert a.poll() is None and time.monotonic() < deadline, "the first runner made no progress"
        time.sleep(0.05)
    os.kill(a.pid, signal.SIGSTOP)
    in_flight_at_stop = 40  # run_job.py's max_concurrency: the calls that can be on the wire
    time.sleep(1.5)  # longer than the lease
    b = _job(sandbox, store, "job-stall", n, "resume", "realtime", BATCHAIN_LEASE_S=lease)
    # wake the first once the second is under way (or after 5 s: a first runner stopped
    # inside a write transaction holds the store's lock until it wakes)
    wake = time.monotonic() + 5
    while _done_items(store) < 100 and time.monotonic() < wake and b.poll() is None:
        time.sleep(0.05)
    os.kill(a.pid, signal.SIGCONT)
    a_code, b_code = a.wait(timeout=120), b.wait(timeout=120)
    a_err = a.stderr.read() if a.stderr else ""
    b_err = b.stderr.read() if b.stderr else ""
    assert 0 in (a_code, b_code), (a_err[-1500:], b_err[-1500:])
    loser = a_err if a_code else b_err if b_code else ""
    assert loser == "" or "LeaseLost" in loser or "JobBusy" in loser, loser[-2000:]
    counts = _results(store, "job-stall")
    assert counts["succeeded"] == n and counts["n_items"] == n
    duplicates = sandbox.duplicates()
    paid_twice = sum(c - 1 for c in duplicates.values())
    assert paid_twice <= in_flight_at_stop, f"{paid_twice} requests billed twice"


def _done_items(store: Path | str) -> int:
    return count_in(store, "SELECT COUNT(*) FROM items WHERE status='succeeded'")
