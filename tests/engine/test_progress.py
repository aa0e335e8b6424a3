"""The live progress display: shown in a terminal, silent when output is not one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import batchain
    from batchain.sandbox import Sandbox, SandboxConfig
    from langchain_openai import ChatOpenAI
    from langchain_core.prompts import ChatPromptTemplate

    with Sandbox(SandboxConfig(latency_ms=40)) as sb:
        chain = ChatPromptTemplate.from_template("Hi {{x}}") | ChatOpenAI(
            model="gpt-4o-mini", api_key="sk-test", base_url=sb.openai_base_url)
        job = batchain.run(chain, [{{"x": i}} for i in range(120)], store={store!r},
                           max_concurrency=8, progress={progress})
        print("DONE", job.counts["succeeded"])
    """
)


def test_progress_is_live_in_a_terminal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pexpect = pytest.importorskip("pexpect")
    script = SCRIPT.format(store=str(tmp_path / "s.sqlite"), progress=True)
    child = pexpect.spawn(sys.executable, ["-c", script], encoding="utf-8", timeout=60, dimensions=(24, 200))
    # the live line, while the job runs: a list's length is the total
    child.expect(r"\d+/120 items · \d+% · ETA \S+ · cost \$")
    child.expect("items/s")
    child.expect("DONE 120")
    output = child.before or ""
    child.expect(pexpect.EOF)
    assert re.search(r"120/120 items · 100% · done in \d+s · cost \$0\.\d+ · ", output)


def test_progress_is_silent_when_not_a_terminal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = SCRIPT.format(store=str(tmp_path / "s.sqlite"), progress=True)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "DONE 120"
    assert "items" not in proc.stderr


BATCH_SCRIPT = textwrap.dedent(
    """
    import batchain
    from batchain.sandbox import Sandbox, SandboxConfig
    from langchain_openai import ChatOpenAI
    from langchain_core.prompts import ChatPromptTemplate

    with Sandbox(SandboxConfig(batch_validating_s=0.5, batch_processing_s=4)) as sb:
        chain = ChatPromptTemplate.from_template("Hi {{x}}") | ChatOpenAI(
            model="gpt-4o-mini", api_key="sk-test", base_url=sb.openai_base_url)
        job = batchain.run(chain, [{{"x": i}} for i in range(60)], store={store!r}, mode="batch",
                           max_batch_size=25, poll_min=0.2, poll_max=0.5, progress=True)
        print("DONE", job.counts["succeeded"])
    """
)


def test_batch_progress_shows_items_batches_and_the_expected_finish(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pexpect = pytest.importorskip("pexpect")
    script = BATCH_SCRIPT.format(store=str(tmp_path / "s.sqlite"))
    env = {**os.environ, "COLUMNS": "400"}  # room for the whole line (something in a test run sets 80)
    child = pexpect.spawn(
        sys.executable, ["-c", script], encoding="utf-8", timeout=60, dimensions=(24, 400), env=env
    )
    child.expect(r"0/60 items · 0% · ETA \S+ · cost \$0\.000000 · batches 3 ")  # at the provider
    # progress reported: the ETA is the batches' expected finish
    child.expect(r"0/60 items · 0% · ETA \d+s · cost \$0\.000000 · batches 3 in progress · ")
    child.expect(r"requests \d+/60 at the provider")
    child.expect("DONE 60")
    output = child.before or ""
    child.expect(pexpect.EOF)
    # tokens and cost in batch mode too, from the answered calls
    final = (
        r"60/60 items · 100% · done in \d+s · cost \$0\.\d*[1-9]\d* · batches 3 collected · "
        r"[\d.]+ items/s · tokens [1-9]"
    )
    assert re.search(final, output + (child.before or ""))
