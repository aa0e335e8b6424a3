"""A host that cannot be reached pauses the job (issue 12, case 12): its circuit breaker
opens after a few failed connections and one probe, the job pauses with one line naming
``scheme://host:port``, no item fails; pointed back at a live host, a resume completes it.
Before: an unreachable endpoint was retried 4,455 times in 59 s and 512 items failed."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI

import batchain
from batchain.errors import HostUnreachable
from batchain.sandbox import Sandbox
from tests.cli.conftest import CHAIN, HEADLINES, Cli
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.timeout(120)
N = 300
FAST = dict(batch_validating_s=0.02, batch_processing_s=0.2, batch_finalizing_s=0.02)


def _closed_port() -> int:
    """A port nothing listens on: bound once, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _chain(base_url: str) -> Runnable[Any, Any]:
    gpt = ChatOpenAI(model="gpt-4o-mini", api_key=TEST_KEY, base_url=base_url)
    return ChatPromptTemplate.from_template("Summarise item {n}") | gpt | StrOutputParser()


def _check_paused(exc: HostUnreachable, job: batchain.Job, port: int) -> None:
    message = str(exc)
    host = f"http://127.0.0.1:{port}"
    assert exc.host == host and host in message and "\n" not in message
    assert TEST_KEY not in message and "/v1" not in message  # no key, no path
    assert job.status == batchain.JobStatus.PAUSED
    assert host in (job.record.note or "")
    counts = job.counts  # the items read so far (a realtime window's worth) wait, none failed
    assert counts["failed"] == counts["succeeded"] == 0 and counts["pending"] == counts["total"] > 0


def _resume_completes(sb: Sandbox, store: Path, job_id: str, tier: str) -> None:
    job = batchain.Job.open(job_id, store=store, chain=_chain(sb.openai_base_url))
    job.resume([{"n": i} for i in range(N)], progress=False)
    assert job.status == batchain.JobStatus.COMPLETED
    results = job.results()
    assert [r.index for r in results] == list(range(N)) and all(r.ok for r in results)
    ledger = sb.ledger()
    assert not sb.duplicates(), "a request was billed twice"
    assert len(ledger) == N and {e.tier for e in ledger} == {tier}


def test_an_unreachable_host_pauses_a_realtime_job_quickly_and_a_resume_completes_it(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    port, store = _closed_port(), tmp_path / "s.sqlite"
    rows = [{"n": i} for i in range(N)]
    start = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        batchain.run(
            _chain(f"http://127.0.0.1:{port}/v1"),
            rows,
            store=store,
            job_id="rt",
            max_concurrency=16,
            progress=False,
        )
    assert time.monotonic() - start < 10
    job = batchain.Job.open("rt", store=store)
    _check_paused(caught.value, job, port)
    assert job.stats["sent"] < N / 4, job.stats  # far fewer requests than items
    assert not sandbox.ledger()
    _resume_completes(sandbox, store, "rt", "realtime")


def test_an_unreachable_host_pauses_a_batch_job_and_a_resume_completes_it(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.configure(**FAST)
    port, store = _closed_port(), tmp_path / "b.sqlite"
    rows = [{"n": i} for i in range(N)]
    start = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        batchain.run(
            _chain(f"http://127.0.0.1:{port}/v1"),
            rows,
            mode="batch",
            store=store,
            job_id="bt",
            progress=False,
            poll_min=0.05,
        )
    # the SDK retries each batch request twice itself (about 1.5 s): still well bounded
    assert time.monotonic() - start < 30
    _check_paused(caught.value, batchain.Job.open("bt", store=store), port)
    assert not sandbox.ledger()
    _resume_completes(sandbox, store, "bt", "batch")


def test_the_cli_says_which_host_in_one_line_and_resume_completes(sandbox: Sandbox, tmp_path: Path) -> None:
    store = tmp_path / "c.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(BATCHAIN_STORE=str(store), OPENAI_API_KEY=TEST_KEY, NO_COLOR="1")
    env.pop("BATCHAIN_DEBUG", None)
    cli = Cli(env={**env, "OPENAI_BASE_URL": sandbox.openai_base_url}, cwd=tmp_path, store=store)
    port = _closed_port()
    got = cli(
        "run",
        CHAIN,
        str(HEADLINES),
        "--job-id",
        "cli-brk",
        "-q",
        env={**env, "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"},
    )
    assert got.returncode == 1, got.stderr
    errors = [line for line in got.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, got.stderr
    assert f"http://127.0.0.1:{port} is unreachable" in errors[0] and "batchain resume cli-brk" in errors[0]
    assert TEST_KEY not in got.stderr
    done = cli("resume", "cli-brk", "-q")
    assert done.returncode == 0, done.stderr
    assert cli.here("status", "cli-brk").stdout.count("completed") >= 1


def test_http_errors_never_trip_the_breaker(sandbox: Sandbox, tmp_path: Path) -> None:
    """A host that answers, even with 500s only, is reachable: its items fail as before."""
    sandbox.configure(error_rate=1.0)
    rows = [{"n": i} for i in range(40)]
    job = batchain.run(
        _chain(sandbox.openai_base_url), rows, store=tmp_path / "h.sqlite", max_retries=1, progress=False
    )
    assert job.status == batchain.JobStatus.COMPLETED
    assert job.counts["failed"] == 40
    assert all("InternalServerError" in (r.error_message or "") for r in job.results())
