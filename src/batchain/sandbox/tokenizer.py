"""The sandbox's documented, deterministic tokenizer.

A *token* is one match of the regular expression ``\\w+|[^\\w\\s]`` (a run of word
characters, or one punctuation character; whitespace is free).  ``"Hello, world!"``
is 4 tokens.  Because no token spans whitespace, counting a newline-joined text
equals the sum of counting its parts, which keeps all the rules below additive.

Prompt tokens (both providers, identical rules)::

    prompt_tokens = REPLY_PRIMING                                  # 3
                  + sum(MESSAGE_OVERHEAD + tokens(message text))    # 3 + text, per message
                  + sum(TOOL_OVERHEAD + tokens(name) + tokens(description)
                        + tokens(canonical JSON of the parameters schema))   # per tool
                  + (FORMAT_OVERHEAD + tokens(canonical JSON of the schema))  # JSON schema format

* The OpenAI ``system``/``developer`` message and the Anthropic top-level ``system``
  each count as one message.
* A message's text joins all its text parts, tool-call arguments (as JSON) and tool
  results; each image part adds ``IMAGE_TOKENS``.
* Canonical JSON: ``json.dumps(obj, sort_keys=True, separators=(",", ":"))``.

Completion tokens = ``tokens(reply text)``; for a tool call
``tokens(tool name) + tokens(arguments JSON)``; never less than 1.
"""

from __future__ import annotations

import json
import re
from typing import Any

from batchain.sandbox.prompt import FormatKind, Message, Prompt, Tool

__all__ = [
    "FORMAT_OVERHEAD",
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "REPLY_PRIMING",
    "TOKEN_RE",
    "TOOL_OVERHEAD",
    "count_json",
    "count_tokens",
    "message_tokens",
    "prompt_tokens",
    "tool_tokens",
    "truncate_to_tokens",
]

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
MESSAGE_OVERHEAD = 3
REPLY_PRIMING = 3
TOOL_OVERHEAD = 3
FORMAT_OVERHEAD = 3
IMAGE_TOKENS = 85

_findall = TOKEN_RE.findall


def count_tokens(text: str) -> int:
    return len(_findall(text)) if text else 0


def count_json(value: Any) -> int:
    return count_tokens(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def message_tokens(message: Message) -> int:
    return MESSAGE_OVERHEAD + count_tokens(message.text) + message.extra_tokens


def tool_tokens(tool: Tool) -> int:
    return TOOL_OVERHEAD + count_tokens(tool.name) + count_tokens(tool.description) + count_json(tool.schema)


def prompt_tokens(prompt: Prompt) -> int:
    total = REPLY_PRIMING
    for message in prompt.messages:
        total += message_tokens(message)
    for tool in prompt.tools:
        total += tool_tokens(tool)
    fmt = prompt.response_format
    if fmt is not None and fmt.kind is FormatKind.JSON_SCHEMA and fmt.schema is not None:
        total += FORMAT_OVERHEAD + count_json(fmt.schema)
    return total


def truncate_to_tokens(text: str, limit: int) -> tuple[str, bool]:
    """Cut ``text`` right after its ``limit``-th token; returns (text, was_truncated)."""
    if limit <= 0:
        return "", bool(text)
    for index, match in enumerate(TOKEN_RE.finditer(text)):
        if index == limit - 1:
            end = match.end()
            return text[:end], bool(text[end:].strip())
    return text, False
