"""The live progress display of the console script, in a real pseudo-terminal (pexpect).

`batchain run` and `batchain wait` draw a live line while the job runs (items done,
calls in flight, rate, batches at the provider) and leave the summary when it ends;
piped, they stay silent (every other CLI test reads their stderr). Ctrl-C in `wait`
leaves the batches at the provider and says how to continue.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

import batchain
from batchain.sandbox import Sandbox
from tests.cli.conftest import REPO, Cli
from tests.cli.test_cli import assert_one_line_error, headlines, read_jsonl, write_jsonl

CLASSIFY = str(REPO / "examples" / "classify.yaml")


def spawn(cli: Cli, *args: str, columns: int = 200) -> Any:
    """The console script in a pseudo-terminal ``columns`` wide; all it prints goes to ``.transcript``."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        cli.command[0],
        [*cli.command[1:], *args],
        # the terminal's own size: a COLUMNS left in the environment by another test would win
        env={k: v for k, v in cli.env.items() if k not in ("COLUMNS", "LINES")},
        cwd=str(cli.cwd),
        encoding="utf-8",
        timeout=60,
        dimensions=(24, columns),
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
    # the live line, while the job runs: the total counted from the file before the start
    child.expect(r"\d+/60 items · \d+% · ETA \S+ · cost \$\d+\.\d{6} · ")
    child.expect(r"\d+\.\d items/s · tokens [\d,]+ · \d+ in flight")
    child.expect(r"(job-\d{8}-\d{6}-[0-9a-f]{6})\S* \S*completed\S* in")  # rich keeps bold under NO_COLOR
    job_id = child.match.group(1)
    child.expect("next: ")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    transcript = child.transcript.getvalue()
    assert "\r" in transcript.split("completed")[0]  # redrawn in place, not line after line
    # the last redraw: everything done, with the summary's numbers
    assert re.search(
        r"60/60 items · 100% · done in \d+s · cost \$[\d.]+ · [\d.]+ items/s · tokens [1-9]", transcript
    )
    assert len(read_jsonl(out)) == 60 and job_id.startswith("job-")

    # a submitted batch job: `wait` shows the batches at the provider; Ctrl-C leaves them there
    cli_sandbox.configure(latency_ms=0, batch_processing_s=60)
    more = write_jsonl(tmp_path / "more.jsonl", headlines(5, prefix="tty batch: "))
    submitted = cli("submit", CLASSIFY, str(more), "--poll-interval", "0.2")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    waiting = spawn(cli, "wait", job_id, "-o", str(tmp_path / "b.jsonl"))
    # the job's items, its batches as the provider says, the requests done there
    waiting.expect(r"0/5 items · 0% · ETA \S+ · cost \$0\.000000 · batches 1 [a-z ]+ · ")
    waiting.expect(r"requests \d/5 at the provider · (round \d · )?0 queued")
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


#: one redraw of the live line: the job's items done of all, and the rest of the line
LIVE = re.compile(r"(\d+)/(\d+) items · ([^\r\n]*)")
LIVE_TEXT = re.compile(r"\d+/\d+ items · [^\r\n]*")


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def live_lines(transcript: str) -> list[tuple[int, int, str]]:
    return [(int(m[1]), int(m[2]), m[3]) for m in LIVE.finditer(transcript)]


def test_an_80_column_line_fits_and_a_resumed_job_counts_its_earlier_items(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect")
    cli_sandbox.configure(latency_ms=150)
    data = write_jsonl(tmp_path / "in.jsonl", headlines(60, prefix="tty resume: "))
    child = spawn(cli, "run", CLASSIFY, str(data), "-c", "2", "--budget", "5", columns=80)
    # total, percent, ETA, cost and budget fit in 80 columns; the rest of the fields are dropped
    child.expect(r"([1-9]\d*)/60 items · \d+% · ETA \S+ · cost \$\d\.\d{6} · budget \$\d\.\d{4} left of \$5")
    child.sendintr()  # the job pauses with part of its items done
    child.expect(r"(job-\d{8}-\d{6}-[0-9a-f]{6})\S* \S*paused")
    job_id = child.match.group(1)
    child.expect(r"items +(\d+) ok · 0 failed · (\d+) not run yet")
    before = int(child.match.group(1))
    child.expect(pexpect.EOF)
    child.close()
    first = child.transcript.getvalue()
    assert 0 < before < 60, first
    drawn = LIVE_TEXT.findall(first)
    assert drawn and all(len(line) <= 79 for line in drawn), drawn  # the last column left empty

    resumed = spawn(cli, "resume", job_id, "-o", str(tmp_path / "out.jsonl"), columns=80)
    resumed.expect(r"completed\S* in")
    resumed.expect(r"items +60 ok · 0 failed")
    resumed.expect(r"cost +(\$\d\.\d{6}) paid")
    paid = resumed.match.group(1)
    resumed.expect("next: ")
    resumed.expect(pexpect.EOF)
    resumed.close()
    assert resumed.exitstatus == 0, resumed.transcript.getvalue()
    lines = live_lines(resumed.transcript.getvalue())
    # the job's counts from the first redraw on (the earlier run's items included), as the
    # summary counts them; never this run's alone
    assert lines and lines[0][0] >= before and all(total == 60 for _, total, _ in lines)
    assert lines[-1][0] == 60 and lines[-1][2].startswith("100% · done in ")
    # the cost so far is the job's too: both runs' calls, the summary's amount
    assert f"cost {paid} · budget " in lines[-1][2]
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 60
    assert len(cli_sandbox.ledger()) == 60 and not cli_sandbox.duplicates()  # nothing paid twice

    # `status` and `jobs` fit the same terminal: values wrap between words, columns stay
    for args, expected in ((("status", job_id), "60 succeeded · 0 failed"), (("jobs",), f"{job_id} ")):
        shown = spawn(cli, *args, columns=80)
        shown.expect(pexpect.EOF)
        shown.close()
        text = ANSI.sub("", shown.transcript.getvalue())
        assert shown.exitstatus == 0 and expected in text, text
        assert all(len(line) <= 80 for line in text.splitlines()), text


@pytest.mark.parametrize("width", [80, 120, 200])
def test_the_jobs_table_keeps_every_count_whole_at_any_width(tmp_path: Path, width: int) -> None:
    from rich.console import Console

    from batchain.cli.render import jobs_table
    from batchain.states import JobStatus
    from batchain.store.records import JobRecord

    rec = JobRecord(
        id="job-20261130-105619-6ad3f8",
        status=JobStatus.COMPLETED,
        mode="realtime",
        created_at=1_700_000_000.0,
        updated_at=1_700_000_000.0,
        chain_ref="/home/me/projects/newsroom/chains/classify_headlines.py:chain",
        inputs_complete=True,
    )
    counts = {"succeeded": 1_234_567, "failed": 12_345, "total": 1_246_912}
    out = Console(width=width, record=True, file=io.StringIO())
    out.print(jobs_table([(rec, counts)], str(tmp_path / "store.sqlite"), width))
    text = out.export_text()
    assert all(len(line) <= width for line in text.splitlines()), text
    for cell in (rec.id, "completed", "realtime", "1,234,567", "12,345", "1,246,912"):
        assert cell in text
    # the chain shows where there is room for it, else goes first
    assert ("classify_headlines.py:chain" in text) == (width == 200)
