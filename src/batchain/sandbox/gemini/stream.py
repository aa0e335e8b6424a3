"""``:streamGenerateContent``: the reply as a few ``GenerateContentResponse`` chunks.

The reply is already known (and billed), so the whole stream is rendered at once.
With ``?alt=sse`` (what google-genai requests) each chunk is one server-sent event,
``data: <json>`` ended by a blank line; without it Google streams one JSON array.
Text is cut into at most :data:`_CHUNKS` pieces; a function call comes whole in one
chunk.  Every chunk carries ``usageMetadata`` with the prompt tokens, the last one the
full counts and the ``finishReason``, as Google's do.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response

from batchain.sandbox.calls import dumps

__all__ = ["stream_response"]

_CHUNKS = 3
_PIECE_RE = re.compile(r"\S+\s*|\s+")


def _pieces(text: str) -> list[str]:
    words = _PIECE_RE.findall(text)
    size = max(1, -(-len(words) // _CHUNKS))
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)] or [""]


def _chunks(payload: dict[str, Any]) -> list[dict[str, Any]]:
    candidates = payload["candidates"]
    usage = payload["usageMetadata"]
    parts = candidates[0]["content"]["parts"]
    head = {"modelVersion": payload["modelVersion"], "responseId": payload["responseId"]}
    pieces = [parts] if "text" not in parts[0] else [[{"text": p}] for p in _pieces(parts[0]["text"])]
    prompt_only = {
        "promptTokenCount": usage["promptTokenCount"],
        "totalTokenCount": usage["promptTokenCount"],
    }
    chunks: list[dict[str, Any]] = []
    for number, piece in enumerate(pieces):
        last = number == len(pieces) - 1
        chunk_candidates = []
        for candidate in candidates:
            rendered: dict[str, Any] = {"content": {"parts": piece, "role": "model"}}
            if last:
                rendered["finishReason"] = candidate["finishReason"]
            rendered["index"] = candidate["index"]
            chunk_candidates.append(rendered)
        chunks.append(
            {"candidates": chunk_candidates, "usageMetadata": usage if last else prompt_only, **head}
        )
    return chunks


def stream_response(payload: dict[str, Any], *, sse: bool) -> Response:
    chunks = _chunks(payload)
    if sse:
        body = b"".join(b"data: " + dumps(chunk) + b"\r\n\r\n" for chunk in chunks)
        return Response(body, 200, media_type="text/event-stream")
    body = b"[" + b",\r\n".join(dumps(chunk) for chunk in chunks) + b"]"
    return Response(body, 200, media_type="application/json; charset=UTF-8")
