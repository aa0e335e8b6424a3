"""CostTracker with real ChatOpenAI / ChatAnthropic against the sandbox."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.caches import InMemoryCache
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_openai import ChatOpenAI

from batchain.cost import CostTracker, PriceBook
from batchain.sandbox import Sandbox
from batchain.sandbox.ledger import LedgerEntry
from tests.cost import catalog
from tests.cost.catalog import M
from tests.cost.conftest import make_anthropic, make_openai
from tests.engine.conftest import run_direct


def openai(sb: Sandbox, **kw: Any) -> ChatOpenAI:
    return make_openai(sb, **kw)


def anthropic(sb: Sandbox, **kw: Any) -> ChatAnthropic:
    return make_anthropic(sb, **kw)


def hand_price(e: LedgerEntry) -> Decimal:
    r = catalog.standard(e.provider, e.model)
    uncached = e.input_tokens - e.cached_tokens - e.cache_creation_tokens
    total = (
        uncached * r["input_mtok"]
        + e.cached_tokens * r["cache_read_mtok"]
        + e.output_tokens * r["output_mtok"]
    )
    total += e.cache_creation_tokens * r.get("cache_write_mtok", r["input_mtok"])
    return total / M


def test_counts_and_prices_real_calls_with_a_cache_hit(sb: Sandbox) -> None:
    tracker = CostTracker(PriceBook())
    model = openai(sb, cache=InMemoryCache())
    messages = [("system", "You are a helpful bot. " * 250), ("user", "hi")]  # OpenAI caches 1,024+
    model.invoke(messages, config={"callbacks": [tracker]})
    model.invoke(messages, config={"callbacks": [tracker]})  # LangChain cache hit: not billed
    model.invoke(
        [("system", "You are a helpful bot. " * 250), ("user", "hello")], config={"callbacks": [tracker]}
    )
    ledger = sb.ledger()
    assert len(ledger) == 2
    assert tracker.requests == 2 and tracker.cache_hits == 1
    usage = tracker.usage_by_model["gpt-4o-mini"]
    assert usage.input_tokens == sum(e.input_tokens for e in ledger)
    assert usage.cache_read_tokens == sum(e.cached_tokens for e in ledger) > 0  # system prompt cached
    assert usage.output_tokens == sum(e.output_tokens for e in ledger)
    assert tracker.total_cost == sum(hand_price(e) for e in ledger)
    assert tracker.complete and tracker.cost_by_model == {"gpt-4o-mini": tracker.total_cost}
    m = tracker.models["gpt-4o-mini"]
    assert m.provider == "openai" and m.cache_hit_usage.input_tokens == ledger[0].input_tokens
    assert "gpt-4o-mini" in tracker.report()


def test_concurrent_abatch_both_providers(sb: Sandbox) -> None:
    tracker = CostTracker(PriceBook())
    o, a = openai(sb), anthropic(sb)

    async def go() -> None:
        cfg: Any = {"callbacks": [tracker], "max_concurrency": 16}
        await o.abatch([f"question {i}" for i in range(30)], config=cfg)
        await a.abatch([f"question {i} " + "x " * i for i in range(30)], config=cfg)

    run_direct(go())
    ledger = sb.ledger()
    assert len(ledger) == 60
    assert tracker.requests == 60 and tracker.cache_hits == 0
    for model in ("gpt-4o-mini", "claude-haiku-4-5"):
        mine = [e for e in ledger if e.model == model]
        u = tracker.usage_by_model[model]
        assert (u.requests, u.input_tokens, u.output_tokens) == (
            len(mine),
            sum(e.input_tokens for e in mine),
            sum(e.output_tokens for e in mine),
        )
        assert tracker.cost_by_model[model] == sum(hand_price(e) for e in mine)
    assert tracker.models["claude-haiku-4-5"].provider == "anthropic"


def test_threads_with_sync_batch(sb: Sandbox) -> None:
    tracker = CostTracker(PriceBook())
    model = anthropic(sb)
    model.batch([f"q{i}" for i in range(24)], config={"callbacks": [tracker], "max_concurrency": 8})
    ledger = sb.ledger()
    assert tracker.requests == len(ledger) == 24
    assert tracker.total_cost == sum(hand_price(e) for e in ledger)


@pytest.mark.filterwarnings("ignore:Unexpected type for token usage")
def test_n_greater_than_one_counts_the_request_once(sb: Sandbox) -> None:
    tracker = CostTracker(PriceBook())
    model = openai(sb, n=3)
    prompts: list[list[BaseMessage]] = [
        [HumanMessage("hello there")],
        [HumanMessage("and a second, longer prompt")],
    ]
    result = model.generate(prompts, callbacks=[tracker])
    assert [len(g) for g in result.generations] == [3, 3]
    ledger = sb.ledger()
    assert len(ledger) == 2
    m = tracker.models["gpt-4o-mini"]
    assert m.requests == 2 and m.generations == 6
    assert m.usage.input_tokens == sum(e.input_tokens for e in ledger)
    assert m.usage.output_tokens == sum(e.output_tokens for e in ledger)  # all 3 choices, counted once
    assert tracker.total_cost == sum(hand_price(e) for e in ledger)


def test_anthropic_cache_write_and_read(sb: Sandbox) -> None:
    tracker = CostTracker(PriceBook())
    model = anthropic(sb)
    # Haiku 4.5 caches prefixes of 4,096 tokens or more
    system = {"type": "text", "text": "Long shared context. " * 1100, "cache_control": {"type": "ephemeral"}}
    for q in ("one", "two"):
        messages: list[BaseMessage] = [SystemMessage(content=[system]), HumanMessage(q)]
        model.invoke(messages, config={"callbacks": [tracker]})
    ledger = sb.ledger()
    u = tracker.usage_by_model["claude-haiku-4-5"]
    assert u.cache_creation_tokens == sum(e.cache_creation_tokens for e in ledger) > 0
    assert u.cache_read_tokens == sum(e.cached_tokens for e in ledger) > 0
    assert u.input_tokens == sum(e.input_tokens for e in ledger)
    assert tracker.total_cost == sum(hand_price(e) for e in ledger)


def _result(usage: dict[str, Any] | None, **meta: Any) -> LLMResult:
    msg = AIMessage(content="x", usage_metadata=usage, response_metadata=meta)
    return LLMResult(generations=[[ChatGeneration(message=msg)]], llm_output={"token_usage": {}})


def test_unknown_model_keeps_usage_and_is_not_zero() -> None:
    tracker = CostTracker(PriceBook())
    run_id = uuid4()
    tracker.on_chat_model_start({}, [[]], run_id=run_id, metadata={})  # no model name anywhere
    with pytest.warns(UserWarning, match="unknown"):
        tracker.on_llm_end(
            _result({"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}), run_id=run_id
        )
    assert tracker.usage_by_model["unknown"].input_tokens == 10
    assert tracker.cost_by_model == {"unknown": None}
    assert not tracker.complete and tracker.unknown_models == ["unknown"]
    assert tracker.total_cost == 0  # the known part; `complete` says it is partial
    assert "unknown" in tracker.report()


def test_model_name_from_start_and_flex_keys() -> None:
    book = PriceBook()
    tracker = CostTracker(book)
    run_id = uuid4()
    tracker.on_chat_model_start(
        {},
        [[]],
        run_id=run_id,
        metadata={"ls_provider": "openai", "ls_model_name": "gpt-5"},
        invocation_params={"model": "gpt-5"},
    )
    usage = {
        "input_tokens": 1_000,
        "output_tokens": 100,
        "total_tokens": 1_100,
        "input_token_details": {"flex_cache_read": 400, "flex": 600},
        "output_token_details": {"flex_reasoning": 50, "flex": 50},
    }
    tracker.on_llm_end(_result(usage, service_tier="flex"), run_id=run_id)  # no model_name in the response
    f = catalog.variant("openai", "gpt-5", "service_tier", "flex")
    assert f is not None
    u = tracker.usage_by_model["gpt-5"]
    assert (u.cache_read_tokens, u.reasoning_tokens) == (400, 50)
    assert (
        tracker.total_cost
        == (600 * f["input_mtok"] + 400 * f["cache_read_mtok"] + 100 * f["output_mtok"]) / M
    )


def test_errors_are_counted_and_state_is_thread_safe() -> None:
    tracker = CostTracker(PriceBook())

    def work() -> None:
        for _ in range(200):
            rid = uuid4()
            tracker.on_chat_model_start({}, [[]], run_id=rid, metadata={"ls_model_name": "claude-haiku-4-5"})
            tracker.on_llm_end(
                _result(
                    {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
                    model_name="claude-haiku-4-5",
                ),
                run_id=rid,
            )
        rid = uuid4()
        tracker.on_chat_model_start({}, [[]], run_id=rid, metadata={"ls_model_name": "claude-haiku-4-5"})
        tracker.on_llm_error(RuntimeError("boom"), run_id=rid)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tracker.requests == 1_600 and tracker.failures == 8
    r = catalog.standard("anthropic", "claude-haiku-4-5")
    assert tracker.total_cost == 1_600 * (100 * r["input_mtok"] + 10 * r["output_mtok"]) / M
    tracker.reset()
    assert tracker.requests == 0 and tracker.total_cost == 0
