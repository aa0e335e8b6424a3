"""Anthropic Messages on the wire: validation, normalization, response shapes.

Validation messages imitate the API's pydantic-style wording
(``max_tokens: Field required``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from batchain.sandbox import ids
from batchain.sandbox.calls import Evaluated, Usage, dumps
from batchain.sandbox.errors import ApiError, anthropic_error_body
from batchain.sandbox.ledger import Provider, Tier, cache_neutral, canonical_json
from batchain.sandbox.limits import BucketView, Decision
from batchain.sandbox.prompt import FormatKind, Message, Prompt, ResponseFormat, Tool, ToolMode
from batchain.sandbox.responder import FinishReason
from batchain.sandbox.tokenizer import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    count_tokens,
    tool_tokens,
)

if TYPE_CHECKING:
    from starlette.requests import Request

    from batchain.sandbox.state import SandboxState

__all__ = ["AnthropicSpec", "anthropic_json_response", "check_auth", "parse_messages"]

BAD_JSON = "There was an error parsing the body of your request. It is not valid JSON."
_ORG_ID = "00000000-0000-4000-8000-000000000000"
_STOP = {
    FinishReason.STOP: "end_turn",
    FinishReason.STOP_SEQUENCE: "stop_sequence",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALL: "tool_use",
}
_BLOCK_TYPES = (
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "search_result",
    "server_tool_use",
    "web_search_tool_result",
    "container_upload",
)


def _invalid(message: str) -> ApiError:
    return ApiError(400, message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _block_text(block: Any, where: str) -> tuple[str, int, bool]:
    """(text, extra tokens, is_tool_result) of one content block."""
    if not isinstance(block, dict):
        raise _invalid(f"{where}: Input should be a valid dictionary or object")
    kind = block.get("type")
    if kind is None:
        raise _invalid(f"{where}.type: Field required")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise _invalid(f"{where}.text: Input should be a valid string")
        return text, 0, False
    if kind in ("image", "document", "container_upload"):
        return "", IMAGE_TOKENS, False
    if kind in ("tool_use", "server_tool_use"):
        args = json.dumps(block.get("input", {}), ensure_ascii=False, sort_keys=True)
        return f"{block.get('name', '')} {args}", 0, False
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, list):
            parts = [_block_text(b, f"{where}.content.{i}") for i, b in enumerate(content)]
            return "\n".join(p[0] for p in parts), sum(p[1] for p in parts), True
        return str(content), 0, True
    if kind == "thinking":
        return str(block.get("thinking", "")), 0, False
    if kind in _BLOCK_TYPES:
        return "", 0, False
    expected = ", ".join(f"'{t}'" for t in _BLOCK_TYPES)
    raise _invalid(
        f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {expected}"
    )


def _blocks(content: Any, where: str) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    raise _invalid(f"{where}: Input should be a valid string or a valid list")


def _parse_message(raw: Any, index: int) -> Message:
    where = f"messages.{index}"
    if not isinstance(raw, dict):
        raise _invalid(f"{where}: Input should be a valid dictionary or object")
    role = raw.get("role")
    if role is None:
        raise _invalid(f"{where}.role: Field required")
    if role not in ("user", "assistant"):
        raise _invalid(f"{where}.role: Input should be 'user' or 'assistant'")
    if "content" not in raw:
        raise _invalid(f"{where}.content: Field required")
    texts: list[str] = []
    extra = 0
    tool_result = False
    for i, block in enumerate(_blocks(raw["content"], f"{where}.content")):
        text, more, is_result = _block_text(block, f"{where}.content.{i}")
        if text:
            texts.append(text)
        extra += more
        tool_result = tool_result or is_result
    return Message(role, "\n".join(texts), is_tool_result=tool_result, extra_tokens=extra)


def _parse_system(system: Any) -> Message | None:
    if system is None:
        return None
    texts = []
    for i, block in enumerate(_blocks(system, "system")):
        text, _, _ = _block_text(block, f"system.{i}")
        texts.append(text)
    return Message("system", "\n".join(texts))


def _parse_tools(body: dict[str, Any]) -> list[Tool]:
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("tools: Input should be a valid list")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise _invalid(f"tools.{i}: Input should be a valid dictionary or object")
        if tool.get("type") not in (None, "custom"):
            continue  # server tools (web search...) have no schema to fill
        name = tool.get("name")
        if not isinstance(name, str):
            raise _invalid(f"tools.{i}.custom.name: Field required")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _invalid(f"tools.{i}.custom.input_schema: Field required")
        tools.append(Tool(name, str(tool.get("description") or ""), schema))
    return tools


def _parse_tool_choice(body: dict[str, Any], tools: list[Tool]) -> tuple[ToolMode, str | None]:
    choice = body.get("tool_choice")
    if choice is None:
        return ToolMode.AUTO, None
    if not isinstance(choice, dict):
        raise _invalid("tool_choice: Input should be a valid dictionary or object")
    kind = choice.get("type")
    if kind == "auto":
        return ToolMode.AUTO, None
    if kind == "none":
        return ToolMode.NONE, None
    if kind == "any":
        return ToolMode.REQUIRED, None
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise _invalid("tool_choice.tool.name: Field required")
        if all(tool.name != name for tool in tools):
            raise _invalid(f"Tool '{name}' not found in provided tools")
        return ToolMode.FORCED, name
    raise _invalid(
        f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the expected "
        "tags: 'auto', 'any', 'tool', 'none'"
    )


def _parse_format(body: dict[str, Any]) -> ResponseFormat | None:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        fmt = body.get("output_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _invalid("output_config.format: Input should be a valid json_schema format")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _invalid("output_config.format.schema: Field required")
    return ResponseFormat(FormatKind.JSON_SCHEMA, schema)


def parse_messages(body: dict[str, Any], *, batch: bool) -> Prompt:
    """Validate a Messages body like the real API and normalize it."""
    model = body.get("model")
    if model is None:
        raise _invalid("model: Field required")
    if not isinstance(model, str):
        raise _invalid("model: Input should be a valid string")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens: Field required")
    if not _is_int(max_tokens):
        raise _invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _invalid("max_tokens: Input should be greater than or equal to 1")
    raw_messages = body.get("messages")
    if raw_messages is None:
        raise _invalid("messages: Field required")
    if not isinstance(raw_messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not raw_messages:
        raise _invalid("messages: at least one message is required")
    messages = [_parse_message(m, i) for i, m in enumerate(raw_messages)]
    system = _parse_system(body.get("system"))
    if system is not None:
        messages.insert(0, system)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream: Input should be a valid boolean")
    if batch and stream:
        raise _invalid("stream: Streaming is not supported in the Message Batches API")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 1
    ):
        raise _invalid("temperature: Input should be less than or equal to 1")
    stop = body.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise _invalid("stop_sequences: Input should be a valid list")
    tools = _parse_tools(body)
    mode, forced = _parse_tool_choice(body, tools)
    return Prompt(
        model=model,
        messages=messages,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        response_format=_parse_format(body),
        max_tokens=max_tokens,
        stop=tuple(stop or ()),
    )


#: the shortest prefix each model caches (Anthropic's prompt-caching docs): below it a
#: ``cache_control`` breakpoint writes and reads nothing, silently
_MIN_CACHEABLE = (
    (("claude-opus-4-5", "claude-opus-4-6", "claude-haiku-4-5"), 4096),
    (("claude-3-5-haiku", "claude-3-haiku", "claude-haiku-3"), 2048),
)


def min_cacheable(model: str) -> int:
    """Tokens a cached prefix needs for ``model`` (1,024 unless the docs say otherwise)."""
    for prefixes, tokens in _MIN_CACHEABLE:
        if model.startswith(prefixes):
            return tokens
    return 1024


#: how long a cache entry lives after its last use (``cache_control.ttl``: "5m" or "1h")
_TTL_5M_S = 300.0
_TTL_1H_S = 3600.0


def _batch_cache(state: SandboxState, key: str, batch_id: str, ttl: float) -> bool:
    """Whether a batch request reads prefix ``key`` (else it writes it).

    A batch reads only what an *earlier* batch wrote, and not yet expired: batches do not
    read caches that realtime calls wrote, and the requests of one batch run in parallel,
    so none of them reads what another of the same batch writes (Anthropic's hits inside
    one batch are best-effort; the sandbox takes the case that needs a priming batch).
    A read refreshes the entry's lifetime, as a use does at Anthropic."""
    now = time.time()
    entry = state.batch_prompt_cache.get(key)
    if entry is not None and entry[0] != batch_id and entry[1] > now:
        state.batch_prompt_cache[key] = (entry[0], max(entry[1], now + ttl))
        return True
    if entry is None or entry[1] <= now:
        state.batch_prompt_cache[key] = (batch_id, now + ttl)
    return False


