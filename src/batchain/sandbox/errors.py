"""Provider-neutral API errors and their rendering into each provider's envelope.

OpenAI::

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

Anthropic::

    {"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApiError",
    "anthropic_error_body",
    "anthropic_error_type",
    "openai_error_body",
    "openai_error_type",
]

_OPENAI_TYPES: dict[int, str] = {
    429: "requests",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
    529: "server_error",
}

_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(slots=True)
class ApiError(Exception):
    """An HTTP error response, rendered per provider by the route that catches it.

    ``type`` overrides the status-derived error type (e.g. OpenAI 429 ``tokens``).
    """

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


def openai_error_type(status: int) -> str:
    return _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def openai_error_body(error: ApiError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.type or openai_error_type(error.status),
            "param": error.param,
            "code": error.code,
        }
    }


def anthropic_error_body(error: ApiError, request_id: str | None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {
            "type": error.type or anthropic_error_type(error.status),
            "message": error.message,
        },
        "request_id": request_id,
    }
