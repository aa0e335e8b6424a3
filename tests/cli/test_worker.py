"""``batchain worker``: workers share a store's jobs, one job in one worker at a time, and
when a worker is killed the others finish its jobs from the store: every item ends with
one result, and no request is billed twice."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from batchain.sandbox import Sandbox
from batchain.states import JobStatus
from batchain.store import open_store
from tests.cli.conftest import Cli

N = 40

#: two model calls per item: two rounds of provider batches per job
CHAIN = """
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

model = ChatOpenAI(model="gpt-4o-mini")
chain = (
    ChatPromptTemplate.from_template("Summarise note {id}: {text}")
    | model
    | StrOutputParser()
    | (lambda summary: {"summary": summary})
    | ChatPromptTemplate.from_template("Title for: {summary}")
    | model
    | StrOutputParser()
)
"""


def _lease_pid(store: str | Path, job_id: str) -> int | None:
    with open_store(store) as st:
        rows = st._read("SELECT lease_owner FROM jobs WHERE id=?", (job_id,))  # type: ignore[attr-defined]
    owner = rows[0][0] if rows else None
    return int(owner.rpartition(":")[2]) if owner else None


def test_workers_share_jobs_and_finish_a_killed_ones(
    cli: Cli, cli_sandbox: Sandbox, any_store: str | Path, tmp_path: Path
) -> None:
    cli_sandbox.configure(batch_processing_s=1.0)
    chain = tmp_path / "two_stage.py"
    chain.write_text(CHAIN)
    env = dict(cli.env, BATCHAIN_STORE=str(any_store), BATCHAIN_LEASE_S="2")
    on = Cli(env=env, cwd=cli.cwd, store=any_store)  # type: ignore[arg-type]

    ids = []
    for k in range(2):  # each returns once its first round is at the provider
        data = tmp_path / f"notes{k}.jsonl"
        data.write_text(
            "".join(json.dumps({"id": i, "text": f"note {i} of set {k}"}) + "\n" for i in range(N))
        )
        submitted = on("submit", f"{chain}:chain", str(data), "--poll-interval", "0.1")
        assert submitted.returncode == 0, submitted.stderr
        ids.append(submitted.stdout.strip())

    workers = [on.popen("worker", "--until-idle", "--poll-interval", "0.2") for _ in range(2)]
    try:
        # both jobs are taken, each by one worker; kill the worker that holds the first
        deadline = time.monotonic() + 60
        while (holder := _lease_pid(any_store, ids[0])) not in {w.pid for w in workers}:
            assert time.monotonic() < deadline, "no worker took the job"
            time.sleep(0.05)
        # in this process: a new interpreter's second of imports would let the job finish first
        running = on.here("status", ids[0], "--json")
        assert json.loads(running.stdout)["runner"].endswith(f":{holder}"), running.stdout
        victim = next(w for w in workers if w.pid == holder)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        survivor = next(w for w in workers if w is not victim)
        _, err = survivor.communicate(timeout=120)
        assert survivor.returncode == 0, err
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()

    assert "worker done: jobs run to their end:" in err and ids[0] in err
    with open_store(any_store) as st:
        for job_id in ids:
            record = st.get_job(job_id)
            assert record is not None and record.status == JobStatus.COMPLETED, (job_id, record.note, err)
            assert st.item_counts(job_id) == {"succeeded": N}
            assert record.runner(time.time()) is None  # released at the end
    ledger = cli_sandbox.ledger()
    assert len(ledger) == 2 * 2 * N, "every call of both jobs billed once"
    assert not cli_sandbox.duplicates(), "a request was billed twice"
    assert {e.tier for e in ledger} == {"batch"}


def test_a_worker_passes_over_a_job_whose_chain_it_cannot_load(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    chain = tmp_path / "gone.py"
    chain.write_text(CHAIN)
    data = tmp_path / "notes.jsonl"
    data.write_text(json.dumps({"id": 1, "text": "t"}) + "\n")
    submitted = cli("submit", f"{chain}:chain", str(data), "--poll-interval", "0.1")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    chain.unlink()  # not on this "machine"
    done = cli("worker", "--until-idle", "--poll-interval", "0.1", timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{job_id}: not run here: cannot load chain" in done.stderr
    assert "jobs run to their end: none" in done.stderr
    # submit's round only: its batch bills when the sandbox has run it, maybe after the worker
    deadline = time.monotonic() + 30
    while not cli_sandbox.ledger() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(cli_sandbox.ledger()) == 1 and not cli_sandbox.duplicates()


#: one model call per item, realtime
ONE_STAGE = """
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

