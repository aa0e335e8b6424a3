"""The command line on a PostgreSQL store: a job submitted by one process, waited for,
listed and reported by others, through ``--store postgresql://...`` or ``BATCHAIN_STORE``;
the URL's password is never printed."""

from __future__ import annotations

from pathlib import Path

from batchain.sandbox import Sandbox
from tests.cli.conftest import Cli
from tests.cli.test_cli import read_jsonl
from tests.cli.test_commands import EXTRACT, json_of

SECRET = "pw-0123456789SECRET"


def test_submit_wait_jobs_and_report_on_a_postgres_store(
    cli: Cli, cli_sandbox: Sandbox, pg_url: str, tmp_path: Path
) -> None:
    cli_sandbox.configure(batch_processing_s=0.2)
    url = pg_url.replace("postgres@", f"postgres:{SECRET}@", 1)  # the test server trusts any password
    on_pg = Cli(env=dict(cli.env, BATCHAIN_STORE=url), cwd=cli.cwd, store=Path("unused"))
    data = tmp_path / "notes.jsonl"
    data.write_text("".join(f'{{"id": "n{i}", "text": "Note {i} about the harbour"}}\n' for i in range(5)))

    submitted = on_pg("submit", EXTRACT, str(data), "--poll-interval", "0.1")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    status = on_pg("status", job_id)
    assert status.returncode == 0 and "waiting  (batch)" in status.stdout, status.stderr

    out = tmp_path / "facts.jsonl"
    waited = on_pg("wait", job_id, "-o", str(out))
    assert waited.returncode == 0, waited.stderr
    assert [r["status"] for r in read_jsonl(out)] == ["succeeded"] * 5
    assert {e.tier for e in cli_sandbox.ledger()} == {"batch"} and len(cli_sandbox.ledger()) == 5
    assert not cli_sandbox.duplicates()

    # --store names the same store as BATCHAIN_STORE did
    listed = on_pg("jobs", "--store", url, "--json")
    assert json_of(listed)["id"] == job_id  # one JSON object per job
    table = on_pg("jobs", "--store", url)
    assert job_id in table.stdout and "127.0.0.1" in table.stdout
    report = json_of(on_pg("report", job_id, "--json"))
    assert float(report["paid"]) > 0 and float(report["savings"]) > 0
    missing = on_pg("status", "job-nope")
    assert missing.returncode == 2 and "no job 'job-nope'" in missing.stderr
    for proc in (submitted, status, waited, listed, table, missing):
        assert SECRET not in proc.stdout + proc.stderr
