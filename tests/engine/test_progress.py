"""The live progress display: shown in a terminal, silent when output is not one."""

from __future__ import annotations

import os
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
    child.expect("calls in flight")  # the live line, while the job runs
    child.expect("items/s")
    child.expect("DONE 120")
    output = child.before or ""
    child.expect(pexpect.EOF)
    assert "ok 120" in output or "ok 120" in (child.before or "")


def test_progress_is_silent_when_not_a_terminal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = SCRIPT.format(store=str(tmp_path / "s.sqlite"), progress=True)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "DONE 120"
    assert "calls in flight" not in proc.stderr


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
    child.expect(r"items 0/60 · batches: 3 ")  # the batches are at the provider
    child.expect(r"batches: 3 in progress · requests \d+/60 · finish \d\d:\d\d \(")  # progress reported
    child.expect("DONE 60")
    output = child.before or ""
    child.expect(pexpect.EOF)
    assert "items 60/60 · batches: 3 collected" in output + (child.before or "")
