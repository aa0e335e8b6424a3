"""A storm of random SIGKILLs and SIGSTOPs (longer than the lease) against one job of a
three-stage, two-provider chain, each followed by two resumers racing at one instant.

Used by ``test_storm.py`` (a few bounded trials in CI) and by ``bench/reliability.py``
(more trials; it writes the figures in docs/reliability.md). The sandbox ledger is the
judge: every item must end with exactly one result, batch mode must bill nothing twice,
and realtime may bill twice at most the calls that were on the wire at each disruption.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batchain.sandbox import Sandbox
from tests import preloaded

HERE = Path(__file__).parent
RUN_JOB = HERE.parent / "engine" / "crash" / "run_job.py"
CHAIN = f"{HERE / 'storm_chain.py'}:chain"
STAGES = 3
CONCURRENCY = 40  # run_job.py's max_concurrency: the most calls one runner has on the wire
JOB = "job-storm"

SANDBOX_KNOBS: dict[str, dict[str, Any]] = {
    "realtime": {"latency_ms": 20, "latency_jitter_ms": 10},
    "batch": {"batch_validating_s": 0.05, "batch_processing_s": 0.6, "batch_finalizing_s": 0.05},
}


@dataclass
class Storm:
    """What one storm did and what the ledger says about it."""

    mode: str
    seed: int
    items: int
    kills: int = 0
    stalls: int = 0
    runners: int = 0  # processes started: the first, racing resumers, final resumers
    busy: int = 0  # runners that found the job held by another and exited (JobBusy)
    lease_lost: int = 0  # runners that woke from a stall and stopped (LeaseLost)
    in_flight: int = 0  # calls on the wire at the disruptions (the realtime bound)
    items_done: int = 0  # items with their result (every stage's output)
    billed: int = 0
    billed_twice: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)  # how each runner ended, in order

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class _Runners:
    """The child processes of one storm."""

    def __init__(self, sb: Sandbox, store: Path, items: int, mode: str, lease_s: float) -> None:
        self.store, self.items, self.mode = store, items, mode
        self.env = dict(
            os.environ,
            CRASH_OPENAI_BASE_URL=sb.openai_base_url,
            CRASH_ANTHROPIC_BASE_URL=sb.anthropic_base_url,
            BATCHAIN_LEASE_S=str(lease_s),
        )
        self.env.pop("BATCHAIN_FAILPOINT", None)
        self.live: list[preloaded.Child] = []
        self.done: list[tuple[int, str]] = []  # exit code and stderr of every finished runner

    def spawn(self, action: str, start_at: float = 0.0) -> None:
        args = [str(RUN_JOB), str(self.store), JOB, str(self.items), action, CHAIN, self.mode]
        env = dict(self.env, CHAOS_START_AT=str(start_at))
        self.live.append(
            preloaded.popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        )

    def race(self) -> float:
        """Two resumers that start at one instant (after both have imported everything).
        Returns that instant."""
        start_at = time.time() + 2.5
        self.spawn("resume", start_at)
        self.spawn("resume", start_at)
        return start_at

    def reap(self) -> None:
        for proc in [p for p in self.live if p.poll() is not None]:
            self.live.remove(proc)
            self.done.append((proc.returncode, proc.stderr.read() if proc.stderr else ""))

    def signal(self, sig: int) -> list[preloaded.Child]:
        hit = [p for p in self.live if p.poll() is None]
        for proc in hit:
            os.kill(proc.pid, sig)
        return hit

    def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in list(self.live):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.reap()


def _query(store: Path, sql: str) -> int:
    if not store.exists():
        return 0
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


CALLS_SENT = "SELECT COUNT(*) FROM calls WHERE status='sent'"
ITEMS_STORED = "SELECT COUNT(*) FROM items"


def run_storm(
    sb: Sandbox,
    workdir: Path,
    *,
    mode: str,
    items: int,
    disruptions: int,
    seed: int,
    lease_s: float = 1.0,
    timeout: float = 180.0,
) -> Storm:
    """One job, ``disruptions`` random kills or stalls, each followed by two racing resumers;
    then resumes until the job completes. Returns the figures and any failed invariant."""
    rng = random.Random(seed)
    sb.reset()
    sb.configure(**SANDBOX_KNOBS[mode])
    store = workdir / f"storm-{mode}-{seed}.sqlite"
    storm, began = Storm(mode=mode, seed=seed, items=items), time.monotonic()
    runners = _Runners(sb, store, items, mode, lease_s)
    runners.spawn("start")
    while _query(store, ITEMS_STORED) == 0 and time.monotonic() - began < 60:
        time.sleep(0.05)  # disrupt only once the job exists, so resumers have a job to resume
    for _ in range(disruptions):
        time.sleep(rng.uniform(0.2, 3.0))
        runners.reap()
        if not runners.live:
            break  # the job finished before this disruption
        if rng.random() < 0.6:
            _kill(runners, storm)
            # the next disruption hits the race's winner, not resumers still importing
            time.sleep(max(0.0, runners.race() + 0.3 - time.time()))
        else:
            _stall(runners, storm, lease_s)
    runners.wait_all(timeout)
    for _ in range(3):  # every runner may have lost: one more resume finishes the job
        if _query(store, "SELECT COUNT(*) FROM jobs WHERE status='completed'"):
            break
        runners.spawn("resume")
        runners.wait_all(timeout)
    storm.runners = len(runners.done)
    storm.seconds = round(time.monotonic() - began, 1)
    _judge(sb, store, runners, storm)
    return storm


def _kill(runners: _Runners, storm: Storm) -> None:
    runners.signal(signal.SIGKILL)
    for proc in runners.live:
        proc.wait()
    storm.kills += 1
    storm.in_flight += _query(runners.store, CALLS_SENT)
    runners.reap()


def _stall(runners: _Runners, storm: Storm, lease_s: float) -> None:
    """SIGSTOP every runner past its lease; two resumers race while they sleep; then wake
    them. A woken runner must notice it lost the lease before it sends anything more."""
    stopped = runners.signal(signal.SIGSTOP)
    storm.stalls += 1
    storm.in_flight += len(stopped) * CONCURRENCY
    time.sleep(lease_s + 0.3)
    start_at = runners.race()
    # the racers take over (unless a runner stopped inside a write holds the lock)
    time.sleep(max(0.0, start_at + 1.5 - time.time()))
    for proc in stopped:
        os.kill(proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 5.0  # a woken runner that lost its lease stops at once
    while any(p.poll() is None for p in stopped) and time.monotonic() < deadline:
        time.sleep(0.05)
    runners.reap()


def _judge(sb: Sandbox, store: Path, runners: _Runners, storm: Storm) -> None:
    for code, err in runners.done:
        last = err.strip().splitlines()[-1][:120] if err.strip() else ""
        storm.exits.append(f"{code}: {last}")
        if "JobBusy" in err:
            storm.busy += 1
        elif "LeaseLost" in err:
            storm.lease_lost += 1
        elif code not in (0, -signal.SIGKILL):
            storm.failures.append(f"a runner exited {code}: {err.strip()[-600:]}")
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        status = con.execute("SELECT status FROM jobs WHERE id=?", (JOB,)).fetchone()
        # one row per item (the table's key): done when it succeeded with every stage's output
        done = {
            idx
            for (idx,) in con.execute(
                "SELECT idx FROM items WHERE job_id=? AND status='succeeded' AND output LIKE '%\"tag\"%'",
                (JOB,),
            )
        }
        stored = con.execute("SELECT COUNT(*) FROM items WHERE job_id=?", (JOB,)).fetchone()[0]
    finally:
        con.close()
    storm.items_done = len(done & set(range(storm.items)))
    if status is None or status[0] != "completed":
        storm.failures.append(f"the job ended {status[0] if status else 'missing'}, not completed")
    if storm.items_done != storm.items or stored != storm.items:
        storm.failures.append(
            f"{storm.items_done} of {storm.items} items have their result ({stored} stored)"
        )
    ledger = sb.ledger()
    storm.billed = len(ledger)
    storm.billed_twice = sum(c - 1 for c in sb.duplicates().values())
    if storm.billed - storm.billed_twice != STAGES * storm.items:
        storm.failures.append(
            f"{storm.billed - storm.billed_twice} distinct calls billed, expected {STAGES * storm.items}"
        )
    if storm.mode == "batch":
        if storm.billed_twice:
            storm.failures.append(f"batch mode billed {storm.billed_twice} requests twice")
        if {e.tier for e in ledger} != {"batch"}:
            storm.failures.append("a call left the Batch API")
    elif storm.billed_twice > storm.in_flight:
        storm.failures.append(
            f"{storm.billed_twice} requests billed twice, more than the {storm.in_flight} on the wire"
        )
