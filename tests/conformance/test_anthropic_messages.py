"""Anthropic Messages against the sandbox with the official SDK."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from batchain.sandbox import Sandbox
from batchain.sandbox.ledger import request_hash

MODEL = "claude-haiku-4-5"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_basic_message_shape(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    raw = ant.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=user("Hello there"))
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_01")
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text == f"Sandbox reply ({MODEL}): Hello there"
    assert message.usage.input_tokens == 8
    assert message.usage.service_tier == "standard"
    assert raw.headers["request-id"].startswith("req_011C")
    assert "anthropic-ratelimit-requests-limit" not in raw.headers
    entry = sb.ledger()[0]
    assert entry.provider == "anthropic" and entry.input_tokens == 8
    assert entry.request_hash == request_hash(
        {"model": MODEL, "max_tokens": 64, "messages": user("Hello there")}
    )


def test_x_api_key_auth_and_failures(sb: Sandbox) -> None:
    body = {"model": MODEL, "max_tokens": 5, "messages": user("hi")}
    ok = httpx.post(
        sb.url + "/v1/messages?beta=true",
        json=body,
        headers={"x-api-key": "sk-ant-x", "anthropic-version": "2023-06-01"},
    )
    assert ok.status_code == 200
    missing = httpx.post(sb.url + "/v1/messages", json=body)
    assert missing.status_code == 401
    assert missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "authentication_error"
    bad = anthropic.Anthropic(base_url=sb.url, api_key="invalid", max_retries=0)
    with bad, pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model=MODEL, max_tokens=5, messages=user("hi"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 5, "messages": user("x")}, "model: Field required"),
        ({"model": MODEL, "messages": user("x")}, "max_tokens: Field required"),
        (
            {"model": MODEL, "max_tokens": "5", "messages": user("x")},
            "max_tokens: Input should be a valid integer",
        ),
        (
            {"model": MODEL, "max_tokens": 0, "messages": user("x")},
            "max_tokens: Input should be greater than or equal to 1",
        ),
        ({"model": MODEL, "max_tokens": 5}, "messages: Field required"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": {}},
            "messages: Input should be a valid list",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user"}]},
            "messages.0.content: Field required",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": user("x"), "temperature": 2},
            "temperature: Input should be less than or equal to 1",
        ),
    ],
)
def test_validation_errors(sb: Sandbox, body: dict, message: str) -> None:  # type: ignore[type-arg]
    response = httpx.post(sb.url + "/v1/messages", json=body, headers={"x-api-key": "k"})
    assert response.status_code == 400
    data = response.json()
    assert data["type"] == "error"
    assert data["error"] == {"type": "invalid_request_error", "message": message}
    assert data["request_id"] == response.headers["request-id"]


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null"])
def test_malformed_json(sb: Sandbox, raw: bytes) -> None:
    response = httpx.post(sb.url + "/v1/messages", content=raw, headers={"x-api-key": "k"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_route(sb: Sandbox) -> None:
    response = httpx.get(sb.url + "/v1/messages/nothing/here", headers={"x-api-key": "k"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_tool_use(ant: anthropic.Anthropic) -> None:
    tools = [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    message = ant.messages.create(model=MODEL, max_tokens=100, messages=user("Paris?"), tools=tools)
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert isinstance(block.input["city"], str)  # type: ignore[index]
    follow = ant.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=tools,
        messages=[
            *user("Paris?"),
            {"role": "assistant", "content": [block.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "rainy"}],
            },
        ],
    )
    assert follow.stop_reason == "end_turn"
    forced = ant.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[*user("x")],
        tools=[*tools, {"name": "other", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "other"},
    )
    assert forced.content[0].name == "other"  # type: ignore[union-attr]


def test_stop_sequences_and_max_tokens(ant: anthropic.Anthropic) -> None:
    stopped = ant.messages.create(
        model=MODEL, max_tokens=100, messages=user("alpha beta gamma"), stop_sequences=["gamma"]
    )
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == "gamma"
    cut = ant.messages.create(model=MODEL, max_tokens=2, messages=user("alpha beta gamma"))
    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens == 2


def test_prompt_cache_control(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    # Haiku 4.5 caches prefixes of at least 4,096 tokens (Anthropic's prompt-caching docs)
    system = [
        {
            "type": "text",
            "text": "You are a meticulous assistant. " * 700,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    first = ant.messages.create(model=MODEL, max_tokens=50, system=system, messages=user("one"))  # type: ignore[arg-type]
    second = ant.messages.create(model=MODEL, max_tokens=50, system=system, messages=user("two"))  # type: ignore[arg-type]
    prefix = 3 + 6 * 700  # message overhead + 6 tokens x 700
    assert first.usage.cache_creation_input_tokens == prefix
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == prefix
    assert second.usage.cache_creation_input_tokens == 0
    total = 3 + prefix + 3 + 1
    assert first.usage.input_tokens == total - prefix
    ledger = sb.ledger()
    assert [e.input_tokens for e in ledger] == [total, total]
    assert (ledger[0].cache_creation_tokens, ledger[0].cached_tokens) == (prefix, 0)
    assert (ledger[1].cache_creation_tokens, ledger[1].cached_tokens) == (0, prefix)


@pytest.mark.parametrize(
    ("model", "repeats", "cached"),
    [
        ("claude-haiku-4-5", 600, False),  # 3,603 tokens: under Haiku 4.5's 4,096
        ("claude-sonnet-4-5", 200, True),  # 1,203: over Sonnet 4.5's 1,024
        ("claude-sonnet-4-5", 150, False),  # 903
        ("claude-3-5-haiku-20241022", 300, False),  # 1,803: under Haiku 3.5's 2,048
        ("claude-3-5-haiku-20241022", 400, True),
    ],
)
def test_a_prefix_under_the_models_minimum_is_not_cached(
    ant: anthropic.Anthropic, sb: Sandbox, model: str, repeats: int, cached: bool
) -> None:
    system = [
        {
            "type": "text",
            "text": "You are a meticulous assistant. " * repeats,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    for text in ("one", "two"):
        ant.messages.create(model=model, max_tokens=5, system=system, messages=user(text))  # type: ignore[arg-type]
    prefix = 3 + 6 * repeats
    expected = [(prefix, 0), (0, prefix)] if cached else [(0, 0), (0, 0)]
    assert [(e.cache_creation_tokens, e.cached_tokens) for e in sb.ledger()] == expected


def test_streaming(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model=MODEL, max_tokens=100, messages=user("stream some words now")) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == f"Sandbox reply ({MODEL}): stream some words now"
    assert final.stop_reason == "end_turn"


def test_rate_limit(sb: Sandbox, ant: anthropic.Anthropic) -> None:
    sb.configure(rpm=60, tpm=100_000)
    raw = ant.messages.with_raw_response.create(model=MODEL, max_tokens=5, messages=user("a"))
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "60"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert raw.headers["anthropic-ratelimit-tokens-limit"] == "100000"
    with pytest.raises(anthropic.RateLimitError) as info:
        ant.messages.create(model=MODEL, max_tokens=5, messages=user("b"))
    body = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert float(info.value.response.headers["retry-after"]) > 0.5
    assert info.value.request_id == info.value.response.headers["request-id"]
    # other model: separate bucket
    ant.messages.create(model="claude-other", max_tokens=5, messages=user("c"))


def test_faults(sb: Sandbox, ant: anthropic.Anthropic) -> None:
    sb.configure(overloaded_rate=1.0)
    with pytest.raises(anthropic.APIStatusError) as info:
        ant.messages.create(model=MODEL, max_tokens=5, messages=user("a"))
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    sb.configure(overloaded_rate=0.0, error_rate=1.0)
    with pytest.raises(anthropic.InternalServerError) as info2:
        ant.messages.create(model=MODEL, max_tokens=5, messages=user("a"))
    assert info2.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    sb.configure(error_rate=0.0)
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.create(model=MODEL, max_tokens=5, messages=user("[[fail:400]]"))


def test_request_too_large(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchain.sandbox.anthropic import api as anthropic_api

    monkeypatch.setattr(anthropic_api, "MAX_MESSAGES_BYTES", 50)
    client = anthropic.Anthropic(base_url=sb.url, api_key="k", max_retries=0)
    with client, pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=MODEL, max_tokens=5, messages=user("x" * 100))
    assert info.value.status_code == 413
    assert info.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
