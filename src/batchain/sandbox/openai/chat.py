"""OpenAI Chat Completions on the wire: validation, normalization, response shapes.

Sans-I/O except for the Starlette response objects built at the edge.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from batchain.sandbox import ids
from batchain.sandbox.calls import Evaluated, Usage, dumps
from batchain.sandbox.errors import ApiError, openai_error_body
from batchain.sandbox.ledger import Provider, Tier
from batchain.sandbox.limits import BucketView, Decision
from batchain.sandbox.prompt import FormatKind, Message, Prompt, ResponseFormat, Tool, ToolMode
from batchain.sandbox.responder import FinishReason
from batchain.sandbox.tokenizer import IMAGE_TOKENS, message_tokens

if TYPE_CHECKING:
    from starlette.requests import Request

    from batchain.sandbox.state import SandboxState

__all__ = ["OpenAISpec", "go_duration", "openai_json_response", "service_tier"]

_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_ROLE_LIST = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'"
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}
BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please open "
    "an issue at https://github.com/openai/openai-python/issues.)"
)
_FINISH = {
    FinishReason.STOP: "stop",
    FinishReason.STOP_SEQUENCE: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.TOOL_CALL: "tool_calls",
}


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "an unknown type")


def _invalid_type(param: str, expected: str, value: Any) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _missing(param: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _content_text(content: Any, param: str) -> tuple[str, int]:
    """Text and extra (image) tokens of a message ``content``."""
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise _invalid_type(param, "one of a string or array of objects", content)
    texts: list[str] = []
    extra = 0
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise _invalid_type(where, "an object", part)
        kind = part.get("type")
        if kind is None:
            raise _missing(f"{where}.type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise _invalid_type(f"{where}.text", "a string", text)
            texts.append(text)
        elif kind in ("image_url", "input_image", "input_audio", "file"):
            extra += IMAGE_TOKENS
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        else:
            raise ApiError(
                400,
                f"Invalid value: '{kind}'. Supported values are: 'text', 'image_url', "
                "'input_audio', 'refusal', and 'file'.",
                param=f"{where}.type",
                code="invalid_value",
            )
    return "\n".join(texts), extra


def _parse_message(raw: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise _invalid_type(where, "an object", raw)
    role = raw.get("role")
    if role is None:
        raise _missing(f"{where}.role")
    if role not in _ROLES:
        raise ApiError(
            400,
            f"Invalid value: '{role}'. Supported values are: {_ROLE_LIST}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    if "content" not in raw and role in ("system", "developer", "user", "tool"):
        raise _missing(f"{where}.content")
    text, extra = _content_text(raw.get("content"), f"{where}.content")
    if role == "assistant":
        calls = raw.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise _invalid_type(f"{where}.tool_calls", "an array", calls)
            parts = [text] if text else []
            for call in calls:
                function = call.get("function", {}) if isinstance(call, dict) else {}
                parts.append(f"{function.get('name', '')} {function.get('arguments', '')}")
            text = "\n".join(parts)
    if role == "tool" and not isinstance(raw.get("tool_call_id"), str):
        raise _missing(f"{where}.tool_call_id")
    normalized_role = "system" if role == "developer" else ("tool" if role == "function" else role)
    return Message(normalized_role, text, is_tool_result=normalized_role == "tool", extra_tokens=extra)


def _parse_tools(body: dict[str, Any]) -> list[Tool]:
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid_type("tools", "an array", raw)
    tools: list[Tool] = []
    for index, item in enumerate(raw):
        where = f"tools[{index}]"
        if not isinstance(item, dict):
            raise _invalid_type(where, "an object", item)
        if item.get("type", "function") != "function":
            raise ApiError(
                400,
                f"Invalid value: '{item.get('type')}'. Supported values are: 'function' and 'custom'.",
                param=f"{where}.type",
                code="invalid_value",
            )
        function = item.get("function")
        if not isinstance(function, dict):
            raise _missing(f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str):
            raise _missing(f"{where}.function.name")
        if not _TOOL_NAME_RE.match(name):
            raise ApiError(
                400,
                f"Invalid '{where}.function.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param=f"{where}.function.name",
                code="invalid_value",
            )
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise _invalid_type(f"{where}.function.parameters", "an object", parameters)
        tools.append(Tool(name, str(function.get("description") or ""), parameters))
    return tools


def _parse_tool_choice(body: dict[str, Any], tools: list[Tool]) -> tuple[ToolMode, str | None]:
    choice = body.get("tool_choice")
    if choice is None:
        return ToolMode.AUTO, None
    if not tools:
        raise ApiError(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            param="tool_choice",
        )
    if isinstance(choice, str):
        modes = {"auto": ToolMode.AUTO, "none": ToolMode.NONE, "required": ToolMode.REQUIRED}
        if choice not in modes:
            raise ApiError(
                400,
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                param="tool_choice",
                code="invalid_value",
            )
        return modes[choice], None
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise _missing("tool_choice.function.name")
        if all(tool.name != name for tool in tools):
            raise ApiError(
                400,
                f"Invalid value for 'tool_choice': no function named '{name}' was specified "
                "in the 'tools' parameter.",
                param="tool_choice",
            )
        return ToolMode.FORCED, name
    raise _invalid_type("tool_choice", "one of a string or object", choice)


def _parse_response_format(body: dict[str, Any], messages: list[Message]) -> ResponseFormat | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _invalid_type("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        if not any("json" in m.text.lower() for m in messages):
            raise ApiError(
                400,
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                param="messages",
            )
        return ResponseFormat(FormatKind.JSON_OBJECT)
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise _missing("response_format.json_schema")
        if not isinstance(spec.get("name"), str):
            raise _missing("response_format.json_schema.name")
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise _invalid_type("response_format.json_schema.schema", "an object", schema)
        return ResponseFormat(FormatKind.JSON_SCHEMA, schema)
    raise ApiError(
        400,
        f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
        param="response_format.type",
        code="invalid_value",
    )


def _parse_int_param(body: dict[str, Any], name: str, low: int, high: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise _invalid_type(name, "an integer", value)
    if value < low:
        raise ApiError(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if high is not None and value > high:
        raise ApiError(
            400,
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return int(value)


def _check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value):
        raise _invalid_type(name, "a number", value)
    if value < low:
        raise ApiError(
            400,
            f"Invalid '{name}': decimal below minimum value. Expected a value >= {low:g}, "
            f"but got {value} instead.",
            param=name,
            code="decimal_below_min_value",
        )
    if value > high:
        raise ApiError(
            400,
            f"Invalid '{name}': decimal above maximum value. Expected a value <= {high:g}, "
            f"but got {value} instead.",
            param=name,
            code="decimal_above_max_value",
        )


def _parse_stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > 4:
            raise ApiError(
                400,
                f"Invalid 'stop': array too long. Expected an array with maximum length 4, "
                f"but got an array with length {len(stop)} instead.",
                param="stop",
                code="array_above_max_length",
            )
        return tuple(stop)
    raise _invalid_type("stop", "one of a string or array of strings", stop)


def parse_chat(body: dict[str, Any], *, batch: bool) -> Prompt:
    """Validate a Chat Completions body like the real API and normalize it."""
    model = body.get("model")
    if model is None:
        raise ApiError(400, "you must provide a model parameter")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    raw_messages = body.get("messages")
    if raw_messages is None:
        raise _missing("messages")
    if not isinstance(raw_messages, list):
        raise _invalid_type("messages", "an array", raw_messages)
    if not raw_messages:
        raise ApiError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    messages = [_parse_message(m, i) for i, m in enumerate(raw_messages)]
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    if batch and stream:
        raise ApiError(400, "Streaming is not supported in the Batch API.", param="stream")
    max_tokens = _parse_int_param(body, "max_tokens", 1, None)
    max_completion = _parse_int_param(body, "max_completion_tokens", 1, None)
    if max_tokens is not None and max_completion is not None:
        raise ApiError(
            400,
            "max_tokens and max_completion_tokens cannot both be set.",
            param="max_tokens",
        )
    _parse_int_param(body, "n", 1, 128)
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    _check_number(body, "presence_penalty", -2, 2)
    _check_number(body, "frequency_penalty", -2, 2)
    tools = _parse_tools(body)
    mode, forced = _parse_tool_choice(body, tools)
    return Prompt(
        model=model,
        messages=messages,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        response_format=_parse_response_format(body, messages),
        max_tokens=max_completion if max_completion is not None else max_tokens,
        stop=_parse_stop(body),
    )


def go_duration(seconds: float) -> str:
    """Go-style duration as OpenAI's reset headers use: ``12ms``, ``1.5s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


