"""A ``GenerateContentRequest`` read into the provider-neutral :class:`Prompt`.

The same parser serves ``:generateContent``, ``:streamGenerateContent`` and every
batch item, so a request behaves identically in realtime and in a batch.  The model
comes from the URL (``models/{model}:generateContent``, or the batch's model); the
route puts it in the body as ``model`` before the request is hashed, so a realtime
call and the same request inside a batch hash the same.

Validation messages follow Google's field-violation style
(``* GenerateContentRequest.contents: contents is not specified``).  Unknown fields are
accepted, as clients send fields this sandbox does not model (safety settings,
thinking config, labels...).
"""

from __future__ import annotations

import json
from typing import Any

from batchain.sandbox.errors import ApiError
from batchain.sandbox.gemini.schema import field, snake, to_json_schema
from batchain.sandbox.prompt import FormatKind, Message, Prompt, ResponseFormat, Tool, ToolMode
from batchain.sandbox.tokenizer import IMAGE_TOKENS

__all__ = ["candidate_count", "model_id", "parse_request"]

_REQUEST = "GenerateContentRequest"
_MAX_CANDIDATES = 8
_MAX_STOP_SEQUENCES = 5
_JSON_MIME = "application/json"
_MODES = ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED")
_MEDIA_PARTS = ("inlineData", "fileData")


def _invalid(path: str, message: str) -> ApiError:
    return ApiError(400, f"* {_REQUEST}.{path}: {message}\n")


def model_id(model: str) -> str:
    """``models/gemini-2.5-flash`` -> ``gemini-2.5-flash`` (the ledger's and modelVersion's)."""
    return model.removeprefix("models/")


def _part_text(part: Any, where: str) -> tuple[str, int, bool]:
    """(text, extra tokens, is a function response) of one ``Part``."""
    if not isinstance(part, dict):
        raise _invalid(where, "Invalid value (not an object)")
    text = field(part, "text")
    if isinstance(text, str):
        return text, 0, False
    call = field(part, "functionCall")
    if isinstance(call, dict):
        args = json.dumps(call.get("args") or {}, ensure_ascii=False, sort_keys=True)
        return f"{call.get('name', '')} {args}", 0, False
    result = field(part, "functionResponse")
    if isinstance(result, dict):
        payload = json.dumps(result.get("response") or {}, ensure_ascii=False, sort_keys=True)
        return payload, 0, True
    if any(field(part, kind) is not None for kind in _MEDIA_PARTS):
        return "", IMAGE_TOKENS, False
    if field(part, "executableCode") is not None or field(part, "codeExecutionResult") is not None:
        return "", 0, False
    raise _invalid(f"{where}.data", "required oneof field 'data' must have one initialized field")


def _content(raw: Any, where: str, system: bool = False) -> Message:
    if not isinstance(raw, dict):
        raise _invalid(where, "Invalid value (not an object)")
    role = raw.get("role") or "user"
    if not system and role not in ("user", "model", "function"):
        raise ApiError(400, "Please use a valid role: user, model.")
    parts = raw.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _invalid(f"{where}.parts", "contents.parts must not be empty.")
    read = [_part_text(part, f"{where}.parts[{i}]") for i, part in enumerate(parts)]
    text = "\n".join(t for t, _, _ in read if t)
    extra = sum(e for _, e, _ in read)
    tool_result = any(r for _, _, r in read)
    if system:
        return Message("system", text, extra_tokens=extra)
    normalized = "tool" if tool_result else ("assistant" if role == "model" else "user")
    return Message(normalized, text, is_tool_result=tool_result, extra_tokens=extra)


def _messages(body: dict[str, Any]) -> list[Message]:
    contents = body.get("contents")
    if contents is None or contents == []:
        raise _invalid("contents", "contents is not specified")
    if not isinstance(contents, list):
        raise _invalid("contents", "Invalid value (not a list)")
    messages = [_content(c, f"contents[{i}]") for i, c in enumerate(contents)]
    system = field(body, "systemInstruction")
    if system is not None:
        if isinstance(system, str):  # the REST API also takes a bare string
            system = {"parts": [{"text": system}]}
        messages.insert(0, _content(system, "system_instruction", system=True))
    return messages


