"""OpenAI Flex processing (``service_tier="flex"``) against the sandbox with the official SDK."""

from __future__ import annotations

import time

import openai
import pytest

from batchain.providers.base import FailureKind
from batchain.providers.openai import OpenAIAdapter
from batchain.sandbox import Sandbox

FLEX_MODEL = "gpt-5-mini"  # offers flex (OpenAI's pricing page lists a flex price)
PLAIN_MODEL = "gpt-4o-mini"  # does not


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def quick(sb: Sandbox) -> Sandbox:
    sb.configure(flex_latency_ms=5, flex_latency_jitter_ms=0)
    return sb


def test_flex_served_at_flex_and_billed_at_the_flex_tier(quick: Sandbox, oai: openai.OpenAI) -> None:
    messages = user("Summarize flex processing")
    flex = oai.chat.completions.create(model=FLEX_MODEL, messages=messages, service_tier="flex")
    standard = oai.chat.completions.create(model=FLEX_MODEL, messages=messages)
    assert flex.service_tier == "flex"
    assert standard.service_tier == "default"
    # the same request answers the same at every tier
    assert flex.choices[0].message.content == standard.choices[0].message.content
    assert flex.usage == standard.usage
    tiers = [e.tier for e in quick.ledger()]
    assert tiers == ["flex", "realtime"]
    summary = quick.ledger_summary()["openai"][FLEX_MODEL]
    assert summary["flex"]["requests"] == 1 and summary["realtime"]["requests"] == 1
    # service_tier is not part of the request hash: paying for it twice shows as a duplicate
    assert list(quick.duplicates().values()) == [2]


def test_flex_on_the_responses_api(quick: Sandbox, oai: openai.OpenAI) -> None:
    response = oai.responses.create(model=FLEX_MODEL, input="Hello flex", service_tier="flex")
    assert response.service_tier == "flex"
    assert [e.tier for e in quick.ledger()] == ["flex"]


def test_auto_and_default_tiers_unchanged(quick: Sandbox, oai: openai.OpenAI) -> None:
    for tier in ("auto", "default"):
        got = oai.chat.completions.create(model=PLAIN_MODEL, messages=user(f"tier {tier}"), service_tier=tier)
        assert got.service_tier == "default"
    assert [e.tier for e in quick.ledger()] == ["realtime", "realtime"]


def test_model_without_flex_is_refused(quick: Sandbox, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=PLAIN_MODEL, messages=user("x"), service_tier="flex")
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "service_tier"
    assert PLAIN_MODEL in info.value.message
    assert quick.ledger() == []
    # the knob widens the models that offer flex
    quick.configure(flex_models="*")
    got = oai.chat.completions.create(model=PLAIN_MODEL, messages=user("x"), service_tier="flex")
    assert got.service_tier == "flex"


def test_unknown_service_tier_is_refused(quick: Sandbox, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=FLEX_MODEL, messages=user("x"), service_tier="cheap")  # type: ignore[arg-type]
    assert "'flex'" in info.value.message
    assert quick.ledger() == []


def test_resource_unavailable_is_a_429_never_billed(quick: Sandbox, oai: openai.OpenAI) -> None:
    quick.configure(flex_unavailable_rate=1.0)
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=FLEX_MODEL, messages=user("busy"), service_tier="flex")
    error = info.value
    assert error.status_code == 429
    assert error.code == "resource_unavailable"
    assert isinstance(error.body, dict) and error.body["message"].startswith("Resource Unavailable")
    assert "x-ratelimit-remaining-requests" not in error.response.headers
    assert quick.ledger() == []
    counters = quick.ledger_summary()["openai"][FLEX_MODEL]["flex"]
    assert counters["unavailable"] == 1 and counters["rate_limited"] == 0
    # batchain tells it from a rate limit
    assert OpenAIAdapter().classify(error).kind == FailureKind.UNAVAILABLE
    # the standard tier is not affected by flex capacity
    assert oai.chat.completions.create(model=FLEX_MODEL, messages=user("busy")).service_tier == "default"


def test_rate_limit_429_is_still_a_rate_limit(quick: Sandbox, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=FLEX_MODEL, messages=user("slow [[fail:429]]"), service_tier="flex")
    assert OpenAIAdapter().classify(info.value).kind == FailureKind.RATE_LIMIT
    counters = quick.ledger_summary()["openai"][FLEX_MODEL]["flex"]
    assert counters["rate_limited"] == 1 and counters["unavailable"] == 0


def test_flex_latency_knob(sb: Sandbox, oai: openai.OpenAI) -> None:
    sb.configure(latency_ms=0, flex_latency_ms=300, flex_latency_jitter_ms=0)
    started = time.monotonic()
    oai.chat.completions.create(model=FLEX_MODEL, messages=user("slow flex"), service_tier="flex")
    assert time.monotonic() - started >= 0.28  # flex waits its own latency; realtime has none
