"""OpenAI Chat Completions against the sandbox with the official SDK."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from batchain.sandbox import Sandbox
from batchain.sandbox.ledger import request_hash

MODEL = "gpt-4o-mini"
HEADLINE_PROMPT = (
    "Classify the headline into one of: tech, business, entertainment, sports, other. "
    "Answer with the label only.\n\nHeadline: {headline}"
)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_basic_completion_shape(oai: openai.OpenAI, sb: Sandbox) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=MODEL, messages=user("Hello there"))
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert choice.message.content == f"Sandbox reply ({MODEL}): Hello there"
    assert completion.usage is not None
    # 3 priming + 3 per message + 2 words
    assert completion.usage.prompt_tokens == 8
    assert completion.usage.total_tokens == 8 + completion.usage.completion_tokens
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["openai-version"] == "2020-10-01"
    assert "openai-processing-ms" in raw.headers
    assert "x-ratelimit-limit-requests" not in raw.headers
    assert raw.headers["content-type"] == "application/json"


def test_deterministic_replies(oai: openai.OpenAI) -> None:
    messages = user("Tell me something about determinism please")
    a = oai.chat.completions.create(model=MODEL, messages=messages, temperature=1)
    b = oai.chat.completions.create(model=MODEL, messages=messages, temperature=1)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage == b.usage


@pytest.mark.parametrize(
    ("headline", "label"),
    [
        ("Apple unveils new iPhone with faster AI chip", "tech"),
        ("Stocks rally as investors cheer bank earnings", "business"),
        ("Star actress wins Oscar for new film", "entertainment"),
        ("Team wins championship final after late goal", "sports"),
    ],
)
def test_classification_labels(oai: openai.OpenAI, headline: str, label: str) -> None:
    prompt = HEADLINE_PROMPT.format(headline=headline)
    reply = oai.chat.completions.create(model=MODEL, messages=user(prompt))
    assert reply.choices[0].message.content == label


def test_unmatched_label_is_one_of_the_labels(oai: openai.OpenAI) -> None:
    prompt = HEADLINE_PROMPT.format(headline="Quiet afternoon in a small village")
    reply = oai.chat.completions.create(model=MODEL, messages=user(prompt))
    assert reply.choices[0].message.content in {
        "tech",
        "business",
        "entertainment",
        "sports",
        "other",
    }


def test_max_tokens_truncates(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL, messages=user("one two three four five six"), max_tokens=3
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "Sandbox reply ("
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_stop_sequence(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=MODEL, messages=user("alpha beta gamma"), stop=["beta"])
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == f"Sandbox reply ({MODEL}): alpha "


def test_n_choices(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=MODEL, messages=user("hi"), n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]


def test_tool_call(oai: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                        "days": {"type": "integer", "minimum": 1, "maximum": 7},
                    },
                    "required": ["city", "unit", "days"],
                },
            },
        }
    ]
    reply = oai.chat.completions.create(model=MODEL, messages=user("Weather in Paris?"), tools=tools)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str)
    assert args["unit"] in ("celsius", "fahrenheit")
    assert 1 <= args["days"] <= 7
    # after the tool result the model answers in text
    follow = oai.chat.completions.create(
        model=MODEL,
        messages=[
            *user("Weather in Paris?"),
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
        ],
        tools=tools,
    )
    assert follow.choices[0].finish_reason == "stop"
    assert "sunny" in (follow.choices[0].message.content or "")
    # tool_choice none disables tools
    none = oai.chat.completions.create(
        model=MODEL, messages=user("Weather in Paris?"), tools=tools, tool_choice="none"
    )
    assert none.choices[0].message.tool_calls is None


def test_json_schema_response_format(oai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "author": {"$ref": "#/$defs/person"},
            "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
        "required": ["sentiment", "score", "tags", "author", "maybe"],
        "additionalProperties": False,
        "$defs": {
            "person": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "email": {"type": "string", "format": "email"},
                },
                "required": ["name", "email"],
            }
        },
    }
    reply = oai.chat.completions.create(
        model=MODEL,
        messages=user("I hated this terrible product"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "review", "schema": schema, "strict": True},
        },
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert data["sentiment"] == "negative"
    assert 0 <= data["score"] <= 1
    assert len(data["tags"]) >= 2
    assert data["author"]["email"] == "sandbox@example.com"
    assert isinstance(data["maybe"], int)


def test_json_object_requires_json_word(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(
            model=MODEL, messages=user("hello"), response_format={"type": "json_object"}
        )
    reply = oai.chat.completions.create(
        model=MODEL, messages=user("reply in json"), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_streaming_with_usage(oai: openai.OpenAI, sb: Sandbox) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=user("stream me a few words please"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Sandbox reply ({MODEL}): stream me a few words please"
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    # streaming and non-streaming bodies hash the same
    entry = sb.ledger()[-1]
    assert entry.request_hash == request_hash(
        {"model": MODEL, "messages": user("stream me a few words please")}
    )


def test_streaming_tool_call(oai: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    with oai.chat.completions.stream(model=MODEL, messages=user("find cats"), tools=tools) as s:
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup"
    assert "q" in json.loads(call.function.arguments)


def test_ledger_and_hash(oai: openai.OpenAI, sb: Sandbox) -> None:
    body = {"model": MODEL, "messages": user("ledger check")}
    oai.chat.completions.create(**body)  # type: ignore[call-overload]
    entries = sb.ledger()
    assert len(entries) == 1
    entry = entries[0]
    assert entry.provider == "openai" and entry.tier == "realtime" and entry.model == MODEL
    assert entry.request_hash == request_hash(body)
    assert entry.batch_id is None and entry.custom_id is None
    assert sb.duplicates() == {}
    oai.chat.completions.create(**body)  # type: ignore[call-overload]
    assert sb.duplicates() == {entry.request_hash: 2}
    summary = sb.ledger_summary()["openai"][MODEL]["realtime"]
    assert summary["requests"] == 2
    assert summary["input_tokens"] == 2 * entry.input_tokens


def test_prompt_cache_simulation(oai: openai.OpenAI, sb: Sandbox) -> None:
    # OpenAI caches prompts of 1,024 tokens or more, in steps of 128 (its prompt-caching guide)
    system = {"role": "system", "content": "You are a careful assistant that answers briefly. " * 150}
    first = oai.chat.completions.create(model=MODEL, messages=[system, *user("one")])
    second = oai.chat.completions.create(model=MODEL, messages=[system, *user("two")])
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]
    # the system message: 3 overhead + 9 x 150 = 1,353 tokens, cached as 10 steps of 128
    assert second.usage.prompt_tokens_details.cached_tokens == 1280  # type: ignore[union-attr]
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert sb.ledger()[-1].cached_tokens == 1280
    sb.configure(simulate_prompt_cache=False)
    third = oai.chat.completions.create(model=MODEL, messages=[system, *user("three")])
    assert third.usage.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]


def test_short_prompts_and_short_prefixes_are_not_cached(oai: openai.OpenAI, sb: Sandbox) -> None:
    short = {"role": "system", "content": "You are a careful assistant that answers briefly."}
    medium = {"role": "system", "content": "You are a careful assistant that answers briefly. " * 100}
    long_question = user("why " * 300)  # the prompt passes 1,024 tokens, its shared prefix (903) does not
    for messages in ([short, *user("a")], [medium, *user("b")], [medium, *long_question]):
        for _ in range(2):
            oai.chat.completions.create(model=MODEL, messages=messages)
    assert [e.cached_tokens for e in sb.ledger()] == [0] * 6


def test_auth_failures(sb: Sandbox) -> None:
    response = httpx.post(
        sb.openai_base_url + "/chat/completions",
        json={"model": MODEL, "messages": user("hi")},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=sb.openai_base_url, api_key="invalid-key", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model=MODEL, messages=user("hi"))
    assert info.value.code == "invalid_api_key"
    assert sb.ledger() == []


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, None, None),
        ({"model": MODEL}, "messages", "missing_required_parameter"),
        ({"model": MODEL, "messages": "hi"}, "messages", "invalid_type"),
        ({"model": MODEL, "messages": []}, "messages", "empty_array"),
        (
            {"model": MODEL, "messages": [{"content": "x"}]},
            "messages[0].role",
            "missing_required_parameter",
        ),
        (
            {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
            "invalid_type",
        ),
        ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model", "invalid_type"),
        (
            {"model": MODEL, "messages": user("x"), "max_tokens": 0},
            "max_tokens",
            "integer_below_min_value",
        ),
        ({"model": MODEL, "messages": user("x"), "max_tokens": "5"}, "max_tokens", "invalid_type"),
        (
            {"model": MODEL, "messages": user("x"), "temperature": 3},
            "temperature",
            "decimal_above_max_value",
        ),
        ({"model": MODEL, "messages": user("x"), "tool_choice": "auto"}, "tool_choice", None),
        ({"model": MODEL, "messages": user("x"), "stop": 5}, "stop", "invalid_type"),
        (
            {"model": MODEL, "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
            "missing_required_parameter",
        ),
    ],
)
def test_validation_errors(sb: Sandbox, body: dict, param: str | None, code: str | None) -> None:  # type: ignore[type-arg]
    response = httpx.post(
        sb.openai_base_url + "/chat/completions",
        json=body,
        headers={"authorization": "Bearer sk-test"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"\xff\xfe"])
def test_malformed_json(sb: Sandbox, raw: bytes) -> None:
    response = httpx.post(
        sb.openai_base_url + "/chat/completions",
        content=raw,
        headers={"authorization": "Bearer sk-test", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_route_is_404_envelope(oai: openai.OpenAI, sb: Sandbox) -> None:
    response = httpx.get(sb.openai_base_url + "/nope", headers={"authorization": "Bearer x"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"


def test_rate_limit_headers_and_429(sb: Sandbox, oai: openai.OpenAI) -> None:
    sb.configure(rpm=120)  # bucket of 2, refilling 2/s
    first = oai.chat.completions.with_raw_response.create(model=MODEL, messages=user("a"))
    assert first.headers["x-ratelimit-limit-requests"] == "120"
    assert int(first.headers["x-ratelimit-remaining-requests"]) == 60
    assert first.headers["x-ratelimit-reset-requests"].endswith("ms")
    oai.chat.completions.create(model=MODEL, messages=user("b"))
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=MODEL, messages=user("c"))
    error = info.value
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert "on requests per min (RPM): Limit 120" in error.message
    headers = error.response.headers
    wait_ms = int(headers["retry-after-ms"])
    assert 0 < wait_ms <= 500
    assert float(headers["retry-after"]) == pytest.approx(wait_ms / 1000, abs=0.002)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    summary = sb.ledger_summary()["openai"][MODEL]["realtime"]
    assert summary["rate_limited"] == 1 and summary["requests"] == 2


def test_sdk_retry_handles_429(sb: Sandbox) -> None:
    sb.configure(rpm=60)  # one request, then one per second
    with openai.OpenAI(base_url=sb.openai_base_url, api_key="sk-test", max_retries=3) as client:
        client.chat.completions.create(model=MODEL, messages=user("first"))
        started = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=user("second"))
    assert raw.parse().choices[0].message.content
    assert time.monotonic() - started > 0.5  # waited for the token, as told by retry-after-ms
    summary = sb.ledger_summary()["openai"][MODEL]["realtime"]
    assert summary["requests"] == 2
    assert summary["rate_limited"] >= 1


def test_tpm_limit(sb: Sandbox, oai: openai.OpenAI) -> None:
    sb.configure(tpm=600)  # 10 tokens per second
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=MODEL, messages=user("word " * 700))
    assert "Request too large" in info.value.message
    oai.chat.completions.create(model=MODEL, messages=user("a few words here"))
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=MODEL, messages=user("a few words here"))
    assert info.value.type == "tokens"
    assert "x-ratelimit-limit-tokens" in info.value.response.headers


def test_error_rate_and_overloaded(sb: Sandbox, oai: openai.OpenAI) -> None:
    sb.configure(error_rate=1.0)
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model=MODEL, messages=user("x"))
    assert info.value.status_code == 500
    assert info.value.type == "server_error"
    sb.configure(error_rate=0.0, overloaded_rate=1.0)
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model=MODEL, messages=user("x"))
    assert info.value.status_code == 503
    assert sb.ledger() == []


def test_error_rate_is_seeded(sb: Sandbox, oai: openai.OpenAI) -> None:
    def outcomes() -> list[bool]:
        sb.reset()
        results = []
        for i in range(20):
            try:
                oai.chat.completions.create(model=MODEL, messages=user(f"x{i}"))
                results.append(True)
            except openai.InternalServerError:
                results.append(False)
        return results

    sb.configure(error_rate=0.5, seed=7)
    first = outcomes()
    assert outcomes() == first
    assert 0 < sum(first) < 20


def test_directives(sb: Sandbox, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=user("bad [[fail:400]]"))
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model=MODEL, messages=user("boom [[fail:500]]"))
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=MODEL, messages=user("slow down [[fail:429]]"))
    assert info.value.response.headers["retry-after-ms"] == "50"
    assert sb.ledger_summary()["openai"][MODEL]["realtime"]["rate_limited"] == 1
    # flaky: first 2 sightings fail, then success
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            oai.chat.completions.create(model=MODEL, messages=user("wobbly [[flaky:2]]"))
    oai.chat.completions.create(model=MODEL, messages=user("wobbly [[flaky:2]]"))
    assert len(sb.ledger()) == 1
    started = time.monotonic()
    oai.chat.completions.create(model=MODEL, messages=user("take your time [[latency:200]]"))
    assert time.monotonic() - started >= 0.19


def test_flaky_is_retried_by_sdk(sb: Sandbox) -> None:
    with openai.OpenAI(base_url=sb.openai_base_url, api_key="sk-test", max_retries=2) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=user("retry me [[flaky:1]]")
        )
    assert raw.retries_taken == 1
    assert len(sb.ledger()) == 1


def test_latency_and_header_override(sb: Sandbox, oai: openai.OpenAI) -> None:
    sb.configure(latency_ms=150)
    started = time.monotonic()
    oai.chat.completions.create(model=MODEL, messages=user("x"))
    assert time.monotonic() - started >= 0.14
    started = time.monotonic()
    oai.chat.completions.create(model=MODEL, messages=user("x"), extra_headers={"x-sandbox-latency-ms": "0"})
    assert time.monotonic() - started < 0.1
    response = httpx.post(
        sb.openai_base_url + "/chat/completions",
        json={"model": MODEL, "messages": user("x")},
        headers={"authorization": "Bearer sk", "x-sandbox-rpm": "5"},
    )
    assert response.status_code == 400


def test_disconnect_during_latency_is_not_billed(sb: Sandbox) -> None:
    sb.configure(latency_ms=500)
    with (
        openai.OpenAI(base_url=sb.openai_base_url, api_key="sk-test", max_retries=0, timeout=0.1) as client,
        pytest.raises(openai.APITimeoutError),
    ):
        client.chat.completions.create(model=MODEL, messages=user("abandon me"))
    time.sleep(0.6)
    assert sb.ledger() == []


def test_unexpected_exception_becomes_500_envelope(
    sb: Sandbox, oai: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate an internal bug: the sandbox must still answer with the provider's envelope.
    from batchain.sandbox import calls

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(calls, "respond", broken)
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model=MODEL, messages=user("x"))
    assert info.value.status_code == 500
    assert info.value.type == "server_error"
    assert "simulated bug" not in info.value.message
    response = httpx.post(
        sb.url + "/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": user("x")},
        headers={"x-api-key": "k"},
    )
    assert response.status_code == 500
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "api_error"
