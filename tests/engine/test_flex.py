"""Flex mode: OpenAI calls at ``service_tier="flex"`` (batch price), the rest standard; flex's
"Resource Unavailable" refusals backed off without throttling the lane, then the fallback.
The sandbox ledger is the judge: tiers, costs priced here independently, nothing twice."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

import batchain
from batchain.engine.scheduler import CallFailed, Scheduler
from batchain.providers.base import FailureKind, Sent
from batchain.providers.openai import OpenAIAdapter
from batchain.sandbox import LedgerEntry, Sandbox
from tests.conftest import TEST_KEY
from tests.engine.conftest import accounted, billed, make_anthropic, make_openai, run_job

FLEX_MODEL = "gpt-5-mini"  # offers flex: the price catalog lists a flex price for it
CLAUDE = "claude-haiku-4-5"
RATES = {  # USD per million tokens: input, cached input, output (standard tier)
    FLEX_MODEL: (Decimal("0.25"), Decimal("0.025"), Decimal("2")),
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.075"), Decimal("0.6")),
    CLAUDE: (Decimal("1"), Decimal("0.1"), Decimal("5")),
}
PRICES = {
    f"openai/{FLEX_MODEL}": {
        "input": 0.25,
        "cache_read": 0.025,
        "output": 2,
        "flex": {"input": 0.125, "cache_read": 0.0125, "output": 1},
    },
    "openai/gpt-4o-mini": {"input": 0.15, "cache_read": 0.075, "output": 0.6},
    f"anthropic/{CLAUDE}": {"input": 1, "cache_read": 0.1, "output": 5},
}


def priced(e: LedgerEntry) -> Decimal:
    """A billed request priced from the ledger alone: flex at half the standard rates."""
    full, cached, out = RATES[e.model]
    cost = (
        Decimal(e.input_tokens - e.cached_tokens) * full
        + Decimal(e.cached_tokens) * cached
        + Decimal(e.output_tokens) * out
    ) / 10**6
    return cost / 2 if e.tier == "flex" else cost


def rows(n: int) -> list[dict[str, str]]:
    distinct = n * 4 // 5  # 20% duplicates
    return [{"text": f"story number {i % distinct} about markets"} for i in range(n)]


def outline(sb: Sandbox, model: str = FLEX_MODEL) -> Any:
    return ChatPromptTemplate.from_template("Outline {text}") | make_openai(sb, model) | StrOutputParser()


def two_stage(sb: Sandbox) -> Any:
    review = ChatPromptTemplate.from_template("Review {outline}") | make_anthropic(sb) | StrOutputParser()
    return RunnablePassthrough.assign(outline=outline(sb)) | review


@pytest.fixture
def flex_sb(sandbox: Sandbox) -> Sandbox:
    """The sandbox with flex answering at once."""
    sandbox.configure(flex_latency_ms=5, flex_latency_jitter_ms=0)
    return sandbox


def stored_calls(store_path: Path) -> dict[str, tuple[Any, ...]]:
    con = sqlite3.connect(store_path)
    try:
        return {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT request_hash, tier, input_tokens, cache_read_tokens, output_tokens, cost"
                " FROM calls WHERE status='succeeded'"
            )
        }
    finally:
        con.close()


def test_flex_mode_openai_at_flex_anthropic_standard(flex_sb: Sandbox, store_path: Path) -> None:
    job = run_job(two_stage(flex_sb), rows(20), store_path, mode="flex", prices=PRICES)
    assert job.counts["succeeded"] == 20
    assert billed(flex_sb) == {(FLEX_MODEL, "flex"): 16, (CLAUDE, "realtime"): 16}
    assert not flex_sb.duplicates()
    assert accounted(job) == billed(flex_sb)  # nothing escaped batchain's accounting

    ledger = flex_sb.ledger()
    calls = stored_calls(store_path)
    assert len(calls) == len(ledger)
    for e in ledger:
        tier, n_in, n_cached, n_out, cost = calls[e.request_hash]
        assert (tier, n_in, n_cached, n_out) == (e.tier, e.input_tokens, e.cached_tokens, e.output_tokens)
        assert Decimal(cost) == priced(e)
    expected = sum((priced(e) for e in ledger), Decimal(0))
    assert job.cost == expected
    report = job.report()
    assert report.paid == expected
    flex_line = report.by_tier()["flex"]
    assert flex_line.calls == 16
    assert flex_line.savings == flex_line.cost.total  # flex is half the list price
    assert report.savings == flex_line.savings
    assert job.stats["no_flex"] == {f"anthropic/{CLAUDE}": 16}
    assert job.stats["flex_fallbacks"] == 0 and job.stats["rate_limited"] == 0
    assert any("no flex tier" in note for note in report.notes)


def test_unavailable_backs_off_until_every_call_is_served_at_flex(flex_sb: Sandbox, store_path: Path) -> None:
    seed, rate, n = 2, 0.3, 8
    flex_sb.configure(flex_unavailable_rate=rate, seed=seed)
    # every flex attempt draws once from the sandbox's seeded generator, in whatever order
    # the calls arrive: the refusals before n successes are known in advance
    draws, served, refused = random.Random(seed), 0, 0
    while served < n:
        if draws.random() < rate:
            refused += 1
        else:
            served += 1
    assert refused > 0
    job = run_job(outline(flex_sb), rows(10), store_path, mode="flex", prices=PRICES, flex_patience=60)
    assert job.counts["succeeded"] == 10
    assert billed(flex_sb) == {(FLEX_MODEL, "flex"): n}
    assert not flex_sb.duplicates()
    counters = flex_sb.ledger_summary()["openai"][FLEX_MODEL]["flex"]
    assert counters["unavailable"] == refused and counters["rate_limited"] == 0
    assert job.stats["flex_unavailable"] == refused
    assert job.stats["rate_limited"] == 0  # refusals are not rate limits
    assert job.stats["flex_fallbacks"] == 0
    assert job.cost == sum((priced(e) for e in flex_sb.ledger()), Decimal(0))


def test_persistent_unavailability_falls_back_to_standard(flex_sb: Sandbox, store_path: Path) -> None:
    flex_sb.configure(flex_unavailable_rate=1.0)
    job = run_job(two_stage(flex_sb), rows(10), store_path, mode="flex", prices=PRICES, flex_patience=0)
    assert job.counts["succeeded"] == 10
    assert billed(flex_sb) == {(FLEX_MODEL, "realtime"): 8, (CLAUDE, "realtime"): 8}
    assert not flex_sb.duplicates()
    assert accounted(job) == billed(flex_sb)
    assert flex_sb.ledger_summary()["openai"][FLEX_MODEL]["flex"]["unavailable"] == 8
    assert job.stats["flex_fallbacks"] == 8
    assert job.cost == sum((priced(e) for e in flex_sb.ledger()), Decimal(0))
    assert job.report().savings == 0


def test_fallback_fail_keeps_standard_prices_out(flex_sb: Sandbox, store_path: Path) -> None:
    flex_sb.configure(flex_unavailable_rate=1.0)
    job = run_job(outline(flex_sb), rows(5), store_path, mode="flex", flex_patience=0, flex_fallback="fail")
    assert job.counts["failed"] == 5
    assert flex_sb.ledger() == []
    assert "Resource Unavailable" in str(job.errors()[0].error_message)
    # a model without flex is not sent at all
    flex_sb.reset()
    plain = run_job(
        outline(flex_sb, "gpt-4o-mini"),
        rows(5),
        store_path.with_name("plain.sqlite"),
        mode="flex",
        flex_fallback="fail",
    )
    assert plain.counts["failed"] == 5
    assert "FlexUnavailable: openai/gpt-4o-mini has no flex tier" in str(plain.errors()[0].error_message)
    assert flex_sb.ledger() == []


def test_flex_models_overrides_the_catalog(flex_sb: Sandbox, store_path: Path) -> None:
    flex_sb.configure(flex_models="*")  # the sandbox serves flex for any model
    job = run_job(
        outline(flex_sb, "gpt-4o-mini"),
        rows(5),
        store_path,
        mode="flex",
        flex_models=["gpt-4o*"],
        prices=PRICES,
    )
    assert job.counts["succeeded"] == 5
    assert billed(flex_sb) == {("gpt-4o-mini", "flex"): 4}
    assert accounted(job) == billed(flex_sb)


def test_flex_answer_is_the_same_cached_call(flex_sb: Sandbox, store_path: Path) -> None:
    first = run_job(outline(flex_sb), rows(5), store_path, mode="realtime", prices=PRICES)
    again = run_job(outline(flex_sb), rows(5), store_path, mode="flex", prices=PRICES)
    assert [r.output for r in again.results()] == [r.output for r in first.results()]
    assert billed(flex_sb) == {(FLEX_MODEL, "realtime"): 4}  # the flex job paid nothing
    assert again.report().paid == 0


def test_invalid_flex_options_are_named() -> None:
    with pytest.raises(batchain.InvalidOption, match="flex_fallback"):
        batchain.run(RunnablePassthrough(), [], mode="flex", flex_fallback="batchish", progress=False)
    with pytest.raises(batchain.InvalidOption, match="flex_patience"):
        batchain.run(RunnablePassthrough(), [], mode="flex", flex_patience=-1, progress=False)
    with pytest.raises(batchain.InvalidOption, match="flex_models"):
        batchain.run(RunnablePassthrough(), [], mode="flex", flex_models="gpt-5", progress=False)


def test_unavailable_does_not_throttle_the_lane(flex_sb: Sandbox) -> None:
    """Refusals back the call off alone; a rate-limit 429 halves and pauses the lane."""

    async def scenario() -> tuple[Scheduler, Sent, CallFailed]:
        client = openai.AsyncOpenAI(base_url=flex_sb.openai_base_url, api_key=TEST_KEY, max_retries=0)
        adapter = OpenAIAdapter()
        scheduler = Scheduler(max_concurrency=8, backoff_base=0.01, backoff_max=0.05)
        tries = 0

        async def attempt(text: str, refuse: int) -> Sent:
            nonlocal tries
            tries += 1
            rate = "1" if tries <= refuse else "0"
            raw = await client.chat.completions.with_raw_response.create(
                model=FLEX_MODEL,
                messages=[{"role": "user", "content": text}],
                service_tier="flex",
                extra_headers={"x-sandbox-flex-unavailable-rate": rate},
            )
            return Sent(raw.http_response.text, raw.headers)

        def learn(_: object) -> None:
            return None

        sent = await scheduler.run(
            "flex-lane", 10, lambda: attempt("served", 2), adapter.classify, learn, patience=30
        )
        tries = 0
        try:
            await scheduler.run(
                "flex-lane", 10, lambda: attempt("never", 100), adapter.classify, learn, patience=0.05
            )
        except CallFailed as exc:
            failed = exc
        await client.close()
        return scheduler, sent, failed

    scheduler, sent, failed = asyncio.run(scenario())
    assert '"service_tier":"flex"' in sent.text
    assert failed.failure.kind == FailureKind.UNAVAILABLE
    lane = scheduler.lane("flex-lane")
    assert lane.limit == 8 and lane.scope.paused_until == 0 and not lane.scope.throttled
    assert scheduler.stats.rate_limited == 0 and scheduler.stats.unavailable >= 3

    async def rate_limited() -> Scheduler:
        client = openai.AsyncOpenAI(base_url=flex_sb.openai_base_url, api_key=TEST_KEY, max_retries=0)
        scheduler = Scheduler(max_concurrency=8, max_retries=0)

        async def attempt() -> Sent:
            raw = await client.chat.completions.with_raw_response.create(
                model=FLEX_MODEL,
                messages=[{"role": "user", "content": "x [[fail:429]]"}],
                service_tier="flex",
            )
            return Sent(raw.http_response.text, raw.headers)

        with pytest.raises(CallFailed):
            await scheduler.run("lane", 10, attempt, OpenAIAdapter().classify, lambda _: None)
        await client.close()
        return scheduler

    limited = asyncio.run(rate_limited())
    assert limited.lane("lane").limit == 4 and limited.stats.rate_limited == 1


def test_cost_tracker_prices_a_real_flex_answer(flex_sb: Sandbox) -> None:
    """Outside batchain: ChatOpenAI's own flex call, priced by the callback from its answer."""
    from batchain.cost import CostTracker, PriceBook
    from tests.engine.conftest import run_direct

    tracker = CostTracker(PriceBook(PRICES))
    model = make_openai(flex_sb, FLEX_MODEL, service_tier="flex")
    answer = run_direct(model.ainvoke("Hello flex", config={"callbacks": [tracker]}))
    assert answer.response_metadata["service_tier"] == "flex"
    [entry] = flex_sb.ledger()
    assert entry.tier == "flex"
    assert tracker.total_cost == priced(entry)
    assert tracker.usage_by_model[FLEX_MODEL].input_tokens == entry.input_tokens


