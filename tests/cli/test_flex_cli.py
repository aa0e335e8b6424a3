"""``batchain run --mode flex``: OpenAI calls at the flex tier, from the command line."""

from __future__ import annotations

from pathlib import Path

from batchain.sandbox import Sandbox
from tests.cli.conftest import CHAIN, LABELS, Cli
from tests.cli.test_cli import assert_one_line_error, headlines, read_jsonl, write_jsonl


def test_run_mode_flex(cli: Cli, cli_sandbox: Sandbox, tmp_path: Path) -> None:
    cli_sandbox.configure(flex_latency_ms=5, flex_latency_jitter_ms=0)
    data = write_jsonl(tmp_path / "in.jsonl", headlines(6))
    out = tmp_path / "out.jsonl"
    env = {**cli.env, "BATCHAIN_EXAMPLE_MODEL": "gpt-5-mini"}
    proc = cli.__class__(env=env, cwd=cli.cwd, store=cli.store)(
        "run", CHAIN, str(data), "--mode", "flex", "--flex-patience", "30", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert all(r["status"] == "succeeded" and r["output"] in LABELS for r in read_jsonl(out))
    assert [e.tier for e in cli_sandbox.ledger()] == ["flex"] * 6
    assert not cli_sandbox.duplicates()
    assert "6 calls at flex (batch price) · 0 at the standard tier" in proc.stderr
    assert "saved by batch/flex pricing" in proc.stderr


def test_flex_options_need_mode_flex(cli: Cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", headlines(1))
    proc = cli("run", CHAIN, str(data), "--flex-patience", "5")
    assert_one_line_error(proc, "--flex-patience", "--mode flex")
    proc = cli("run", CHAIN, str(data), "--mode", "flex", "--flex-fallback", "later")
    assert_one_line_error(proc, "--flex-fallback 'later'", "standard, batch or fail")