def _limit_headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, view in (("requests", decision.requests), ("tokens", decision.tokens)):
        if view is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(view.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(view.remaining)
            headers[f"x-ratelimit-reset-{kind}"] = go_duration(view.reset_s)
    return headers


def openai_json_response(
    content: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    base = {
        "x-request-id": ids.openai_request_id(),
        "openai-version": "2020-10-01",
        "openai-organization": "org-sandbox",
    }
    if headers:
        base.update(headers)
    return Response(content, status, base, media_type="application/json")


def _retry_after_headers(seconds: float) -> dict[str, str]:
    ms = max(1, int(seconds * 1000 + 0.999))
    return {"retry-after": f"{ms / 1000:.3f}", "retry-after-ms": str(ms)}


#: OpenAI caches prompts of at least 1,024 tokens, in steps of 128 (its prompt-caching guide)
CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128


class OpenAISpec:
    """The OpenAI provider for :mod:`batchain.sandbox.calls`."""

    name: Provider = "openai"
    bad_json_message = BAD_JSON

    def parse(self, body: dict[str, Any], *, batch: bool) -> Prompt:
        return parse_chat(body, batch=batch)

    def authenticate(self, request: Request) -> ApiError | None:
        return check_auth(request.headers.get("authorization"))

    def usage(self, state: SandboxState, ev: Evaluated) -> Usage:
        cached = 0
        messages = ev.prompt.messages
        long_enough = ev.prompt_tokens >= CACHE_MIN_TOKENS
        if state.config.simulate_prompt_cache and long_enough and messages and messages[0].role == "system":
            # the cacheable prefix is the system message, in whole 128-token steps
            first = messages[0]
            prefix = message_tokens(first) // CACHE_STEP * CACHE_STEP
            key = hashlib.sha256(f"openai\0{ev.prompt.model}\0{first.text}".encode()).hexdigest()
            if key in state.prompt_cache:
                cached = prefix if prefix >= CACHE_MIN_TOKENS else 0
            else:
                state.prompt_cache.add(key)
        return Usage(ev.prompt_tokens, cached, 0, ev.reply.completion_tokens * _choices(ev.body))

    def success_body(self, ev: Evaluated, usage: Usage, tier: Tier) -> dict[str, Any]:
        return chat_completion(ev, usage, service_tier(tier))

    def rate_limit_error(self, model: str, decision: Decision) -> ApiError:
        headers = _retry_after_headers(decision.retry_after_s)
        if decision.too_large:
            view = decision.tokens
            limit = view.limit if view is not None else 0
            return ApiError(
                429,
                f"Request too large for {model} in organization org-sandbox on tokens per min "
                f"(TPM): Limit {limit}, Requested {decision.cost}. The input or output tokens "
                "must be reduced in order to run successfully.",
                code="rate_limit_exceeded",
                type="tokens",
                headers={"x-should-retry": "false"},
            )
        kind = decision.exceeded or "requests"
        view = decision.requests if kind == "requests" else decision.tokens
        requested = 1 if kind == "requests" else decision.cost
        return ApiError(
            429,
            _rate_message(model, kind, view, requested, decision.retry_after_s),
            code="rate_limit_exceeded",
            type=kind,
            headers=headers,
        )

    def overloaded_error(self) -> ApiError:
        return ApiError(
            503,
            "The server is overloaded or not ready yet.",
            code="service_unavailable",
        )

    def error_response(self, error: ApiError, decision: Decision) -> Response:
        headers = dict(error.headers)
        headers.update(_limit_headers(decision))
        return openai_json_response(dumps(openai_error_body(error)), error.status, headers)

    def success_response(
        self, ev: Evaluated, payload: dict[str, Any], decision: Decision, started: float
    ) -> Response:
        headers = _limit_headers(decision)
        headers["openai-processing-ms"] = str(int((time.perf_counter() - started) * 1000))
        if ev.body.get("stream") is True:
            from batchain.sandbox.openai.stream import stream_response

            return stream_response(ev, payload, headers)
        return openai_json_response(dumps(payload), 200, headers)


def _rate_message(model: str, kind: str, view: BucketView | None, requested: int, wait: float) -> str:
    limit = view.limit if view is not None else 0
    used = limit - view.remaining if view is not None else 0
    label = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
    return (
        f"Rate limit reached for {model} in organization org-sandbox on {label}: "
        f"Limit {limit}, Used {used}, Requested {requested}. "
        f"Please try again in {go_duration(max(wait, 0.001))}. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )


def check_auth(authorization: str | None) -> ApiError | None:
    """``Authorization: Bearer <non-empty>``; keys starting ``invalid`` are rejected too."""
    if not authorization:
        return ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="invalid_api_key",
        )
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or key.startswith(("invalid", "sk-invalid")):
        shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
        return ApiError(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )
    return None


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _message(ev: Evaluated) -> dict[str, Any]:
    reply = ev.reply
    if reply.finish is FinishReason.TOOL_CALL:
        # stable per request, so identical requests give identical replies
        call_id = "call_" + ev.digest[:24]
        return {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "annotations": [],
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": reply.tool_name,
                        "arguments": json.dumps(reply.tool_args, ensure_ascii=False),
                    },
                }
            ],
        }
    return {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}


def service_tier(tier: Tier) -> str:
    """The ``service_tier`` an answer reports: ``flex`` when flex served it, else ``default``
    (a batch line's answer says ``default`` too)."""
    return "flex" if tier == "flex" else "default"


def chat_completion(ev: Evaluated, usage: Usage, tier: str = "default") -> dict[str, Any]:
    message = _message(ev)
    finish = _FINISH[ev.reply.finish]
    choices = [
        {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
        for i in range(_choices(ev.body))
    ]
    return {
        "id": ids.openai_chat_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": ev.prompt.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": tier,
        "system_fingerprint": "fp_sandbox",
    }