def _cache_prefix(body: dict[str, Any]) -> tuple[int, list[Any]] | None:
    """Tokens and content of the prefix up to the last ``cache_control`` block.

    Walk order is the API's cache order: tools, then system, then messages.  Token
    counting uses the same per-part rules as :mod:`tokenizer`, so the prefix never
    exceeds the prompt total.
    """
    walked: list[Any] = []
    tokens = 0
    best: tuple[int, int] | None = None  # (tokens, len(walked)) at the last breakpoint
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") in (None, "custom"):
            schema = tool.get("input_schema")
            described = Tool(
                str(tool.get("name")),
                str(tool.get("description") or ""),
                schema if isinstance(schema, dict) else {},
            )
            tokens += tool_tokens(described)
        walked.append(tool)
        if isinstance(tool, dict) and tool.get("cache_control"):
            best = (tokens, len(walked))
    turns: list[Any] = []
    if body.get("system") is not None:
        turns.append(body["system"])
    turns.extend(m.get("content") for m in body.get("messages") or [] if isinstance(m, dict))
    for content in turns:
        tokens += MESSAGE_OVERHEAD
        for index, block in enumerate(_blocks(content, "content")):
            text, extra, _ = _block_text(block, "content")
            # blocks of one message are newline-joined: counts add up exactly
            tokens += count_tokens(text) + extra
            walked.append(block)
            if isinstance(block, dict) and block.get("cache_control"):
                best = (tokens, len(walked))
            del index
    if best is None:
        return None
    return best[0], walked[: best[1]]


