"""YAML chains and the batch commands (submit, wait, report) through the real console script.

Every command runs in its own process against the sandbox in this test process, so a job
submitted by one command is found, reloaded (its YAML chain included) and finished by
another, as a user would do it.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

from batchain.sandbox import Sandbox
from tests.cli.conftest import REPO, Cli
from tests.cli.test_cli import assert_one_line_error, read_jsonl
from tests.engine.test_prompt_cache import PRICES, priced

EXAMPLES = REPO / "examples"
CLASSIFY = str(EXAMPLES / "classify.yaml")
EXTRACT = str(EXAMPLES / "extract.yaml")
LABELS = {"tech", "business", "entertainment", "sports", "other"}


def json_of(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_yaml_chain_bad_rows_and_missing_fields_name_file_and_line(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "mixed.jsonl"
    data.write_text(
        '{"id": "a", "headline": "Chipmaker unveils faster AI processor"}\n'
        '{"id": "b", "headline": "Stocks rally as investors cheer bank earnings"}\n'
        '{"id": "c", "headline": broken\n'
        '{"id": "d", "title": "a row without the field the prompt uses"}\n'
        '"A plain line of text: the striker scores twice in the cup final"\n'
    )
    out = tmp_path / "out.jsonl"
    proc = cli("run", CLASSIFY, str(data), "-o", str(out))
    assert proc.returncode == 1, proc.stderr
    assert f"{data}:3: invalid JSON" in proc.stderr
    # the failed item is reported with the line its row came from, and the missing field
    failed = f"failed: {data}:4 (item 2) id d: MissingInputVariable: input has no field 'headline'"
    assert failed in proc.stderr
    assert "3 ok · 1 failed · 1 bad input row skipped" in proc.stderr
    rows = read_jsonl(out)
    assert [(r["id"], r["status"]) for r in rows] == [
        ("a", "succeeded"),
        ("b", "succeeded"),
        ("d", "failed"),
        (None, "succeeded"),
    ]
    assert [r["output"] for r in rows if r["status"] == "succeeded"] == ["tech", "business", "sports"]
    assert rows[2]["error"]["type"] == "MissingInputVariable"  # type: ignore[index]

    # a CSV without the column the prompt needs: every row fails, each named by its line
    table = tmp_path / "titles.csv"
    table.write_text("id,title\nx,First\ny,Second\n")
    missing = cli("run", CLASSIFY, str(table), "-o", str(tmp_path / "t.jsonl"))
    assert missing.returncode == 1, missing.stderr
    assert f"failed: {table}:2 (item 0) id x: MissingInputVariable" in missing.stderr
    assert f"failed: {table}:3 (item 1) id y: MissingInputVariable" in missing.stderr
    assert "0 ok · 2 failed" in missing.stderr and "2 x MissingInputVariable" in missing.stderr


def test_bad_yaml_files_are_usage_errors(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"headline": "x"}\n')
    bad = tmp_path / "chain.yaml"
    bad.write_text("model:\n  provider: mistral\n  name: mistral-large\nprompt: hi {headline}\n")
    proc = cli("run", "chain.yaml", str(data))  # relative to where the user stands
    assert proc.returncode == 2
    assert_one_line_error(proc, "chain.yaml: model.provider: unknown provider 'mistral'")
    assert not cli.store.exists()  # refused before any job was created


def test_submit_then_wait_results_report_in_other_processes(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    cli_sandbox.configure(batch_processing_s=0.2)
    notes = [json.loads(line) for line in (EXAMPLES / "notes.jsonl").read_text().splitlines()]
    notes.append({"id": "n4", "text": "This one is refused by the provider [[fail:400]]"})
    data = tmp_path / "notes.jsonl"
    data.write_text("".join(json.dumps(n) + "\n" for n in notes))

    submitted = cli("submit", EXTRACT, str(data), "--poll-interval", "0.1")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()  # only the id on stdout: JOB=$(batchain submit ...)
    assert job_id.startswith("job-") and len(submitted.stdout.splitlines()) == 1
    assert f"next: batchain wait {job_id}" in submitted.stderr and "1 submitted" in submitted.stderr

    status = cli("status", job_id)
    assert "waiting  (batch)" in status.stdout and "extract.yaml" in status.stdout
    assert f"next: batchain wait {job_id}" in status.stdout

    out = tmp_path / "facts.jsonl"
    waited = cli("wait", job_id, "-o", str(out))  # reloads extract.yaml in a new process
    assert waited.returncode == 1, waited.stderr  # like run: finished, with a failed item
    assert "failed: item 3 id n4: BatchCallError: openai: 400: Sandbox directive" in waited.stderr
    assert "3 ok · 1 failed" in waited.stderr
    assert "3 in 1 provider batch over 1 round" in waited.stderr or "4 in 1 provider batch" in waited.stderr
    rows = read_jsonl(out)
    assert [r["status"] for r in rows] == ["succeeded"] * 3 + ["failed"]
    assert all(set(r["output"]) == {"topic", "places", "mood"} for r in rows[:3])  # type: ignore[arg-type]
    assert {e.tier for e in cli_sandbox.ledger()} == {"batch"} and not cli_sandbox.duplicates()

    again = cli("wait", job_id, "--quiet")  # nothing left to run: the same results, no new calls
    assert again.returncode == 1 and len(again.stdout.splitlines()) == 4
    # quick looks in this process (each console script costs a second of imports)
    report = json_of(cli.here("report", job_id, "--json"))
    assert float(report["paid"]) > 0 and float(report["savings"]) > 0  # batch price
    assert json_of(cli.here("cost", job_id, "--json")) == report  # the former name of report
    as_csv = tmp_path / "facts.csv"
    assert cli.here("results", job_id, "-o", str(as_csv)).returncode == 0
    assert [r["status"] for r in csv.DictReader(as_csv.open())] == [r["status"] for r in rows]
    table = cli("report", job_id)
    assert table.returncode == 0
    for needle in ("openai / gpt-4o-mini", "batch", "round 1", "cache hits", "failed:"):
        assert needle in table.stdout, needle
    assert len(cli_sandbox.ledger()) == 3

    # a realtime job is queued: its inputs stored, nothing run until a worker takes it
    queued = cli("submit", EXTRACT, str(data), "--mode", "realtime")
    assert queued.returncode == 0, queued.stderr
    realtime_id = queued.stdout.strip()
    assert "queued (realtime mode)" in queued.stderr and len(cli_sandbox.ledger()) == 3
    worked = cli("worker", "--until-idle", "--poll-interval", "0.1")
    assert worked.returncode == 0, worked.stderr
    assert f"{job_id} completed" not in worked.stderr  # the batch job was done already
    assert f"{realtime_id} completed" in worked.stderr
    # its calls are the batch job's: answered from the store, not paid again
    assert len(cli_sandbox.ledger()) == 3 and not cli_sandbox.duplicates()
    status_rt = json.loads(cli.here("status", realtime_id, "--json").stdout)  # 1: an item failed
    assert status_rt["counts"]["succeeded"] == 3 and status_rt["status"] == "completed"


def test_submit_then_wait_prime_the_prompt_cache_across_processes(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    cli_sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    chain = str(REPO / "tests" / "engine" / "crash" / "cached_chain.py") + ":chain"  # ~6,600-token system
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(8)))
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    env = {**cli.env, "CRASH_ANTHROPIC_BASE_URL": cli_sandbox.anthropic_base_url}

    submitted = cli("submit", chain, str(data), "--prices", str(prices), "--poll-interval", "0.05", env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    waited = cli("wait", job_id, "--quiet", env=env)  # another process: sends the held calls marked
    assert waited.returncode == 0, waited.stderr
    ledger = cli_sandbox.ledger()
    assert len(ledger) == 8 and not cli_sandbox.duplicates()
    writes = [e for e in ledger if e.cache_creation_tokens]
    assert len(writes) == 1 and sum(1 for e in ledger if e.cached_tokens) == 7
    assert max(e.ts for e in writes) < min(e.ts for e in ledger if e.cached_tokens)
    report = json_of(cli.here("report", job_id, "--json", "--prices", str(prices)))
    assert float(report["paid"]) == float(sum(map(priced, ledger)))
