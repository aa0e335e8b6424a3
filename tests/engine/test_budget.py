"""The budget is a hard cap across realtime and batch: tried hard, never exceeded; an
exhausted job pauses, loses nothing, and resumes with a higher budget."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.engine.budget import UnpricedModel
from batchain.sandbox import LedgerEntry, Sandbox
from tests.engine.conftest import make_openai

# simple, independent prices (USD per million tokens) so the test can price the ledger itself
PRICES = {"openai/gpt-4o-mini": {"input": 100.0, "output": 400.0}}
PROMPT = ChatPromptTemplate.from_template("Write a short line about {x}.")


def ledger_cost(entries: list[LedgerEntry]) -> Decimal:
    total = Decimal(0)
    for e in entries:
        factor = Decimal("0.5") if e.tier == "batch" else Decimal(1)
        total += (Decimal(e.input_tokens) * 100 + Decimal(e.output_tokens) * 400) * factor / 10**6
    return total


def chain_for(sb: Sandbox) -> object:
    return PROMPT | make_openai(sb, max_tokens=20) | StrOutputParser()


def test_realtime_budget_is_never_exceeded_under_concurrency(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(latency_ms=30)
    budget = 0.05  # a few dozen of the 300 calls
    inputs = [{"x": i} for i in range(300)]
    job = batchain.run(
        chain_for(sandbox),
        inputs,
        store=store_path,
        progress=False,
        max_concurrency=64,
        budget=budget,
        prices=PRICES,
    )
    spent = ledger_cost(sandbox.ledger())
    assert Decimal(0) < spent <= Decimal(str(budget))
    assert job.status == batchain.JobStatus.PAUSED
    assert "budget exhausted" in (job.record.note or "")
    done = job.counts["succeeded"]
    assert 0 < done < 300 and job.counts["failed"] == 0
    assert job.store.job_spent(job.id) == spent  # the store priced exactly what was billed

    job.resume(inputs, budget=100.0, prices=PRICES, progress=False)  # reads on where it stopped
    assert job.status == batchain.JobStatus.COMPLETED
    assert job.counts["succeeded"] == 300
    assert not sandbox.duplicates()


def test_batch_budget_submits_only_what_fits(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    budget = 0.04
    inputs = [{"x": i} for i in range(400)]
    job = batchain.run(
        chain_for(sandbox),
        inputs,
        mode="batch",
        store=store_path,
        progress=False,
        budget=budget,
        prices=PRICES,
        poll_min=0.02,
    )
    spent = ledger_cost(sandbox.ledger())
    assert {e.tier for e in sandbox.ledger()} == {"batch"}
    assert Decimal(0) < spent <= Decimal(str(budget))
    assert job.status == batchain.JobStatus.PAUSED
    assert job.stats["batches_created"] >= 2  # it kept going as earlier batches settled
    job.resume(inputs, budget=100.0, prices=PRICES, progress=False)
    assert job.counts["succeeded"] == 400
    assert not sandbox.duplicates()


def test_budget_needs_prices(sandbox: Sandbox, store_path: Path) -> None:
    chain = PROMPT | make_openai(sandbox, model="sandbox-unknown-model-xyz")
    with pytest.raises(UnpricedModel, match="sandbox-unknown-model-xyz"):
        batchain.run(chain, [{"x": 1}], store=store_path, progress=False, budget=1.0)
    assert sandbox.ledger() == []