def _limit_headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    now = time.time()
    for kind, view in (("requests", decision.requests), ("tokens", decision.tokens)):
        if view is not None:
            reset = ids.rfc3339(math.ceil(now + view.reset_s))[:19] + "Z"
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(view.limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(view.remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = reset
    return headers


def anthropic_json_response(
    content: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    base = {"request-id": ids.anthropic_request_id(), "anthropic-organization-id": _ORG_ID}
    if headers:
        base.update(headers)
    return Response(content, status, base, media_type="application/json")


def check_auth(request: Request) -> ApiError | None:
    """``x-api-key`` or ``Authorization: Bearer``; keys starting ``invalid`` are rejected."""
    key = request.headers.get("x-api-key")
    if key is None:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    if not key:
        return ApiError(401, "x-api-key header is required")
    if key.startswith(("invalid", "sk-ant-invalid")):
        return ApiError(401, "invalid x-api-key")
    return None


def _rate_message(kind: str, view: BucketView | None) -> str:
    limit = view.limit if view is not None else 0
    unit = "requests" if kind == "requests" else "input tokens"
    return (
        f"This request would exceed your organization's rate limit of {limit} {unit} per minute "
        "(org: sandbox, model: sandbox). For details, refer to: "
        "https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
        "current usage. Please reduce the prompt length or the maximum tokens requested, "
        "or try again later."
    )


class AnthropicSpec:
    """The Anthropic provider for :mod:`batchain.sandbox.calls`."""

    name: Provider = "anthropic"
    bad_json_message = BAD_JSON

    def parse(self, body: dict[str, Any], *, batch: bool) -> Prompt:
        return parse_messages(body, batch=batch)

    def authenticate(self, request: Request) -> ApiError | None:
        return check_auth(request)

    def usage(self, state: SandboxState, ev: Evaluated) -> Usage:
        read = written = 0
        long_lived = False
        if state.config.simulate_prompt_cache and "cache_control" in ev.canonical:
            prefix = _cache_prefix(ev.body)
            if prefix is not None and prefix[0] >= min_cacheable(ev.prompt.model):
                tokens, content = prefix
                marker = content[-1].get("cache_control") if isinstance(content[-1], dict) else None
                long_lived = isinstance(marker, dict) and marker.get("ttl") == "1h"
                # what is cached is the prefix's content, whatever its markers say
                raw = f"anthropic\0{ev.prompt.model}\0" + canonical_json(cache_neutral({"p": content}))
                key = hashlib.sha256(raw.encode()).hexdigest()
                if ev.batch_id is not None:
                    hit = _batch_cache(state, key, ev.batch_id, _TTL_1H_S if long_lived else _TTL_5M_S)
                elif key in state.prompt_cache:
                    hit = True
                else:
                    state.prompt_cache.add(key)
                    hit = False
                read, written = (tokens, 0) if hit else (0, tokens)
        w1h = written if long_lived else 0
        return Usage(ev.prompt_tokens, read, written, ev.reply.completion_tokens, w1h)

    def success_body(self, ev: Evaluated, usage: Usage, tier: Tier) -> dict[str, Any]:
        return message_body(ev, usage, "batch" if tier == "batch" else "standard")

    def rate_limit_error(self, model: str, decision: Decision) -> ApiError:
        del model
        kind = decision.exceeded or "requests"
        view = decision.requests if kind == "requests" else decision.tokens
        headers = {}
        if not decision.too_large:
            headers["retry-after"] = f"{max(decision.retry_after_s, 0.001):.3f}"
            headers["retry-after-ms"] = str(max(1, math.ceil(decision.retry_after_s * 1000)))
        else:
            headers["x-should-retry"] = "false"
        return ApiError(429, _rate_message(kind, view), headers=headers)

    def overloaded_error(self) -> ApiError:
        return ApiError(529, "Overloaded")

    def error_response(self, error: ApiError, decision: Decision) -> Response:
        request_id = ids.anthropic_request_id()
        headers = dict(error.headers)
        headers.update(_limit_headers(decision))
        headers["request-id"] = request_id
        return anthropic_json_response(dumps(anthropic_error_body(error, request_id)), error.status, headers)

    def success_response(
        self, ev: Evaluated, payload: dict[str, Any], decision: Decision, started: float
    ) -> Response:
        del started
        headers = _limit_headers(decision)
        if ev.body.get("stream") is True:
            from batchain.sandbox.anthropic.stream import stream_response

            return stream_response(payload, headers)
        return anthropic_json_response(dumps(payload), 200, headers)


def message_body(ev: Evaluated, usage: Usage, service_tier: str) -> dict[str, Any]:
    reply = ev.reply
    if reply.finish is FinishReason.TOOL_CALL:
        content: list[dict[str, Any]] = [
            {
                "type": "tool_use",
                "id": "toolu_01" + ev.digest[:22],
                "name": reply.tool_name,
                "input": reply.tool_args,
            }
        ]
    else:
        content = [{"type": "text", "text": reply.text}]
    uncached = usage.input_tokens - usage.cached_tokens - usage.cache_creation_tokens
    return {
        "id": ids.anthropic_message_id(),
        "type": "message",
        "role": "assistant",
        "model": ev.prompt.model,
        "content": content,
        "stop_reason": _STOP[reply.finish],
        "stop_sequence": reply.stop_sequence,
        "usage": {
            "input_tokens": uncached,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_tokens,
            "cache_read_input_tokens": usage.cached_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.cache_creation_tokens - usage.cache_write_1h_tokens,
                "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
            },
            "service_tier": service_tier,
        },
    }
