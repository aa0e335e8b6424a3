"""Gemini generateContent against the sandbox with the official google-genai SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

pytest.importorskip("google.genai")

from google import genai
from google.genai import errors, types

from batchain.sandbox import Sandbox
from batchain.sandbox.ledger import request_hash
from tests.conformance.helpers import GEMINI_MODEL


def test_text_reply_usage_and_ledger(gemini: genai.Client, sb: Sandbox) -> None:
    response = gemini.models.generate_content(model=GEMINI_MODEL, contents="hello sandbox world")
    assert response.text == f"Sandbox reply ({GEMINI_MODEL}): hello sandbox world"
    candidate = response.candidates[0]  # type: ignore[index]
    assert candidate.finish_reason == types.FinishReason.STOP and candidate.index == 0
    assert candidate.content.role == "model"  # type: ignore[union-attr]
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert response.model_version == GEMINI_MODEL and response.response_id
    [entry] = sb.ledger()
    assert (entry.provider, entry.model, entry.tier) == ("gemini", GEMINI_MODEL, "realtime")
    assert entry.input_tokens == usage.prompt_token_count
    assert entry.output_tokens == usage.candidates_token_count
    assert sb.ledger_summary()["gemini"][GEMINI_MODEL]["realtime"]["requests"] == 1


def test_raw_wire_shape_and_hash(sb: Sandbox) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "raw call"}]}]}
    url = f"{sb.gemini_base_url}/v1beta/models/{GEMINI_MODEL}:generateContent"
    response = httpx.post(url, json=body, params={"key": "test-key"})
    assert response.status_code == 200
    payload = response.json()
    assert set(payload) == {"candidates", "usageMetadata", "modelVersion", "responseId"}
    assert payload["candidates"][0]["content"]["parts"][0]["text"].endswith("raw call")
    # the model from the URL is part of the hashed request, as in a batch item
    assert sb.ledger()[0].request_hash == request_hash({**body, "model": f"models/{GEMINI_MODEL}"})


def test_system_instruction_and_config(gemini: genai.Client) -> None:
    config = types.GenerateContentConfig(
        system_instruction="Classify the text into one of: spam, ham. Answer with the label only.",
        temperature=0.2,
        top_p=0.9,
    )
    response = gemini.models.generate_content(model=GEMINI_MODEL, contents="WIN A FREE PRIZE", config=config)
    assert response.text in ("spam", "ham")


def test_max_output_tokens_and_stop(gemini: genai.Client) -> None:
    config = types.GenerateContentConfig(max_output_tokens=3)
    response = gemini.models.generate_content(
        model=GEMINI_MODEL, contents="one two three four", config=config
    )
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS  # type: ignore[index]
    assert response.usage_metadata.candidates_token_count == 3  # type: ignore[union-attr]
    config = types.GenerateContentConfig(stop_sequences=["):"])
    response = gemini.models.generate_content(model=GEMINI_MODEL, contents="hello", config=config)
    assert response.text == f"Sandbox reply ({GEMINI_MODEL}"


def test_json_schema_output(gemini: genai.Client) -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING"},
            "age": {"type": "INTEGER"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
        },
        "required": ["name", "age"],
    }
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=schema)
    response = gemini.models.generate_content(model=GEMINI_MODEL, contents="A person", config=config)
    value = json.loads(response.text or "")
    assert isinstance(value["name"], str) and isinstance(value["age"], int)
    json_schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    config = types.GenerateContentConfig(
        response_mime_type="application/json", response_json_schema=json_schema
    )
    response = gemini.models.generate_content(model=GEMINI_MODEL, contents="Is it ok?", config=config)
    assert isinstance(response.parsed, dict) and isinstance(response.parsed["ok"], bool)


def _weather_tool() -> types.Tool:
    declaration = types.FunctionDeclaration(
        name="get_weather",
        description="Weather for a city",
        parameters_json_schema={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    )
    return types.Tool(function_declarations=[declaration])


def test_function_calling(gemini: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[_weather_tool()],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    response = gemini.models.generate_content(model=GEMINI_MODEL, contents="Weather in Paris?", config=config)
    [call] = response.function_calls or []
    assert call.name == "get_weather" and isinstance((call.args or {})["city"], str)
    history: list[Any] = [
        types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
        response.candidates[0].content,  # type: ignore[index]
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="get_weather", response={"result": "sunny"})],
        ),
    ]
    final = gemini.models.generate_content(model=GEMINI_MODEL, contents=history, config=config)
    assert final.function_calls is None and "based on the tool result" in (final.text or "")


def test_function_calling_modes(gemini: genai.Client) -> None:
    def config(mode: str) -> types.GenerateContentConfig:
        calling = types.FunctionCallingConfig(mode=mode)  # type: ignore[arg-type]
        return types.GenerateContentConfig(
            tools=[_weather_tool()],
            tool_config=types.ToolConfig(function_calling_config=calling),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    none = gemini.models.generate_content(model=GEMINI_MODEL, contents="hi", config=config("NONE"))
    assert none.function_calls is None and none.text
    forced = gemini.models.generate_content(model=GEMINI_MODEL, contents="hi", config=config("ANY"))
    assert forced.function_calls and forced.function_calls[0].name == "get_weather"


def test_streaming(gemini: genai.Client, sb: Sandbox) -> None:
    text = "please stream this rather long sentence back in a few pieces"
    chunks = list(gemini.models.generate_content_stream(model=GEMINI_MODEL, contents=text))
    assert 1 < len(chunks) <= 3
    assert "".join(c.text or "" for c in chunks) == f"Sandbox reply ({GEMINI_MODEL}): {text}"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
    assert chunks[-1].usage_metadata.candidates_token_count  # type: ignore[union-attr]
    assert len(sb.ledger()) == 1


async def test_async_client(gemini: genai.Client) -> None:
    response = await gemini.aio.models.generate_content(model=GEMINI_MODEL, contents="async hello")
    assert response.text and response.text.endswith("async hello")


def test_bad_keys(sb: Sandbox) -> None:
    options = types.HttpOptions(base_url=sb.gemini_base_url)
    bad = genai.Client(api_key="invalid-key", http_options=options)
    with pytest.raises(errors.ClientError) as caught:
        bad.models.generate_content(model=GEMINI_MODEL, contents="hi")
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert "API key not valid" in (caught.value.message or "")
    url = f"{sb.gemini_base_url}/v1beta/models/{GEMINI_MODEL}:generateContent"
    missing = httpx.post(url, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    assert sb.ledger() == []


def test_invalid_request(gemini: genai.Client, sb: Sandbox) -> None:
    url = f"{sb.gemini_base_url}/v1/models/{GEMINI_MODEL}:generateContent"
    response = httpx.post(url, json={"contents": []}, headers={"x-goog-api-key": "k"})
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "contents is not specified" in response.json()["error"]["message"]
    bad_json = httpx.post(url, content=b"{", headers={"x-goog-api-key": "k"})
    assert bad_json.status_code == 400


def test_rate_limit(gemini: genai.Client, sb: Sandbox) -> None:
    sb.configure(rpm=60)  # a burst of one request
    gemini.models.generate_content(model=GEMINI_MODEL, contents="first")
    with pytest.raises(errors.ClientError) as caught:
        gemini.models.generate_content(model=GEMINI_MODEL, contents="second")
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    details = caught.value.details["error"]["details"]
    assert {d["@type"].rsplit(".", 1)[-1] for d in details} == {"QuotaFailure", "RetryInfo"}
    assert len(sb.ledger()) == 1
    assert sb.ledger_summary()["gemini"][GEMINI_MODEL]["realtime"]["rate_limited"] == 1


def test_server_errors(gemini: genai.Client, sb: Sandbox) -> None:
    sb.configure(overloaded_rate=1.0)
    with pytest.raises(errors.ServerError) as caught:
        gemini.models.generate_content(model=GEMINI_MODEL, contents="busy")
    assert caught.value.code == 503 and caught.value.status == "UNAVAILABLE"
    sb.configure(overloaded_rate=0.0)
    with pytest.raises(errors.ServerError) as failed:
        gemini.models.generate_content(model=GEMINI_MODEL, contents="boom [[fail:500]]")
    assert failed.value.code == 500 and failed.value.status == "INTERNAL"
    assert sb.ledger() == []


def test_langchain_chat_model(sb: Sandbox) -> None:
    pytest.importorskip("langchain_google_genai")
    from langchain_google_genai import ChatGoogleGenerativeAI

    llm = ChatGoogleGenerativeAI(model=GEMINI_MODEL, google_api_key="test-key", base_url=sb.gemini_base_url)
    message = llm.invoke("hi")
    assert message.content == f"Sandbox reply ({GEMINI_MODEL}): hi"
    assert message.usage_metadata is not None and message.usage_metadata["total_tokens"] > 0
    assert [e.provider for e in sb.ledger()] == ["gemini"]
