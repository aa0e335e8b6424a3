"""Auto mode: high-priority items realtime, the rest batch; a deadline pulls stragglers to
realtime. (Levels, their sources and errors: test_priority.py.)"""

from __future__ import annotations

import time
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.sandbox import Sandbox
from tests.engine.conftest import make_openai

PROMPT = ChatPromptTemplate.from_template("Reply to ticket {x}.")


def test_priority_field_splits_realtime_and_batch(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    chain = PROMPT | make_openai(sandbox) | StrOutputParser()
    inputs = [{"x": i, "urgent": i % 4 == 0} for i in range(20)]
    job = batchain.run(
        chain, inputs, mode="auto", priority_field="urgent", store=store_path, progress=False, poll_min=0.02
    )
    assert job.counts["succeeded"] == 20
    tiers = [e.tier for e in sandbox.ledger()]
    assert tiers.count("realtime") == 5 and tiers.count("batch") == 15
    assert not sandbox.duplicates()


def test_priority_function(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    chain = PROMPT | make_openai(sandbox) | StrOutputParser()
    job = batchain.run(
        chain,
        [{"x": i} for i in range(10)],
        mode="auto",
        priority=lambda row: 1 if row["x"] >= 8 else 0,
        store=store_path,
        progress=False,
        poll_min=0.02,
    )
    assert job.counts["succeeded"] == 10
    assert [e.tier for e in sandbox.ledger()].count("realtime") == 2


def test_deadline_moves_stragglers_to_realtime(sandbox: Sandbox, store_path: Path) -> None:
    # the provider would take 30 s; the deadline leaves about 1.5 s for batch
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=30.0, batch_finalizing_s=0.01)
    chain = PROMPT | make_openai(sandbox) | StrOutputParser()
    t0 = time.monotonic()
    job = batchain.run(
        chain,
        [{"x": i} for i in range(40)],
        mode="auto",
        deadline=3.0,
        deadline_margin=1.5,
        store=store_path,
        progress=False,
        poll_min=0.05,
    )
    elapsed = time.monotonic() - t0
    assert job.counts["succeeded"] == 40
    assert elapsed < 10
    tiers = [e.tier for e in sandbox.ledger()]
    assert tiers.count("batch") >= 1  # what the provider finished before the switch is kept
    assert tiers.count("realtime") >= 30
    assert len(tiers) == 40
    assert not sandbox.duplicates()
