"""``batchain run --mode auto`` with ``--priority-field`` (a CSV column of levels) and
``--priority`` (one level for the job), judged by the sandbox ledger."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from batchain.sandbox import Sandbox
from tests.cli.conftest import CHAIN, LABELS, REPO, Cli
from tests.cli.test_cli import assert_one_line_error, headlines, write_jsonl


def test_priority_is_a_level_not_a_field_name(cli_offline: Cli, tmp_path: Path) -> None:
    data = str(write_jsonl(tmp_path / "in.jsonl", headlines(2)))
    typo = cli_offline.here("run", CHAIN, data, "--mode", "auto", "--priority", "urgent")
    assert typo.returncode == 2
    assert_one_line_error(typo, "--priority 'urgent' is not a level", "use --priority-field urgent")
    both = cli_offline.here(
        "run", CHAIN, data, "--mode", "auto", "--priority", "high", "--priority-field", "u"
    )
    assert both.returncode == 2
    assert_one_line_error(both, "--priority", "--priority-field")
    not_auto = cli_offline.here("run", CHAIN, data, "--mode", "batch", "--priority-field", "u")
    assert not_auto.returncode == 2
    assert_one_line_error(not_auto, "--priority-field", "--mode auto")


def test_priority_field_from_a_csv_column(cli: Cli, cli_sandbox: Sandbox, tmp_path: Path) -> None:
    cli_sandbox.configure(batch_processing_s=0.1)
    rows = headlines(6, prefix="prio: ")
    urgency = ["high", "1", "-1", "", "low", "urgentt"]  # CSV: numbers and blanks are strings
    data = tmp_path / "in.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "headline", "urgency"])
        writer.writerows([r["id"], r["headline"], u] for r, u in zip(rows, urgency, strict=True))
    out = tmp_path / "out.jsonl"
    proc = cli(
        "run", CHAIN, str(data), "--mode", "auto", "--priority-field", "urgency", "--poll-interval", "0.1",
        "-o", str(out), "--job-id", "prio-csv",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # an item failed
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 5 + ["failed"]
    assert all(r["output"] in LABELS for r in results[:5])
    error = results[5]["error"]
    assert error["type"] == "InvalidPriority"
    assert all(s in error["message"] for s in ("item 5", "'urgency'", "'urgentt'", "high, normal, low"))
    tiers = [e.tier for e in cli_sandbox.ledger()]
    assert sorted(tiers) == ["batch", "batch", "batch", "realtime", "realtime"]  # nothing for the bad row
    assert not cli_sandbox.duplicates()
    # the retry gives the failed row a level of its own: it runs realtime, nothing else again
    typo = cli.here("retry", "prio-csv", "--priority", "urgentt")
    assert typo.returncode == 2
    assert_one_line_error(typo, "--priority 'urgentt' is not a level")
    again = cli("retry", "prio-csv", "--priority", "high", "-o", str(out))
    assert again.returncode == 0, again.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 6
    tiers = [e.tier for e in cli_sandbox.ledger()]
    assert sorted(tiers) == ["batch", "batch", "batch", "realtime", "realtime", "realtime"]
    assert not cli_sandbox.duplicates()


#: a job started from Python, with the reference of its chain recorded as the CLI would
_FROM_PYTHON = """
import sys
import batchain
from examples.classify_chain import chain

def level(row):
    if row["id"] == "h2":
        raise KeyError("tier")
    return "high" if row["id"] == "h0" else "low"

rows = [{"id": f"h{i}", "headline": f"fn: headline {i}"} for i in range(3)]
ref = sys.argv[1]
batchain.run(chain, rows, mode="auto", priority=level, chain_ref=ref, job_id="fn-job",
             progress=False, poll_min=0.05)
batchain.run(chain, [{"id": "r0", "headline": "rt: headline"}], mode="realtime", chain_ref=ref,
             job_id="rt-job", progress=False)
"""


def test_a_job_run_with_a_priority_function_continues_from_the_cli(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    """A function cannot be stored: the CLI asks for a level or a field in its place, in
    CLI terms, and runs the items left with the one given."""
    cli_sandbox.configure(batch_processing_s=0.1)
    made = subprocess.run(
        [sys.executable, "-c", _FROM_PYTHON, CHAIN],
        env={**cli.env, "PYTHONPATH": str(REPO)}, cwd=cli.cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert sorted(e.tier for e in cli_sandbox.ledger()) == ["batch", "realtime", "realtime"]
    refused = cli.here("retry", "fn-job")
    assert refused.returncode == 2
    assert_one_line_error(refused, "ran with a priority function", "--priority normal", "--priority-field")
    not_auto = cli.here("retry", "rt-job", "--priority", "high")
    assert not_auto.returncode == 2
    assert_one_line_error(not_auto, "--mode auto", "realtime mode")
    out = tmp_path / "out.jsonl"
    again = cli("retry", "fn-job", "--priority", "low", "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["status"] for line in out.read_text().splitlines()] == ["succeeded"] * 3
    assert sorted(e.tier for e in cli_sandbox.ledger()) == ["batch", "batch", "realtime", "realtime"]
    assert not cli_sandbox.duplicates()


def test_one_priority_for_the_whole_job(cli: Cli, cli_sandbox: Sandbox, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", headlines(3, prefix="all high: "))
    proc = cli(
        "run", CHAIN, str(data), "--mode", "auto", "--priority", "high", "-o", str(tmp_path / "o.jsonl")
    )
    assert proc.returncode == 0, proc.stderr
    assert [e.tier for e in cli_sandbox.ledger()] == ["realtime"] * 3
    assert not cli_sandbox.duplicates()
