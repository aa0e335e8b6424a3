"""The CLI names an endpoint without a Batch API, and the way out, in its own flags."""

from __future__ import annotations

import collections
import json
import textwrap
from pathlib import Path

from batchain.sandbox import Sandbox
from tests.cli.conftest import Cli

SEED_003 = """
import os
from langchain_anthropic import ChatAnthropic
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel
from langchain_openai import ChatOpenAI

prompt = ChatPromptTemplate.from_template("请用一句话回答\uff1a{question}")
gpt = ChatOpenAI(model="gpt-4o-mini", temperature=0)
claude = ChatAnthropic(model="claude-haiku-4-5", temperature=0, max_tokens=200)
gemini = ChatOpenAI(model="gemini-2.0-flash", temperature=0, base_url=os.environ["GEMINI_BASE_URL"],
                    api_key=os.environ["OPENAI_API_KEY"])
chain = RunnableParallel(
    gpt=prompt | gpt | StrOutputParser(),
    claude=prompt | claude | StrOutputParser(),
    gemini=prompt | gemini | StrOutputParser(),
)
"""


def _setup(cli: Cli, sb: Sandbox, tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "seed003.py").write_text(textwrap.dedent(SEED_003))
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"question": f"问题{i}"}) + "\n" for i in range(4)))
    cli.env["GEMINI_BASE_URL"] = sb.compat_base_url
    return str(tmp_path / "seed003.py") + ":chain", str(tmp_path / "q.jsonl")


def test_batch_only_refuses_in_cli_terms_and_without_it_the_endpoint_runs_realtime(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    cli_sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    chain, data = _setup(cli, cli_sandbox, tmp_path)
    refused = cli("run", chain, data, "--mode", "batch", "--batch-only", "--quiet")
    assert refused.returncode != 0
    message = " ".join(refused.stderr.split())
    assert "ChatOpenAI(gemini-2.0-flash)" in message and "has no Batch API" in message
    assert "drop --batch-only" in message and "add --endpoint-mode 127.0.0.1=batch" in message
    assert "batch_only=True" not in message and "Traceback" not in refused.stderr
    assert cli_sandbox.ledger() == []

    done = cli(
        "run",
        chain,
        data,
        "--mode",
        "batch",
        "--realtime-fallback",
        "--poll-interval",
        "0.05",
        "-o",
        "out.jsonl",
    )
    assert done.returncode == 0, done.stderr
    tiers = collections.Counter((e.model, e.tier) for e in cli_sandbox.ledger())
    assert tiers == {
        ("gpt-4o-mini", "batch"): 4,
        ("claude-haiku-4-5", "batch"): 4,
        ("gemini-2.0-flash", "realtime"): 4,
    }
    assert not cli_sandbox.duplicates()
    jobs = [json.loads(line) for line in cli.here("jobs", "--json").stdout.splitlines()]
    assert len(jobs) == 1  # the refused run left no job
    job_id = jobs[0]["id"]
    report = json.loads(cli.here("report", job_id, "--json").stdout)
    (note,) = report["notes"]
    assert note.startswith(
        f"ChatOpenAI(gemini-2.0-flash) at {cli_sandbox.compat_base_url}: 4 calls ran realtime"
    )
    summary = " ".join(done.stderr.split())
    assert "4 calls ran realtime at full price" in summary


def test_endpoint_mode_and_batch_only_flags_are_checked(
    cli: Cli, cli_sandbox: Sandbox, tmp_path: Path
) -> None:
    chain, data = _setup(cli, cli_sandbox, tmp_path)
    bad = cli("run", chain, data, "--mode", "batch", "--endpoint-mode", "gemini-2.0-flash")
    assert bad.returncode != 0 and "TARGET=batch or TARGET=realtime" in bad.stderr
    both = cli("run", chain, data, "--mode", "batch", "--batch-only", "--realtime-fallback")
    assert both.returncode != 0 and "contradict" in both.stderr
    assert cli_sandbox.ledger() == []
