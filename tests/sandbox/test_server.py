"""Sandbox runner: subprocess mode, CLI entry point, admin endpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from batchain.sandbox import Sandbox, SandboxConfig


def test_process_mode_same_api() -> None:
    with Sandbox(SandboxConfig(latency_ms=1), process=True) as sb:
        assert sb.pid is not None
        with openai.OpenAI(base_url=sb.openai_base_url, api_key="sk-test") as client:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
            )
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
            )
        entries = sb.ledger()
        assert len(entries) == 2 and entries[0].provider == "openai"
        assert sb.ledger_summary()["openai"]["gpt-4o-mini"]["realtime"]["requests"] == 2
        assert list(sb.duplicates().values()) == [2]
        assert sb.configure(error_rate=0.25).error_rate == 0.25
        assert sb.config.latency_ms == 1
        with pytest.raises(ValueError, match="unknown sandbox knob"):
            sb.configure(nope=1)
        sb.reset()
        assert sb.ledger() == []
        pid = sb.pid
    # the child is gone after exit
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.05)


def test_process_mode_starts_in_a_process_holding_over_1024_descriptors() -> None:
    # a long test session (or a user's app) can hold that many: select() refuses such a
    # descriptor, and waiting for the sandbox's ready line must not depend on it
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with Sandbox(SandboxConfig(latency_ms=1), process=True) as sb:
            assert sb.config.latency_ms == 1
    finally:
        for fd in held:
            os.close(fd)


def test_module_entry_point_ready_line_and_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchain.sandbox", "--port", "0", "--rpm", "100"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        assert httpx.get(url + "/_sandbox/health").json() == {"status": "ok"}
        assert httpx.get(url + "/_sandbox/config").json()["rpm"] == 100
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_bad_cli_knob_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "batchain.sandbox", "--error-rate", "7"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "error_rate" in result.stderr


def test_admin_endpoints() -> None:
    with Sandbox() as sb:
        url = sb.url + "/_sandbox"
        assert httpx.post(url + "/config", json={"latency_ms": 5, "rpm": 10}).json()["rpm"] == 10
        assert sb.config.latency_ms == 5
        bad = httpx.post(url + "/config", json={"error_rate": "lots"})
        assert bad.status_code == 400 and "error_rate" in bad.json()["error"]
        assert httpx.get(url + "/ledger").json() == []
        assert httpx.get(url + "/ledger/summary").json() == {}
        assert httpx.get(url + "/duplicates").json() == {}
        assert httpx.post(url + "/reset").status_code == 200


def test_watch_stdin_exits_when_parent_goes_away() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchain.sandbox", "--watch-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().startswith("READY ")
    proc.stdin.close()  # what the OS does when the parent dies
    assert proc.wait(timeout=10) == 0
    proc.stdout.close()


def test_forgotten_batches_are_unknown_and_the_ledger_is_kept() -> None:
    """``forget_batches`` (and ``POST /_sandbox/forget``): the sandbox no longer knows the
    batches, as a provider that lost them: retrieve and cancel answer 404 through the
    official SDKs, their items never run, and what was billed stays billed."""
    import anthropic

    with (
        Sandbox(SandboxConfig(batch_validating_s=60)) as sb,
        openai.OpenAI(base_url=sb.openai_base_url, api_key="sk-test", max_retries=0) as oai,
        anthropic.Anthropic(base_url=sb.anthropic_base_url, api_key="sk-ant-test", max_retries=0) as ant,
    ):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        oai.chat.completions.create(**body)  # type: ignore[call-overload]
        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
        upload = oai.files.create(file=("in.jsonl", (json.dumps(line) + "\n").encode()), purpose="batch")
        first = oai.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        request = {
            "custom_id": "b",
            "params": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": body["messages"]},
        }
        second = ant.messages.batches.create(requests=[request])  # type: ignore[list-item]

        assert sb.forget_batches(first.id) == [first.id]
        with pytest.raises(openai.NotFoundError):
            oai.batches.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            oai.batches.cancel(first.id)
        assert ant.messages.batches.retrieve(second.id).id == second.id  # the others are kept

        forgotten = httpx.post(sb.url + "/_sandbox/forget", json={}).json()["forgotten"]
        assert forgotten == [second.id]
        with pytest.raises(anthropic.NotFoundError):
            ant.messages.batches.retrieve(second.id)
        assert httpx.post(sb.url + "/_sandbox/forget", json={"batch_ids": "x"}).status_code == 400
        assert len(sb.ledger()) == 1  # the realtime call: billed, and still in the ledger
