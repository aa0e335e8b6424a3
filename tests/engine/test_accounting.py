"""Reference workloads: per-call usage and tier match the sandbox ledger exactly, in every
mode, and the job's cost equals the ledger's tokens priced independently here."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

import batchain
from batchain.sandbox import LedgerEntry, Sandbox
from tests.engine.conftest import make_anthropic, make_openai

RATES = {  # USD per million tokens: input, cached input, output
    ("openai", "gpt-4o-mini"): (Decimal("0.15"), Decimal("0.075"), Decimal("0.6")),
    ("anthropic", "claude-haiku-4-5"): (Decimal("1"), Decimal("0.1"), Decimal("5")),
}
PRICES = {
    "openai/gpt-4o-mini": {
        "input": 0.15,
        "cache_read": 0.075,
        "output": 0.6,
        "batch": {"input": 0.075, "cache_read": 0.0375, "output": 0.3},
    },
    "anthropic/claude-haiku-4-5": {"input": 1, "cache_read": 0.1, "output": 5},
}


def priced(e: LedgerEntry) -> Decimal:
    full, cached, out = RATES[(e.provider, e.model)]
    cost = (
        Decimal(e.input_tokens - e.cached_tokens) * full
        + Decimal(e.cached_tokens) * cached
        + Decimal(e.output_tokens) * out
    ) / 10**6
    return cost / 2 if e.tier == "batch" else cost


def classify(sb: Sandbox) -> object:
    return (
        ChatPromptTemplate.from_messages(
            [
                ("system", "You label news. Classify into one of: tech, business, sports, other."),
                ("human", "Headline: {text}"),
            ]
        )
        | make_openai(sb)
        | StrOutputParser()
    )


def three_stage(sb: Sandbox) -> object:
    gpt, claude = make_openai(sb), make_anthropic(sb)
    outline = ChatPromptTemplate.from_template("Outline {text}") | gpt | StrOutputParser()
    draft = ChatPromptTemplate.from_template("Draft {outline}") | claude | StrOutputParser()
    review = ChatPromptTemplate.from_template("Review {draft}") | gpt | StrOutputParser()
    return RunnablePassthrough.assign(outline=outline) | RunnablePassthrough.assign(draft=draft) | review


def rows(n: int) -> list[dict[str, object]]:
    distinct = n * 4 // 5  # 20% duplicates
    return [{"text": f"story number {i % distinct} about markets", "urgent": i % 3 == 0} for i in range(n)]


@pytest.mark.parametrize("workload", ["classify", "three_stage"])
@pytest.mark.parametrize("mode", ["realtime", "batch", "auto"])
def test_usage_tier_and_cost_match_the_ledger(
    sandbox: Sandbox, store_path: Path, workload: str, mode: str
) -> None:
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    chain = classify(sandbox) if workload == "classify" else three_stage(sandbox)
    job = batchain.run(
        chain,
        rows(40),
        mode=mode,
        store=store_path,
        progress=False,
        poll_min=0.02,
        prices=PRICES,
        **({"priority_field": "urgent"} if mode == "auto" else {}),
    )
    assert job.counts["succeeded"] == 40
    ledger = sandbox.ledger()
    assert not sandbox.duplicates()

    con = sqlite3.connect(store_path)
    calls = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT request_hash, tier, input_tokens, cache_read_tokens, output_tokens, cost"
            " FROM calls WHERE status='succeeded'"
        )
    }
    assert len(calls) == len(ledger)  # every billed request is one stored call, and back
    for e in ledger:
        tier, n_in, n_cached, n_out, cost = calls[e.request_hash]
        assert (tier, n_in, n_cached, n_out) == (e.tier, e.input_tokens, e.cached_tokens, e.output_tokens)
        assert Decimal(cost) == priced(e)
    tiers = {e.tier for e in ledger}
    assert tiers == (
        {"realtime"} if mode == "realtime" else {"batch"} if mode == "batch" else {"realtime", "batch"}
    )

    expected = sum((priced(e) for e in ledger), Decimal(0))
    assert job.cost == expected
    report = job.report()
    assert report.paid == expected
    assert report.avoided > 0  # the duplicates were neither sent nor paid
