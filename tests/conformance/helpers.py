"""Helpers shared by the conformance tests."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import anthropic
import openai

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
GEMINI_MODEL = "gemini-2.5-flash"
OPENAI_TERMINAL = ("completed", "failed", "expired", "cancelled")


def chat_body(text: str, model: str = OPENAI_MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def batch_line(custom_id: str, body: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    line.update(overrides)
    return line


def jsonl(lines: list[Any]) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def upload(client: openai.OpenAI, data: bytes, name: str = "input.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(data)), purpose="batch").id


def simple_lines(count: int, prefix: str = "hello") -> list[dict[str, Any]]:
    return [batch_line(f"req-{i}", chat_body(f"{prefix} number {i}")) for i in range(count)]


def start_batch(client: openai.OpenAI, lines: list[Any], **kwargs: Any) -> Any:
    file_id = upload(client, jsonl(lines))
    return client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **kwargs,
    )


def wait_openai(client: openai.OpenAI, batch_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in OPENAI_TERMINAL:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch stuck in {batch.status}")
        time.sleep(0.02)


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    assert text.endswith("\n") and "\n\n" not in text
    return [json.loads(line) for line in text.splitlines()]


def anthropic_request(custom_id: str, text: str, **params: Any) -> dict[str, Any]:
    body = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **params,
    }
    return {"custom_id": custom_id, "params": body}


def wait_anthropic(client: anthropic.Anthropic, batch_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch stuck in {batch.processing_status}")
        time.sleep(0.02)


def wait_gemini(client: Any, name: str, timeout: float = 10.0) -> Any:
    """Poll a google-genai batch until its Operation is done."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.batches.get(name=name)
        if job.done:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"batch stuck in {job.state}")
        time.sleep(0.02)