def test_model_refusing_flex_falls_back_to_standard(flex_sb: Sandbox, store_path: Path) -> None:
    """A model named for flex that the provider refuses at flex (400 naming service_tier)."""
    job = run_job(
        outline(flex_sb, "gpt-4o-mini"),
        rows(5),
        store_path,
        mode="flex",
        flex_models=["gpt-4o-mini"],
        prices=PRICES,
    )
    assert job.counts["succeeded"] == 5
    assert billed(flex_sb) == {("gpt-4o-mini", "realtime"): 4}
    assert job.stats["flex_fallbacks"] == 4
    assert accounted(job) == billed(flex_sb)


def test_fallback_batch_sends_calls_without_flex_through_the_batch_api(
    flex_sb: Sandbox, store_path: Path
) -> None:
    flex_sb.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    job = run_job(two_stage(flex_sb), rows(20), store_path, mode="flex", prices=PRICES, flex_fallback="batch")
    assert job.counts["succeeded"] == 20, job.errors()
    # gpt-5-mini at flex, claude-haiku-4-5 (no flex tier) in a provider batch: both at half price
    assert billed(flex_sb) == {(FLEX_MODEL, "flex"): 16, (CLAUDE, "batch"): 16}
    assert not flex_sb.duplicates()
    assert accounted(job) == billed(flex_sb)  # nothing escaped batchain's accounting
    assert job.stats["batches_created"] >= 1 and not job.stats.get("no_flex")
    plain = run_job(two_stage(flex_sb), rows(20), store_path, mode="realtime", cache=False)
    assert job.outputs() == plain.outputs()
