"""Gemini ``generateContent`` on the wire: the provider spec, replies, errors and auth.

Requests are parsed by :mod:`.request`; this module renders what Google sends back:
the ``GenerateContentResponse`` (``candidates``, ``usageMetadata``, ``modelVersion``,
``responseId``), the ``google.rpc.Status`` error envelope with typed ``details``
(``ErrorInfo`` for a bad key, ``QuotaFailure`` + ``RetryInfo`` for a 429), and the
API-key check (``x-goog-api-key`` header, or ``?key=``).  Gemini sends no rate-limit
headers; a 429 says how long to wait in ``RetryInfo.retryDelay``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from batchain.sandbox import ids
from batchain.sandbox.calls import Evaluated, Usage, dumps
from batchain.sandbox.errors import ApiError, gemini_error_body
from batchain.sandbox.gemini.request import candidate_count, parse_request
from batchain.sandbox.ledger import Provider, Tier
from batchain.sandbox.limits import Decision
from batchain.sandbox.prompt import Prompt
from batchain.sandbox.responder import FinishReason

if TYPE_CHECKING:
    from starlette.requests import Request

    from batchain.sandbox.state import SandboxState

__all__ = [
    "BAD_JSON",
    "GeminiSpec",
    "api_key",
    "check_auth",
    "gemini_json_response",
    "reply_body",
    "retry_info",
]

BAD_JSON = "Invalid JSON payload received. Unexpected token."
_TYPE = "type.googleapis.com/google.rpc."
_SERVICE = "generativelanguage.googleapis.com"
_MISSING_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_INVALID_KEY = "API key not valid. Please pass a valid API key."
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
_QUOTAS = {  # exceeded limit -> (quotaMetric suffix, quotaId)
    "requests": ("generate_content_paid_tier_requests", "GenerateRequestsPerMinutePerProjectPerModel"),
    "tokens": ("generate_content_paid_tier_input_token_count", "GenerateContentInputTokensPerModelPerMinute"),
}
_FINISH = {
    FinishReason.STOP: "STOP",
    FinishReason.STOP_SEQUENCE: "STOP",
    FinishReason.LENGTH: "MAX_TOKENS",
    FinishReason.TOOL_CALL: "STOP",
}


def gemini_json_response(
    content: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(content, status, headers, media_type="application/json; charset=UTF-8")


def api_key(request: Request) -> str | None:
    """The caller's API key: the ``x-goog-api-key`` header, else the ``key`` query parameter."""
    return request.headers.get("x-goog-api-key") or request.query_params.get("key")


def check_auth(request: Request) -> ApiError | None:
    """A missing key is Google's 403 for unregistered callers; keys starting ``invalid`` are
    rejected with 400 ``API_KEY_INVALID``, as Google answers an unknown key."""
    key = api_key(request)
    if not key:
        return ApiError(
            403, _MISSING_KEY, code="PERMISSION_DENIED", details=[_error_info("SERVICE_DISABLED")]
        )
    if key.startswith("invalid"):
        return ApiError(400, _INVALID_KEY, details=[_error_info("API_KEY_INVALID")])
    return None


def _error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": _TYPE + "ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": _SERVICE},
    }


def _duration(seconds: float) -> str:
    """A ``google.protobuf.Duration`` in JSON: ``"1s"``, ``"0.050s"``."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"


def retry_info(seconds: float) -> dict[str, Any]:
    return {"@type": _TYPE + "RetryInfo", "retryDelay": _duration(max(seconds, 0.0))}


def _quota_failure(model: str, decision: Decision) -> dict[str, Any]:
    kind = decision.exceeded or "requests"
    metric, quota_id = _QUOTAS.get(kind, _QUOTAS["requests"])
    view = decision.requests if kind == "requests" else decision.tokens
    return {
        "@type": _TYPE + "QuotaFailure",
        "violations": [
            {
                "quotaMetric": f"{_SERVICE}/{metric}",
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": model},
                "quotaValue": str(view.limit if view is not None else 0),
            }
        ],
    }


def _parts(ev: Evaluated) -> list[dict[str, Any]]:
    reply = ev.reply
    if reply.finish is FinishReason.TOOL_CALL:
        return [{"functionCall": {"name": reply.tool_name, "args": reply.tool_args or {}}}]
    return [{"text": reply.text}]


def reply_body(ev: Evaluated, usage: Usage) -> dict[str, Any]:
    """The ``GenerateContentResponse`` (every candidate carries the same deterministic reply)."""
    finish = _FINISH[ev.reply.finish]
    candidates = [
        {"content": {"parts": _parts(ev), "role": "model"}, "finishReason": finish, "index": index}
        for index in range(candidate_count(ev.body))
    ]
    return {
        "candidates": candidates,
        "usageMetadata": {
            "promptTokenCount": usage.input_tokens,
            "candidatesTokenCount": usage.output_tokens,
            "totalTokenCount": usage.input_tokens + usage.output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.input_tokens}],
        },
        "modelVersion": ev.prompt.model,
        "responseId": ids.gemini_response_id(),
    }


class GeminiSpec:
    """The Gemini provider for :mod:`batchain.sandbox.calls`."""

    name: Provider = "gemini"
    bad_json_message = BAD_JSON

    def parse(self, body: dict[str, Any], *, batch: bool) -> Prompt:
        del batch  # a batch item is a plain GenerateContentRequest
        return parse_request(body)

    def authenticate(self, request: Request) -> ApiError | None:
        return check_auth(request)

    def usage(self, state: SandboxState, ev: Evaluated) -> Usage:
        del state  # no implicit-cache simulation: cachedContentTokenCount is never sent
        return Usage(ev.prompt_tokens, 0, 0, ev.reply.completion_tokens * candidate_count(ev.body))

    def success_body(self, ev: Evaluated, usage: Usage, tier: Tier) -> dict[str, Any]:
        del tier  # a batch item's response is the same GenerateContentResponse
        return reply_body(ev, usage)

    def rate_limit_error(self, model: str, decision: Decision) -> ApiError:
        details = [_quota_failure(model, decision)]
        if not decision.too_large:
            details.append(retry_info(decision.retry_after_s))
        return ApiError(429, _QUOTA_MESSAGE, details=details)

    def overloaded_error(self) -> ApiError:
        return ApiError(503, "The model is overloaded. Please try again later.")

    def error_response(self, error: ApiError, decision: Decision) -> Response:
        del decision  # the wait is in the 429's RetryInfo, there are no rate-limit headers
        if error.status == 429 and not error.details:
            wait = error.headers.get("retry-after", "1")
            error.details = [retry_info(float(wait))]
        return gemini_json_response(dumps(gemini_error_body(error)), error.status, dict(error.headers))

    def success_response(
        self, ev: Evaluated, payload: dict[str, Any], decision: Decision, started: float
    ) -> Response:
        del decision, started
        mode = ev.body.get("stream")
        if mode in ("sse", "json"):
            from batchain.sandbox.gemini.stream import stream_response

            return stream_response(payload, sse=mode == "sse")
        return gemini_json_response(dumps(payload))
