"""The provider-neutral prompt: what the responder and the tokenizer see.

Each provider module converts its wire request into a :class:`Prompt`; nothing
downstream knows about OpenAI or Anthropic shapes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FormatKind",
    "Message",
    "Prompt",
    "ResponseFormat",
    "Tool",
    "ToolMode",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation turn flattened to text.

    ``role`` is ``system``, ``user``, ``assistant`` or ``tool``.  ``text`` joins every
    text-bearing part with newlines (tool-call arguments and tool results included),
    which keeps token counts additive.  ``extra_tokens`` covers non-text parts (images).
    """

    role: str
    text: str
    is_tool_result: bool = False
    extra_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    schema: dict[str, Any]


class ToolMode(enum.Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"  # OpenAI "required", Anthropic "any"
    FORCED = "forced"  # a named tool


class FormatKind(enum.Enum):
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    kind: FormatKind
    schema: dict[str, Any] | None = None


@dataclass(slots=True)
class Prompt:
    model: str
    messages: list[Message]
    tools: list[Tool] = field(default_factory=list)
    tool_mode: ToolMode = ToolMode.AUTO
    forced_tool: str | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role in ("user", "tool"):
                return message.text
        return ""

    def ends_with_tool_result(self) -> bool:
        return bool(self.messages) and self.messages[-1].is_tool_result

    def all_text(self) -> str:
        return "\n".join(message.text for message in self.messages)
