"""OpenAI's Responses API against the sandbox with the official SDK: realtime and batch."""

from __future__ import annotations

import openai
import pytest
from pydantic import BaseModel

from batchain.sandbox import Sandbox
from tests.conformance.helpers import OPENAI_MODEL, batch_line, jsonl, read_lines, upload, wait_openai


class City(BaseModel):
    name: str
    population: int


def test_create_answers_a_response_object_and_bills_it(oai: openai.OpenAI, sb: Sandbox) -> None:
    r = oai.responses.create(model=OPENAI_MODEL, input="name a river", instructions="be brief")
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert "name a river" in r.output_text
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    (entry,) = sb.ledger()
    assert (entry.model, entry.tier, entry.input_tokens) == (OPENAI_MODEL, "realtime", r.usage.input_tokens)


def test_input_items_tools_and_structured_output(oai: openai.OpenAI, sb: Sandbox) -> None:
    items = [
        {"role": "developer", "content": "answer in one line"},
        {"role": "user", "content": [{"type": "input_text", "text": "the largest city"}]},
    ]
    parsed = oai.responses.parse(model=OPENAI_MODEL, input=items, text_format=City)  # type: ignore[arg-type]
    assert isinstance(parsed.output_parsed, City)
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    called = oai.responses.create(
        model=OPENAI_MODEL, input="look it up", tools=[tool], tool_choice="required"
    )  # type: ignore[list-item]
    (call,) = [o for o in called.output if o.type == "function_call"]
    assert call.name == "lookup" and call.call_id
    assert len(sb.ledger()) == 2


def test_bad_bodies_get_openai_errors(oai: openai.OpenAI, sb: Sandbox) -> None:
    with pytest.raises(openai.BadRequestError, match="input"):
        oai.responses.create(model=OPENAI_MODEL)  # type: ignore[call-overload]
    with pytest.raises(openai.BadRequestError, match="tools"):
        oai.responses.create(model=OPENAI_MODEL, input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert sb.ledger() == []


def test_a_responses_batch_runs_and_bills_at_batch_tier(oai: openai.OpenAI, sb: Sandbox) -> None:
    lines = [
        batch_line(f"r-{i}", {"model": OPENAI_MODEL, "input": f"question {i}"}, url="/v1/responses")
        for i in range(5)
    ]
    batch = oai.batches.create(
        input_file_id=upload(oai, jsonl(lines)), endpoint="/v1/responses", completion_window="24h"
    )
    batch = wait_openai(oai, batch.id)
    assert batch.status == "completed" and batch.endpoint == "/v1/responses"
    assert batch.usage is not None and batch.usage.input_tokens > 0
    out = {line["custom_id"]: line["response"]["body"] for line in read_lines(oai, batch.output_file_id)}
    assert set(out) == {f"r-{i}" for i in range(5)}
    assert all(
        body["object"] == "response" and "question" in body["output"][0]["content"][0]["text"]
        for body in out.values()
    )
    assert sorted(e.tier for e in sb.ledger()) == ["batch"] * 5


def test_a_chat_line_in_a_responses_batch_is_a_url_mismatch(oai: openai.OpenAI, sb: Sandbox) -> None:
    lines = [batch_line("c-0", {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "x"}]})]
    batch = oai.batches.create(
        input_file_id=upload(oai, jsonl(lines)), endpoint="/v1/responses", completion_window="24h"
    )
    batch = wait_openai(oai, batch.id)
    assert batch.status == "failed" and batch.errors is not None
    assert batch.errors.data is not None and batch.errors.data[0].code == "url_mismatch"
    assert sb.ledger() == []