def _tools(body: dict[str, Any]) -> list[Tool]:
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("tools", "Invalid value (not a list)")
    tools: list[Tool] = []
    for index, tool in enumerate(raw):
        declarations = field(tool, "functionDeclarations") if isinstance(tool, dict) else None
        for number, declaration in enumerate(declarations or []):
            where = f"tools[{index}].function_declarations[{number}]"
            tools.append(_declaration(declaration, where))
    return tools


def _declaration(raw: Any, where: str) -> Tool:
    if not isinstance(raw, dict):
        raise _invalid(where, "Invalid value (not an object)")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.name", "Invalid function name. Must start with a letter or an underscore.")
    json_schema = field(raw, "parametersJsonSchema")
    if isinstance(json_schema, dict):
        schema = json_schema
    else:
        schema = to_json_schema(raw.get("parameters")) or {"type": "object", "properties": {}}
    return Tool(name, str(raw.get("description") or ""), schema)


def _tool_choice(body: dict[str, Any], tools: list[Tool]) -> tuple[ToolMode, str | None]:
    """``toolConfig.functionCallingConfig``: AUTO, ANY (optionally narrowed to the first
    allowed name), NONE; VALIDATED behaves as AUTO."""
    config = field(body, "toolConfig")
    calling = field(config, "functionCallingConfig") if isinstance(config, dict) else None
    if not isinstance(calling, dict):
        return ToolMode.AUTO, None
    mode = str(calling.get("mode") or "AUTO").upper()
    if mode not in _MODES:
        raise _invalid("tool_config.function_calling_config.mode", f'Invalid value "{mode}"')
    if mode == "NONE":
        return ToolMode.NONE, None
    if mode != "ANY":
        return ToolMode.AUTO, None
    allowed = field(calling, "allowedFunctionNames")
    if isinstance(allowed, list) and allowed:
        known = {tool.name for tool in tools}
        for name in allowed:
            if name not in known:
                raise _invalid(
                    "tool_config.function_calling_config.allowed_function_names",
                    f"Function '{name}' is not declared in tools.",
                )
        return ToolMode.FORCED, str(allowed[0])
    return ToolMode.REQUIRED, None


def _format(config: dict[str, Any]) -> ResponseFormat | None:
    mime = field(config, "responseMimeType")
    json_schema = field(config, "responseJsonSchema")
    schema = field(config, "responseSchema")
    if (json_schema is not None or schema is not None) and mime != _JSON_MIME:
        raise _invalid(
            "generation_config.response_mime_type",
            "response_mime_type must be application/json when a response schema is set.",
        )
    if isinstance(json_schema, dict):
        return ResponseFormat(FormatKind.JSON_SCHEMA, json_schema)
    if isinstance(schema, dict):
        return ResponseFormat(FormatKind.JSON_SCHEMA, to_json_schema(schema))
    if mime == _JSON_MIME:
        return ResponseFormat(FormatKind.JSON_OBJECT)
    return None


def _int_in(config: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = field(config, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(
            f"generation_config.{snake(name)}", f"must be an integer between {low} and {high}, got {value!r}"
        )
    return value


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config = field(body, "generationConfig")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise _invalid("generation_config", "Invalid value (not an object)")
    temperature = config.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2
    ):
        raise _invalid("generation_config.temperature", "temperature must be within [0.0, 2.0]")
    return config


def candidate_count(body: dict[str, Any]) -> int:
    """``generationConfig.candidateCount`` of a request :func:`parse_request` accepted."""
    count = _int_in(_generation_config(body), "candidateCount", 1, _MAX_CANDIDATES)
    return count or 1


def parse_request(body: dict[str, Any]) -> Prompt:
    """Validate a ``GenerateContentRequest`` (with ``model`` set by the route)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "model is not specified")
    messages = _messages(body)
    config = _generation_config(body)
    stop = field(config, "stopSequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _invalid("generation_config.stop_sequences", "Invalid value (not a list of strings)")
    if len(stop) > _MAX_STOP_SEQUENCES:
        raise _invalid("generation_config.stop_sequences", "at most 5 stop sequences are allowed")
    tools = _tools(body)
    mode, forced = _tool_choice(body, tools)
    candidate_count(body)  # validated here, read again when the reply is rendered
    return Prompt(
        model=model_id(model),
        messages=messages,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        response_format=_format(config),
        max_tokens=_int_in(config, "maxOutputTokens", 1, 1 << 20),
        stop=tuple(stop),
    )