prompt = ChatPromptTemplate.from_template("Tag note {id}: {text}")
chain = prompt | ChatOpenAI(model="gpt-4o-mini") | StrOutputParser()
"""


def _submit_realtime(on: Cli, tmp_path: Path, n: int) -> str:
    chain = tmp_path / "one_stage.py"
    chain.write_text(ONE_STAGE)
    data = tmp_path / "notes.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": f"note {i}"}) + "\n" for i in range(n)))
    submitted = on("submit", f"{chain}:chain", str(data), "--mode", "realtime", "--concurrency", "4")
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip()


def _runners_seen(store: str | Path, job_id: str, pids: set[int], seen: set[int]) -> None:
    with open_store(store) as st:
        for r in st.job_runners(job_id):
            pid = int(r.host_pid.rpartition(":")[2])
            if pid in pids and r.chunks:
                seen.add(pid)


def _check_one_result_each(store: str | Path, job_id: str, n: int, err: str) -> dict[str, int]:
    with open_store(store) as st:
        record = st.get_job(job_id)
        assert record is not None and record.status == JobStatus.COMPLETED, (record, err)
        assert st.item_counts(job_id) == {"succeeded": n}
        assert st.job_runners(job_id) == []  # every seat and chunk given back
        runners: dict[str, int] = record.stats["runners"]
    return runners


def test_workers_share_one_realtime_jobs_items(
    cli: Cli, cli_sandbox: Sandbox, any_store: str | Path, tmp_path: Path
) -> None:
    """Three workers on one realtime job: each runs chunks of its items, every item ends
    with one result, and each request is billed once."""
    n = 600
    cli_sandbox.configure(latency_ms=40)
    env = dict(cli.env, BATCHAIN_STORE=str(any_store))
    on = Cli(env=env, cwd=cli.cwd, store=any_store)  # type: ignore[arg-type]
    job_id = _submit_realtime(on, tmp_path, n)

    workers = [on.popen("worker", "--until-idle", "--poll-interval", "0.2") for _ in range(3)]
    pids = {w.pid for w in workers}
    seen: set[int] = set()
    try:
        while any(w.poll() is None for w in workers):
            _runners_seen(any_store, job_id, pids, seen)
            time.sleep(0.05)
        errs = [w.communicate(timeout=60)[1] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert all(w.returncode == 0 for w in workers), errs
    assert len(seen) >= 2, f"the items were not shared: only {seen} of {pids} held chunks"
    runners = _check_one_result_each(any_store, job_id, n, "\n".join(errs))
    assert sum(runners.values()) == n and len(runners) >= 2, runners
    assert sum("helped with" in e for e in errs) >= 1, errs
    ledger = cli_sandbox.ledger()
    assert len(ledger) == n and not cli_sandbox.duplicates(), "a request was billed twice"
    assert {e.tier for e in ledger} == {"realtime"}


@pytest.mark.parametrize("victim_is", ["helper", "lease holder"])
def test_a_killed_workers_items_are_run_by_the_others(
    cli: Cli, cli_sandbox: Sandbox, any_store: str | Path, tmp_path: Path, victim_is: str
) -> None:
    """SIGKILL a worker while three share a realtime job (a helper, or the lease holder):
    its chunks are free again, the others run its items without a result (and one takes
    the job's lease over), and every item ends with one result. A realtime request on the
    wire when it died may be billed twice, no other."""
    n = 600
    cli_sandbox.configure(latency_ms=40)
    env = dict(cli.env, BATCHAIN_STORE=str(any_store), BATCHAIN_LEASE_S="2")
    on = Cli(env=env, cwd=cli.cwd, store=any_store)  # type: ignore[arg-type]
    job_id = _submit_realtime(on, tmp_path, n)

    workers = [on.popen("worker", "--until-idle", "--poll-interval", "0.2") for _ in range(3)]
    try:
        deadline = time.monotonic() + 60
        victim = None
        while victim is None:  # once a helper holds chunks
            assert time.monotonic() < deadline, "no worker helped"
            holder = _lease_pid(any_store, job_id)
            helping: set[int] = set()
            _runners_seen(any_store, job_id, {w.pid for w in workers} - {holder or 0}, helping)
            # the lease is free for a moment when its holder's run ends while helpers still
            # hold chunks (a worker takes it again at its next look): look again then
            if helping and (victim_is == "helper" or holder is not None):
                victim = next(w for w in workers if w.pid in (helping if victim_is == "helper" else {holder}))
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        errs = [w.communicate(timeout=120)[1] for w in workers if w is not victim]
        assert all(w.returncode == 0 for w in workers if w is not victim), errs
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    _check_one_result_each(any_store, job_id, n, "\n".join(errs))
    ledger = cli_sandbox.ledger()
    twice = sum(k - 1 for k in cli_sandbox.duplicates().values())
    assert twice <= 4, f"{twice} requests billed twice: more than the victim had on the wire"
    assert len(ledger) == n + twice, "a call escaped the ledger's count"


def test_status_names_the_workers_helping_with_a_job(cli: Cli, tmp_path: Path) -> None:
    job_id = _submit_realtime(cli, tmp_path, 3)
    with open_store(cli.store) as st:
        st.join_job(job_id, f"{socket.gethostname()}:{os.getpid()}#c0ffee", 60.0)
    shown = cli("status", job_id, "--json")
    assert json.loads(shown.stdout)["helpers"] == [f"{socket.gethostname()}:{os.getpid()}"]
    lines = cli("status", job_id).stdout.splitlines()
    assert any(ln.split()[:3] == ["helpers", "1:", f"{socket.gethostname()}:{os.getpid()}"] for ln in lines)
    with open_store(cli.store) as st:
        st.leave_job(job_id, f"{socket.gethostname()}:{os.getpid()}#c0ffee")
    assert json.loads(cli("status", job_id, "--json").stdout)["helpers"] == []
