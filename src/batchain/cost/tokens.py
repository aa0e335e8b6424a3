"""Input tokens of a request body, counted cheaply from its texts (no tokenizer).

One place for what a request's input is made of (system prompt, message texts, tools,
response format) and the rough rule of ~4 characters a token plus 3 per message: the
cost estimate falls back to it when tiktoken has no encoding, and batch mode sizes a
model's provider queue with it (enqueued tokens, :mod:`batchain.engine.capacity`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = [
    "CHARS_PER_TOKEN",
    "MESSAGE_OVERHEAD",
    "approx_input_tokens",
    "input_chars",
    "input_texts",
    "overhead",
]

CHARS_PER_TOKEN = 4
#: tokens a message adds beyond its text (and the reply's priming counts as one more)
MESSAGE_OVERHEAD = 3
_EXTRAS = ("system", "tools", "response_format")


def input_texts(body: dict[str, Any]) -> Iterator[str]:
    """Every text of a request body that counts as input: chat (OpenAI or Anthropic
    shape), a Responses API body (``instructions``, ``input``) or an embeddings body
    (OpenAI's, or Gemini's ``batchEmbedContents``)."""
    yield from _system(body)
    for msg in body.get("messages") or ():
        yield from _content(msg)
    yield from _responses_or_embeddings(body)
    yield from _gemini_embeddings(body)
    yield from _schemas(body)


def _gemini_embeddings(body: dict[str, Any]) -> Iterator[str]:
    for request in body.get("requests") or ():
        content = request.get("content") if isinstance(request, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        yield from (str(p.get("text") or "") for p in parts or () if isinstance(p, dict))


def _responses_or_embeddings(body: dict[str, Any]) -> Iterator[str]:
    if isinstance(body.get("instructions"), str):
        yield body["instructions"]
    value = body.get("input")
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                yield from _content(item)


def _system(body: dict[str, Any]) -> Iterator[str]:
    system = body.get("system")
    if isinstance(system, str):
        yield system
    elif isinstance(system, list):
        yield from (str(b.get("text", "")) for b in system if isinstance(b, dict))


def _content(msg: Any) -> Iterator[str]:
    content = msg.get("content") if isinstance(msg, dict) else None
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        yield from (str(b.get("text", "")) for b in content if isinstance(b, dict))


def _schemas(body: dict[str, Any]) -> Iterator[str]:
    for key in ("tools", "response_format"):
        if body.get(key):
            yield str(body[key])


def overhead(body: dict[str, Any]) -> int:
    """The tokens of a request beyond its texts: per message, and the reply's priming."""
    return MESSAGE_OVERHEAD * (len(body.get("messages") or ()) + 1)


def approx_input_tokens(body: dict[str, Any]) -> int:
    """About how many input tokens ``body`` is: its texts (:func:`input_texts`) at ~4
    characters a token."""
    return input_chars(body) // CHARS_PER_TOKEN + overhead(body)


def input_chars(body: dict[str, Any]) -> int:
    """The characters :func:`approx_input_tokens` counts: message texts, the system prompt,
    tools and response format. Plain string contents are counted inline: this runs for
    every call of a batch not built from a template (see ``CallRequest.queued_tokens``)."""
    chars = 0
    for msg in body.get("messages") or ():
        content = msg.get("content") if type(msg) is dict else None
        chars += len(content) if type(content) is str else sum(len(t) for t in _content(msg))
    if any(key in body for key in _EXTRAS):
        chars += sum(len(t) for t in _system(body)) + sum(len(t) for t in _schemas(body))
    return chars
