"""OpenAI's Responses API (``POST /v1/responses``), realtime and in batch lines.

A Responses body is read into the Chat Completions request it amounts to (instructions
and input items as messages, flat function tools, ``text.format`` as a response format,
``max_output_tokens``), so validation, the deterministic reply, usage and the ledger are
the chat endpoint's; the reply is written back as a ``response`` object: ``output`` items
(a message with ``output_text``, or ``function_call`` items) and ``usage`` with
``input_tokens`` / ``output_tokens`` and their details. Streaming is not simulated here.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from batchain.sandbox import ids
from batchain.sandbox.calls import Evaluated, Usage, dumps
from batchain.sandbox.errors import ApiError
from batchain.sandbox.openai.chat import OpenAISpec, openai_json_response, parse_chat, service_tier
from batchain.sandbox.responder import FinishReason

if TYPE_CHECKING:
    from starlette.responses import Response

    from batchain.sandbox.ledger import Tier
    from batchain.sandbox.limits import Decision
    from batchain.sandbox.prompt import Prompt

__all__ = ["ResponsesSpec", "parse_responses", "response_object"]

_ROLES = ("user", "assistant", "system", "developer")


def parse_responses(body: dict[str, Any], *, batch: bool) -> Prompt:
    """Validate a Responses body and normalize it (as the chat request it amounts to)."""
    if body.get("stream") and not batch:
        raise ApiError(400, "The sandbox does not simulate streamed Responses API calls.", param="stream")
    return parse_chat(_as_chat(body), batch=batch)


def _as_chat(body: dict[str, Any]) -> dict[str, Any]:
    chat: dict[str, Any] = {"model": body.get("model")}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise ApiError(400, "Invalid type for 'instructions': expected a string.", param="instructions")
        messages.append({"role": "system", "content": instructions})
    raw = body.get("input")
    if raw is None:
        raise ApiError(
            400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            messages.append(_input_item(item, i))
    else:
        raise ApiError(400, "Invalid type for 'input': expected a string or an array.", param="input")
    chat["messages"] = messages
    for name in ("temperature", "top_p", "stream"):
        if name in body:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    tools = body.get("tools")
    if tools:
        chat["tools"] = [_tool(t, i) for i, t in enumerate(tools)]
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "function":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif choice is not None:
            chat["tool_choice"] = choice
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    return chat


def _input_item(item: Any, index: int) -> dict[str, Any]:
    param = f"input[{index}]"
    if not isinstance(item, dict):
        raise ApiError(400, f"Invalid type for '{param}': expected an object.", param=param)
    kind = item.get("type", "message")
    if kind == "function_call":
        call = {"name": item.get("name"), "arguments": item.get("arguments", "")}
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": item.get("call_id"), "type": "function", "function": call}],
        }
    if kind == "function_call_output":
        return {"role": "tool", "tool_call_id": item.get("call_id"), "content": str(item.get("output", ""))}
    if kind != "message" or item.get("role") not in _ROLES:
        raise ApiError(400, f"Invalid value for '{param}': unsupported input item.", param=param)
    content = item.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                raise ApiError(400, f"Invalid content part in '{param}.content'.", param=f"{param}.content")
            texts.append(str(part.get("text", "")))
        content = "".join(texts)
    role = "system" if item["role"] == "developer" else item["role"]
    return {"role": role, "content": content}


def _tool(tool: Any, index: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise ApiError(
            400, f"Invalid value for 'tools[{index}]': the sandbox has function tools only.", param="tools"
        )
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def response_object(ev: Evaluated, usage: Usage, tier: str = "default") -> dict[str, Any]:
    reply = ev.reply
    rid = "resp_" + ids.openai_chat_id().removeprefix("chatcmpl-")
    if reply.finish is FinishReason.TOOL_CALL:
        output: list[dict[str, Any]] = [
            {
                "type": "function_call",
                "id": "fc_" + ev.digest[:24],
                "call_id": "call_" + ev.digest[:24],
                "name": reply.tool_name,
                "arguments": json.dumps(reply.tool_args, ensure_ascii=False),
                "status": "completed",
            }
        ]
    else:
        text = {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
        output = [
            {
                "type": "message",
                "id": "msg_" + ev.digest[:24],
                "status": "completed",
                "role": "assistant",
                "content": [text],
            }
        ]
    incomplete = reply.finish is FinishReason.LENGTH
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "error": None,
        "model": ev.prompt.model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": ev.body.get("tool_choice", "auto"),
        "tools": ev.body.get("tools", []),
        "instructions": ev.body.get("instructions"),
        "max_output_tokens": ev.body.get("max_output_tokens"),
        "temperature": ev.body.get("temperature", 1.0),
        "top_p": ev.body.get("top_p", 1.0),
        "text": ev.body.get("text") or {"format": {"type": "text"}},
        "service_tier": tier,
        "usage": {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
        "metadata": ev.body.get("metadata") or {},
    }


class ResponsesSpec(OpenAISpec):
    """``/v1/responses``: OpenAI's errors, auth, limits and prompt cache, a Responses body."""

    def parse(self, body: dict[str, Any], *, batch: bool) -> Prompt:
        return parse_responses(body, batch=batch)

    def success_body(self, ev: Evaluated, usage: Usage, tier: Tier) -> dict[str, Any]:
        return response_object(ev, usage, service_tier(tier))

    def success_response(
        self, ev: Evaluated, payload: dict[str, Any], decision: Decision, started: float
    ) -> Response:
        headers = {"openai-processing-ms": str(int((time.perf_counter() - started) * 1000))}
        return openai_json_response(dumps(payload), 200, headers)
