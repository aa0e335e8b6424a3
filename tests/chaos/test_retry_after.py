"""Retry-After is honoured on every status that sends it (issue 12, case 12), not only 429."""

from __future__ import annotations

import time
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.sandbox import Sandbox
from tests.engine.conftest import make_openai


def test_a_server_error_with_retry_after_is_retried_after_that_long(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(server_retry_after_s=1.2)
    chain = ChatPromptTemplate.from_template("[[flaky:1]] {x}") | make_openai(sandbox) | StrOutputParser()
    started = time.monotonic()
    job = batchain.run(chain, [{"x": "hello"}], store=tmp_path / "s.sqlite", progress=False)
    elapsed = time.monotonic() - started
    assert job.counts["succeeded"] == 1
    assert job.stats["retries"] == 1
    # the default backoff would have retried within 0.5 s
    assert elapsed >= 1.2, f"retried after {elapsed:.2f} s, before the server's Retry-After"
    assert len(sandbox.ledger()) == 1 and not sandbox.duplicates()
