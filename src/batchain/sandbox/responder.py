"""Deterministic, provider-neutral reply generation.

``respond(prompt, key)`` depends only on the normalized prompt and ``key`` (the
request hash), never on process state, so the same request gets the same reply in
every process and every run.  Decision order:

1. tools present, tool use not disabled, and (tool use forced/required or the last
   message is not a tool result): call the forced tool, else the first tool, with
   arguments generated from its JSON schema;
2. a JSON-schema response format: JSON text of a value valid for the schema;
   a ``json_object`` format: a small JSON object;
3. the prompt lists labels to choose from: exactly one label (keyword match, else a
   hash-based choice);
4. otherwise ``Sandbox reply (<model>): <first 12 words of the last user message>``.

Text replies then honour stop sequences and ``max_tokens`` (whichever cuts first).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from batchain.sandbox.labels import find_labels, pick_label
from batchain.sandbox.prompt import FormatKind, Prompt, Tool, ToolMode
from batchain.sandbox.schemagen import ValueSource, generate
from batchain.sandbox.tokenizer import count_json, count_tokens, truncate_to_tokens

__all__ = ["FinishReason", "Reply", "respond"]

_ECHO_WORDS = 12
_DIRECTIVE_RE = re.compile(r"\[\[[a-z]+:[^\]]*\]\]")
_WORD_RE = re.compile(r"\w+")


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    STOP_SEQUENCE = "stop_sequence"
    TOOL_CALL = "tool_call"


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    finish: FinishReason
    completion_tokens: int
    tool_name: str | None = None
    tool_args: dict[str, Any] | None = None
    stop_sequence: str | None = None


def _clean(text: str) -> str:
    return _DIRECTIVE_RE.sub("", text) if "[[" in text else text


def _source(prompt: Prompt, key: str) -> ValueSource:
    context = _clean(prompt.all_text())
    words = _WORD_RE.findall(_clean(prompt.last_user_text())) or _WORD_RE.findall(context)

    def choose(options: list[Any]) -> Any:
        if all(isinstance(o, str) for o in options) and len(options) > 1:
            return pick_label(options, context, key, listed=False)
        return options[0] if len(options) == 1 else options[hash_index(key, len(options))]

    return ValueSource(key, words, choose)


def hash_index(key: str, size: int) -> int:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % size


def _pick_tool(prompt: Prompt) -> Tool | None:
    if not prompt.tools or prompt.tool_mode is ToolMode.NONE:
        return None
    if prompt.tool_mode is ToolMode.FORCED and prompt.forced_tool is not None:
        for tool in prompt.tools:
            if tool.name == prompt.forced_tool:
                return tool
    if prompt.tool_mode is ToolMode.AUTO and prompt.ends_with_tool_result():
        return None
    return prompt.tools[0]


def _tool_reply(prompt: Prompt, tool: Tool, key: str) -> Reply:
    args = generate(tool.schema, _source(prompt, key))
    if not isinstance(args, dict):
        args = {}
    tokens = max(1, count_tokens(tool.name) + count_json(args))
    return Reply("", FinishReason.TOOL_CALL, tokens, tool_name=tool.name, tool_args=args)


def _body_text(prompt: Prompt, key: str) -> str:
    fmt = prompt.response_format
    if fmt is not None and fmt.kind is FormatKind.JSON_SCHEMA and fmt.schema is not None:
        return json.dumps(generate(fmt.schema, _source(prompt, key)), ensure_ascii=False)
    context = _clean(prompt.all_text())
    labels = _find_labels(prompt)
    if fmt is not None:  # json_object
        answer = pick_label(labels, context, key) if labels else _echo_words(prompt)
        return json.dumps({"answer": answer}, ensure_ascii=False)
    if labels:
        return pick_label(labels, context, key)
    if prompt.ends_with_tool_result():
        return f"Sandbox reply ({prompt.model}): based on the tool result, {_echo_words(prompt)}"
    words = _echo_words(prompt)
    return f"Sandbox reply ({prompt.model}): {words}" if words else f"Sandbox reply ({prompt.model})."


def _find_labels(prompt: Prompt) -> list[str] | None:
    # The latest user turn is the most specific instruction; fall back to the rest.
    for message in reversed(prompt.messages):
        if message.role in ("user", "system"):
            labels = find_labels(_clean(message.text))
            if labels:
                return labels
    return None


def _echo_words(prompt: Prompt) -> str:
    words = _clean(prompt.last_user_text()).split()
    return " ".join(words[:_ECHO_WORDS])


def _apply_limits(prompt: Prompt, text: str) -> Reply:
    finish = FinishReason.STOP
    matched: str | None = None
    cut = len(text)
    for stop in prompt.stop:
        position = text.find(stop) if stop else -1
        if 0 <= position < cut:
            cut, matched = position, stop
    if matched is not None:
        text, finish = text[:cut], FinishReason.STOP_SEQUENCE
    if prompt.max_tokens is not None:
        truncated, was_cut = truncate_to_tokens(text, prompt.max_tokens)
        if was_cut:
            text, finish, matched = truncated, FinishReason.LENGTH, None
    tokens = max(1, count_tokens(text))
    if prompt.max_tokens is not None:
        tokens = min(tokens, max(prompt.max_tokens, 1))
    return Reply(text, finish, tokens, stop_sequence=matched)


def respond(prompt: Prompt, key: str) -> Reply:
    """The deterministic reply to ``prompt``; ``key`` (the request hash) seeds choices."""
    tool = _pick_tool(prompt)
    if tool is not None:
        return _tool_reply(prompt, tool, key)
    return _apply_limits(prompt, _body_text(prompt, key))
