"""The live progress display of the console script, in a real pseudo-terminal (pexpect).

`batchain run` and `batchain wait` draw a live line while the job runs (items done,
calls in flight, rate, batches at the provider) and leave the summary when it ends;
piped, they stay silent (every other CLI test reads their stderr). Ctrl-C in `wait`
leaves the batches at the provider and says how to continue.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

import batchain
from batchain.sandbox import Sandbox
from tests.cli.conftest import REPO, Cli
from tests.cli.test_cli import assert_one_line_error, headlines, read_jsonl, write_jsonl

CLASSIFY = str(REPO / "examples" / "classify.yaml")


def spawn(cli: Cli, *args: str) -> Any:
    """The console script in a 200-column pseudo-terminal; all it prints goes to ``.transcript``."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        cli.command[0],
        [*cli.command[1:], *args],
        # the terminal's own size: a COLUMNS left in the environment by another test would win
        env={k: v for k, v in cli.env.items() if k not in ("COLUMNS", "LINES")},
        cwd=str(cli.cwd),
        encoding="utf-8",
        timeout=60,
        dimensions=(24, 200),
    )
    child.logfile_read = child.transcript = io.StringIO()
    return child


def test_run_and_wait_show_live_progress_in_a_terminal(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect")
    cli_sandbox.configure(latency_ms=40)
    data = write_jsonl(tmp_path / "in.jsonl", headlines(60, prefix="tty: "))
    out = tmp_path / "out.jsonl"
    child = spawn(cli, "run", CLASSIFY, str(data), "-o", str(out), "-c", "4")
    child.expect(r"calls in flight \d")  # the live line, while the job runs
    child.expect(r"\d+\.\d items/s")
    child.expect(r"(job-\d{8}-\d{6}-[0-9a-f]{6})\S* \S*completed\S* in")  # rich keeps bold under NO_COLOR
    job_id = child.match.group(1)
    child.expect("next: ")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    transcript = child.transcript.getvalue()
    assert "\r" in transcript.split("completed")[0]  # redrawn in place, not line after line
    assert "ok 60 · failed 0 · calls in flight 0" in transcript  # the last redraw: everything done
    assert len(read_jsonl(out)) == 60 and job_id.startswith("job-")

    # a submitted batch job: `wait` shows the batches at the provider; Ctrl-C leaves them there
    cli_sandbox.configure(latency_ms=0, batch_processing_s=60)
    more = write_jsonl(tmp_path / "more.jsonl", headlines(5, prefix="tty batch: "))
    submitted = cli("submit", CLASSIFY, str(more), "--poll-interval", "0.2")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    waiting = spawn(cli, "wait", job_id, "-o", str(tmp_path / "b.jsonl"))
    # the job's items, its batches as the provider says, the requests done there
    waiting.expect(r"parked 5 · items 0/5 · batches: 1 [a-z ]+ · requests \d/5 · finish ")
    second = cli("wait", job_id)  # one process runs a job at a time
    assert second.returncode == 2, second.stderr
    assert_one_line_error(second, f"job {job_id} is being run by another process")
    waiting.sendintr()
    waiting.expect(r"paused")
    waiting.expect(f"next: batchain wait {job_id}")
    waiting.expect(pexpect.EOF)
    waiting.close()
    assert waiting.exitstatus == 130, waiting.transcript.getvalue()
    job = batchain.Job.open(job_id, store=cli.store)
    assert job.status.value == "waiting" and job.counts["pending"] == 5
    assert [b.status for b in job.store.job_batches(job_id)] == ["submitted"]  # still at the provider
