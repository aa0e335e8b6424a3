"""Server-sent events for ``/v1/messages`` with ``stream: true``.

The reply is already known (and billed), so the whole event stream is rendered at
once: ``message_start``, one content block with deltas, ``message_delta`` (stop
reason and output tokens) and ``message_stop``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.responses import Response

from batchain.sandbox import ids
from batchain.sandbox.calls import dumps

__all__ = ["stream_response"]

_PIECE_RE = re.compile(r"\S+\s*|\s+")


def _pieces(text: str, size: int = 3) -> list[str]:
    words = _PIECE_RE.findall(text)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def _events(payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    usage = payload["usage"]
    start_usage = {**usage, "output_tokens": 1}
    start = {**payload, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = start_usage
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(payload["content"]):
        if block["type"] == "tool_use":
            head = {**block, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in _pieces(json.dumps(block["input"], ensure_ascii=False), 4)
            ]
        else:
            head = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": head},
            )
        )
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    final_delta = {"stop_reason": payload["stop_reason"], "stop_sequence": payload["stop_sequence"]}
    events.append(
        (
            "message_delta",
            {"type": "message_delta", "delta": final_delta, "usage": usage},
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def stream_response(payload: dict[str, Any], headers: dict[str, str]) -> Response:
    body = b"".join(
        b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n" for name, data in _events(payload)
    )
    base = {"request-id": ids.anthropic_request_id()}
    base.update(headers)
    return Response(body, 200, base, media_type="text/event-stream")
