"""Server-sent events for ``/v1/chat/completions`` with ``stream: true``.

The reply is already known (and billed), so the whole event stream is rendered at
once; clients see ordinary ``chat.completion.chunk`` events and ``data: [DONE]``.
A final usage chunk (empty ``choices``) is sent when
``stream_options.include_usage`` is true.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response

from batchain.sandbox import ids
from batchain.sandbox.calls import Evaluated, dumps

__all__ = ["stream_response"]

_PIECE_RE = re.compile(r"\S+\s*|\s+")


def _pieces(text: str, size: int = 3) -> list[str]:
    words = _PIECE_RE.findall(text)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)] or [""]


def _chunk(base: dict[str, Any], delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**base, "choices": [choice], "usage": None}


def _events(ev: Evaluated, payload: dict[str, Any]) -> list[dict[str, Any]]:
    base = {
        "id": payload["id"],
        "object": "chat.completion.chunk",
        "created": payload["created"],
        "model": payload["model"],
        "service_tier": payload.get("service_tier"),
        "system_fingerprint": payload.get("system_fingerprint"),
    }
    choice = payload["choices"][0]
    message = choice["message"]
    events = [_chunk(base, {"role": "assistant", "content": "", "refusal": None}, None)]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        head = {
            "index": 0,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        events.append(_chunk(base, {"tool_calls": [head]}, None))
        for piece in _pieces(call["function"]["arguments"], 4):
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            events.append(_chunk(base, delta, None))
    else:
        for piece in _pieces(message.get("content") or ""):
            events.append(_chunk(base, {"content": piece}, None))
    events.append(_chunk(base, {}, choice["finish_reason"]))
    options = ev.body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append({**base, "choices": [], "usage": payload["usage"]})
    return events


def stream_response(ev: Evaluated, payload: dict[str, Any], headers: dict[str, str]) -> Response:
    parts = [b"data: " + dumps(event) + b"\n\n" for event in _events(ev, payload)]
    parts.append(b"data: [DONE]\n\n")
    base = {"x-request-id": ids.openai_request_id(), "openai-version": "2020-10-01"}
    base.update(headers)
    return Response(b"".join(parts), 200, base, media_type="text/event-stream")
