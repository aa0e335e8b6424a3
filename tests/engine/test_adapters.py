"""Request bodies come from the model's own payload builder with every parameter kept, and
LangChain-internal keys never reach the provider; results parse with the model's own parser."""

from __future__ import annotations

import json

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from batchain.providers.anthropic import AnthropicAdapter
from batchain.providers.batch import OPENAI_LIMITS, BatchLimits, chunk, openai_line, request_inputs
from batchain.providers.openai import OpenAIAdapter, go_duration

# Every test here runs the models' private payload builders and parsers (LangChain internals).
pytestmark = pytest.mark.internals

MSG = [HumanMessage("hello")]


class Person(BaseModel):
    name: str
    age: int


@tool
def weather(city: str) -> str:
    """Weather for a city."""
    return city


def openai_model(**kw: object) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", base_url="http://127.0.0.1:9/v1", **kw)  # type: ignore[arg-type]


def test_internals_openai_payload_builder_keeps_every_parameter() -> None:
    model = openai_model(
        max_tokens=77,
        reasoning_effort="low",
        service_tier="flex",
        extra_body={"metadata": {"team": "a"}},
        stop=["END"],
        temperature=0.3,
        seed=7,
    )
    req = OpenAIAdapter().build(model, MSG, None, {}, "")
    body = req.body
    assert body["max_completion_tokens"] == 77 and "max_tokens" not in body, (
        f"depends on internals: ChatOpenAI._get_request_payload built {body}"
    )
    assert body["reasoning_effort"] == "low"
    assert body["service_tier"] == "flex"
    assert body["metadata"] == {"team": "a"}  # extra_body merged into the body
    assert body["stop"] == ["END"] and body["seed"] == 7 and body["temperature"] == 0.3
    assert "stream" not in body and "extra_body" not in body
    assert req.max_output == 77
    line = json.loads(openai_line(req.key, req.endpoint, body))
    assert line == {"custom_id": req.key, "method": "POST", "url": "/v1/chat/completions", "body": body}


def test_internals_openai_structured_output_and_tools_are_plain_json() -> None:
    adapter = OpenAIAdapter()
    bound = openai_model().with_structured_output(Person).first  # type: ignore[attr-defined]
    req = adapter.build(openai_model(), MSG, None, dict(bound.kwargs), "")
    assert req.body["response_format"]["type"] == "json_schema"
    assert req.body["response_format"]["json_schema"]["name"] == "Person"
    assert "ls_structured_output_format" not in req.body
    json.dumps(req.body)  # serialisable: it can go into a batch file
    tools = openai_model().bind_tools([weather], tool_choice="weather")
    req = adapter.build(openai_model(), MSG, None, dict(tools.kwargs), "")  # type: ignore[attr-defined]
    assert req.body["tools"][0]["function"]["name"] == "weather"
    assert req.body["tool_choice"]["function"]["name"] == "weather"


def test_internals_openai_parser_fills_parsed_like_the_live_path() -> None:
    adapter = OpenAIAdapter()
    model = openai_model()
    bound = model.with_structured_output(Person).first  # type: ignore[attr-defined]
    req = adapter.build(model, MSG, None, dict(bound.kwargs), "")
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": '{"name": "Ada", "age": 36}'},
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 9,
            "total_tokens": 21,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    result = adapter.parse(model, req, json.dumps(body))
    msg = result.generations[0].message
    assert msg.additional_kwargs["parsed"] == Person(name="Ada", age=36), (
        f"depends on internals: ChatOpenAI._create_chat_result gave {msg.additional_kwargs}"
    )
    usage = adapter.usage(json.dumps(body))
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (12, 4, 9)


def test_internals_anthropic_payload_builder_keeps_thinking_and_moves_betas() -> None:
    model = ChatAnthropic(
        model="claude-sonnet-4-5",
        api_key="sk-test",
        base_url="http://127.0.0.1:9",  # type: ignore[arg-type]
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        betas=["context-1m-2025-08-07"],
    )
    req = AnthropicAdapter().build(model, MSG, ["STOP"], {}, "")
    assert req.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}, (
        f"depends on internals: ChatAnthropic._get_request_payload built {req.body}"
    )
    assert req.body["stop_sequences"] == ["STOP"]
    assert "betas" not in req.body
    assert req.headers == {"anthropic-beta": "context-1m-2025-08-07"}
    assert req.max_output == 2048


def test_internals_anthropic_structured_output_drops_internal_keys() -> None:
    model = ChatAnthropic(
        model="claude-haiku-4-5",
        api_key="sk-test",  # type: ignore[arg-type]
        base_url="http://127.0.0.1:9",
        max_tokens=100,
    )
    bound = model.with_structured_output(Person).first  # type: ignore[attr-defined]
    req = AnthropicAdapter().build(model, MSG, None, dict(bound.kwargs), "")
    assert req.body["tools"][0]["name"] == "Person"
    assert req.body["tool_choice"] == {"type": "tool", "name": "Person"}
    assert "ls_structured_output_format" not in req.body


def test_the_same_request_has_the_same_key_and_a_different_one_does_not() -> None:
    a = OpenAIAdapter().build(openai_model(), MSG, None, {}, "")
    b = OpenAIAdapter().build(openai_model(), MSG, None, {}, "")
    c = OpenAIAdapter().build(openai_model(temperature=0.9), MSG, None, {}, "")
    salted = OpenAIAdapter().build(openai_model(), MSG, None, {}, "job-1")
    assert a.key == b.key and a.body_hash == b.body_hash
    assert c.key != a.key
    assert salted.key != a.key and salted.body_hash == a.body_hash


def test_chunking_respects_count_and_size() -> None:
    sized = [(f"k{i}", 100) for i in range(25)]
    assert [len(p) for p in chunk(sized, BatchLimits(10, 10**9))] == [10, 10, 5]
    assert [len(p) for p in chunk(sized, BatchLimits(1000, 1000))] == [9, 9, 7]  # 95% headroom
    assert [len(p) for p in chunk(sized, BatchLimits(1000, 10**9), max_requests=4)][:2] == [4, 4]


def test_chunking_respects_the_inputs_an_embeddings_batch_may_carry() -> None:
    # OpenAI: at most 50,000 embedding inputs in a batch, however many requests carry them
    sized = [(f"k{i}", 100) for i in range(10)]
    inputs = {f"k{i}": 30_000 if i < 4 else 1 for i in range(10)}
    parts = list(chunk(sized, OPENAI_LIMITS, inputs=inputs))
    assert [len(p) for p in parts] == [1, 1, 1, 7]
    assert all(sum(inputs[k] for k in p) <= 50_000 for p in parts)
    body = {"model": "text-embedding-3-small", "input": ["a", "b", "c"]}
    assert request_inputs("/v1/embeddings", body) == 3
    assert request_inputs("/v1/embeddings", {"input": [1, 2, 3]}) == 1  # one text as token ids
    assert request_inputs("/v1/chat/completions", body) == 1


def test_go_durations() -> None:
    assert go_duration("12ms") == 0.012
    assert go_duration("6m0s") == 360.0
    assert go_duration("1h2m3.5s") == 3723.5
    assert go_duration(None) is None
