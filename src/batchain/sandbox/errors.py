"""Provider-neutral API errors and their rendering into each provider's envelope.

OpenAI::

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

Anthropic::

    {"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}

Gemini (Google's ``google.rpc.Status`` envelope; ``code`` is the HTTP status)::

    {"error": {"code": ..., "message": ..., "status": "INVALID_ARGUMENT", "details": [...]}}

A Gemini batch item's error is a bare ``google.rpc.Status`` whose ``code`` is the
gRPC code (:func:`grpc_code`), as Google renders statuses outside HTTP responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApiError",
    "anthropic_error_body",
    "anthropic_error_type",
    "gemini_error_body",
    "gemini_status",
    "grpc_code",
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

# HTTP status -> (google.rpc.Code name, gRPC code number)
_GOOGLE_STATUS: dict[int, tuple[str, int]] = {
    400: ("INVALID_ARGUMENT", 3),
    401: ("UNAUTHENTICATED", 16),
    403: ("PERMISSION_DENIED", 7),
    404: ("NOT_FOUND", 5),
    409: ("ALREADY_EXISTS", 6),
    413: ("INVALID_ARGUMENT", 3),
    429: ("RESOURCE_EXHAUSTED", 8),
    499: ("CANCELLED", 1),
    500: ("INTERNAL", 13),
    501: ("UNIMPLEMENTED", 12),
    503: ("UNAVAILABLE", 14),
    504: ("DEADLINE_EXCEEDED", 4),
}
_GRPC_CODES = {name: number for name, number in _GOOGLE_STATUS.values()} | {
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
}


@dataclass(slots=True)
class ApiError(Exception):
    """An HTTP error response, rendered per provider by the route that catches it.

    ``type`` overrides the status-derived error type (e.g. OpenAI 429 ``tokens``);
    ``details`` are Google's typed ``error.details`` (ignored by the other envelopes).
    """

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)

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


def gemini_status(error: ApiError) -> str:
    """The ``google.rpc.Code`` name: ``error.code`` when set, else derived from the status."""
    if error.code is not None:
        return error.code
    known = _GOOGLE_STATUS.get(error.status)
    if known is not None:
        return known[0]
    return "INTERNAL" if error.status >= 500 else "INVALID_ARGUMENT"


def grpc_code(error: ApiError) -> int:
    """The gRPC code number of ``error`` (what a batch item's ``google.rpc.Status`` carries)."""
    return _GRPC_CODES.get(gemini_status(error), 2)  # 2: UNKNOWN


def gemini_error_body(error: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": error.status,
        "message": error.message,
        "status": gemini_status(error),
    }
    if error.details:
        body["details"] = error.details
    return {"error": body}
