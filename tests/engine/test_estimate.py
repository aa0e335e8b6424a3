"""Estimates: token counts from the real request bodies; a 5% pilot within 15% of the actual."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

import batchain
from batchain.cost.estimate import count_tokens
from batchain.sandbox import Sandbox
from tests.engine.conftest import make_anthropic, make_openai

PRICES = {
    "openai/gpt-4o-mini": {"input": 1.0, "output": 4.0},
    "anthropic/claude-haiku-4-5": {"input": 2.0, "output": 8.0},
}


def three_stage(sb: Sandbox) -> object:
    gpt = make_openai(sb, max_tokens=60)
    claude = make_anthropic(sb, max_tokens=60)
    outline = ChatPromptTemplate.from_template("Outline a note about {x}") | gpt | StrOutputParser()
    draft = ChatPromptTemplate.from_template("Draft from {outline}") | claude | StrOutputParser()
    review = ChatPromptTemplate.from_template("Review {draft}") | gpt | StrOutputParser()
    return RunnablePassthrough.assign(outline=outline) | RunnablePassthrough.assign(draft=draft) | review


def inputs(n: int) -> list[dict[str, str]]:
    # varied lengths, and 20% duplicates
    return [{"x": f"subject {i % (n * 4 // 5)} " + "detail " * (i % 17)} for i in range(n)]


def test_dry_estimate_counts_first_stage_requests_without_sending(sandbox: Sandbox, store_path: Path) -> None:
    est = batchain.estimate(three_stage(sandbox), inputs(50), prices=PRICES)
    assert sandbox.ledger() == []  # nothing was sent
    assert est.items == 50 and est.calls == 50
    assert est.models == {"openai/gpt-4o-mini": 50}
    assert est.max_output_tokens == 50 * 60
    assert est.token_method  # says how it counted
    rt, batch = est.costs["realtime"], est.costs["batch"]
    assert rt.low is not None and rt.high is not None and batch.low is not None
    assert batch.low == rt.low / 2
    expected_low = Decimal(est.input_tokens) * 1 / 10**6
    assert rt.low == expected_low


def test_count_tokens_says_how() -> None:
    n, method = count_tokens({"messages": [{"role": "user", "content": "one two three four"}]})
    assert n > 0 and method


def test_five_percent_pilot_lands_within_15_percent(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    rows = inputs(200)
    est = batchain.estimate(
        three_stage(sandbox), rows, pilot=10, prices=PRICES, store=tmp_path / "pilot.sqlite"
    )
    assert est.pilot_items == 10
    for mode in ("realtime", "batch"):
        job = batchain.run(
            three_stage(sandbox),
            rows,
            mode=mode,
            prices=PRICES,
            progress=False,
            store=tmp_path / f"{mode}.sqlite",
            poll_min=0.02,
        )
        # what the whole job's items used, duplicates included, at this mode's price
        actual = Decimal(0)
        for calls in job.store.item_calls(job.id).values():
            for provider, model, usage in calls:
                rates = PRICES[f"{provider}/{model}"]
                cost = (
                    Decimal(usage.input_tokens) * Decimal(str(rates["input"]))
                    + Decimal(usage.output_tokens) * Decimal(str(rates["output"]))
                ) / 10**6
                actual += cost / 2 if mode == "batch" else cost
        expected = est.costs[mode].expected
        assert expected is not None
        assert abs(expected - actual) / actual < Decimal("0.15"), (mode, expected, actual)
    auto = est.costs["auto"]
    assert auto.expected == est.costs["batch"].expected  # no urgent items: all batch
