"""A store holding jobs in every state, and the dashboard served over it by the real CLI.

Completed, cancelled and failed-item jobs are real runs on the sandbox (so their cost
reports, provider batches and errors are the engine's own); running, waiting, paused and
created jobs are written through the store as a run leaves them (a test cannot keep a run
alive across the browser's visit without racing it).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

import batchain
from batchain.sandbox import Sandbox, SandboxConfig
from batchain.states import ItemStatus, JobStatus
from batchain.store import SQLiteStore
from batchain.store.records import JobRecord, ProgressSample
from tests.cli.conftest import batchain_command
from tests.conftest import TEST_KEY

#: what a hostile input or note tries to put in the page
HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
#: a key-shaped string in a stored error: the page must never show it
LEAKED_KEY = "sk-proj-" + "Ab1" * 16


@dataclass
class Jobs:
    """The store and its jobs, by the state each was left in."""

    path: Path
    ids: dict[str, str]


def chain_for(sb: Sandbox) -> Any:
    model = ChatOpenAI(model="gpt-4o-mini", api_key=TEST_KEY, base_url=sb.openai_base_url, max_retries=0)  # type: ignore[arg-type]
    return (
        ChatPromptTemplate.from_template("Classify this headline as tech or other: {text}")
        | model
        | StrOutputParser()
    )


def _items(n: int, kind: str, hostile: int = 0) -> list[dict[str, str]]:
    good = [{"text": f"{kind} headline number {i}"} for i in range(n)]
    # an input the prompt rejects: the item fails, and its error names the hostile key
    return good + [{HOSTILE: "x"} for _ in range(hostile)]


def _made_up(
    st: SQLiteStore, job_id: str, status: JobStatus, mode: str, *, n: int, done: int, note: str | None = None
) -> None:
    now = time.time()
    st.create_job(
        JobRecord(
            id=job_id,
            status=status,
            mode=mode,
            created_at=now - 900,
            updated_at=now,
            chain_ref="chains.py:" + HOSTILE,
            options={"budget": 2.5},
            n_items=n,
            inputs_complete=True,
            note=note,
        )
    )
    if n == 0:
        return
    st.add_items(job_id, [(i, json.dumps({"text": f"item {i}"})) for i in range(n)])
    error = json.dumps({"type": "AuthenticationError", "message": f"bad key {LEAKED_KEY} refused"})
    failed = min(3, n - done)
    rows: list[tuple[int, ItemStatus, str | None, str | None]] = [
        (i, ItemStatus.SUCCEEDED, json.dumps("ok"), None) for i in range(done)
    ]
    rows += [(i, ItemStatus.FAILED, None, error) for i in range(done, done + failed)]
    st.finish_items(job_id, rows)
    # ten minutes at a steady pace, up to now
    for k in range(11):
        t = now - 600 + 60 * k
        cost = Decimal("0.0001") * k
        st.record_progress(
            job_id, ProgressSample(t, (done + failed) * k // 10, failed * k // 10, n, done * k // 10, cost)
        )
    st.commit()


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    path = tmp_path_factory.mktemp("dashboard") / "store.sqlite"
    ids: dict[str, str] = {}
    fast = dict(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    with Sandbox(SandboxConfig(**fast)) as sb:
        chain = chain_for(sb)
        job = batchain.run(chain, _items(20, "realtime", hostile=3), store=path, progress=False)
        ids["completed realtime"] = job.id
        job = batchain.run(
            chain, _items(30, "batch"), mode="batch", store=path, progress=False, budget=1.0, poll_min=0.02
        )
        ids["completed batch"] = job.id
        sb.configure(batch_processing_s=3.0)
        job = batchain.submit(chain, _items(40, "cancelled"), store=path, poll_min=0.02)
        time.sleep(1.0)
        job.cancel()
        ids["cancelled"] = job.id
        # the ledger billed each call once, and only the calls batchain counts as paid
        paid = sum(batchain.Job.open(j, store=path).call_stats.get("paid", 0) for j in ids.values())
        assert not sb.duplicates() and len(sb.ledger()) == paid
    with SQLiteStore(path) as st:
        for state, status, mode, n, done, note in [
            ("running", JobStatus.RUNNING, "realtime", 100, 40, None),
            ("waiting", JobStatus.WAITING, "batch", 50, 0, None),
            ("paused", JobStatus.PAUSED, "realtime", 10, 5, "stopped: " + HOSTILE),
            ("created", JobStatus.CREATED, "batch", 0, 0, None),
        ]:
            ids[state] = f"job-dash-{state}"
            _made_up(st, ids[state], status, mode, n=n, done=done, note=note)
    yield Jobs(path, ids)


@dataclass
class Dashboard:
    url: str
    process: subprocess.Popen[str]

    def get(self, path: str, host: str | None = None) -> tuple[int, bytes, dict[str, str]]:
        request = urllib.request.Request(self.url.rstrip("/") + path)
        if host is not None:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}

    def json(self, path: str) -> Any:
        status, body, _ = self.get(path)
        assert status == 200, body
        return json.loads(body)


def start_dashboard(store: Path) -> Dashboard:
    """``batchain dashboard --store STORE --port 0``, as a user starts it; its URL is read
    from what it prints."""
    process = subprocess.Popen(
        [*batchain_command(), "dashboard", "--store", str(store), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    found = re.search(r"at (http://\S+/)", line)
    if found is None:
        process.kill()
        raise AssertionError(f"the dashboard did not start: {line}{process.stderr.read()}")
    return Dashboard(found.group(1), process)


@pytest.fixture(scope="module")
def dashboard(jobs: Jobs) -> Iterator[Dashboard]:
    dash = start_dashboard(jobs.path)
    try:
        # the cost reports are computed in the background: wait until every job has one
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = dash.json("/api/jobs")["jobs"]
            if all(r["cost_state"] != "computing" for r in rows):
                break
            time.sleep(0.1)
        yield dash
    finally:
        dash.process.terminate()
        dash.process.wait(timeout=10)
