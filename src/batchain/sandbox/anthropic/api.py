"""Anthropic routes: ``/v1/messages`` and Message Batches.

Routing ignores the query string, so anthropic 1.x's ``?beta=true`` paths work.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from batchain.sandbox.anthropic.batches import AnthropicBatchStore, check_requests
from batchain.sandbox.anthropic.messages import (
    BAD_JSON,
    AnthropicSpec,
    anthropic_json_response,
    check_auth,
)
from batchain.sandbox.calls import (
    dumps,
    guarded,
    handle_realtime,
    parse_json_object,
    request_config,
    upload_latency,
)
from batchain.sandbox.errors import ApiError
from batchain.sandbox.state import SandboxState

__all__ = ["routes"]

_MB = 1024 * 1024
MAX_MESSAGES_BYTES = 32 * _MB


def _ok(payload: Any) -> Response:
    return anthropic_json_response(dumps(payload))


def _authenticate(request: Request) -> None:
    denied = check_auth(request)
    if denied is not None:
        raise denied


def _too_large() -> ApiError:
    return ApiError(413, "Request exceeds the maximum allowed number of bytes.")


def _check_size(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large()


def _queue_full(queued: int, adding: int, limit: int) -> ApiError:
    """The 429 of a create that would take the requests in the processing queue past
    ``limit`` (the real wording is not documented; this one names the queue and the limit)."""
    return ApiError(
        429,
        f"Number of batch requests in the processing queue ({queued:,} queued + {adding:,} new) "
        f"would exceed your rate limit of {limit:,} requests; please try again once some of "
        "your batches have ended.",
        headers={"retry-after": "1"},
    )


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "20")
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "limit: Input should be a valid integer") from None
    if not 1 <= value <= 1000:
        raise ApiError(400, "limit: Input should be between 1 and 1000")
    return value


def routes(state: SandboxState) -> list[BaseRoute]:
    spec = AnthropicSpec()
    batches = AnthropicBatchStore(state, spec)
    state.register(batches)

    async def messages(request: Request) -> Response:
        _check_size(request, MAX_MESSAGES_BYTES)
        return await handle_realtime(state, spec, request)

    async def create_batch(request: Request) -> Response:
        _authenticate(request)
        await upload_latency(state)
        limit = state.config.anthropic_max_batch_bytes  # 256 MB
        _check_size(request, limit)
        config = request_config(state, request)
        if state.take_batch_create_429():
            state.ledger.note_rate_limited("anthropic", "*", "batch")
            raise ApiError(
                429,
                "Number of batch creation requests has exceeded your rate limit "
                "(sandbox knob batch_create_429).",
                headers={"retry-after": "0.05", "retry-after-ms": "50"},
            )
        raw = await request.body()
        if len(raw) > limit:
            raise _too_large()
        body = parse_json_object(raw, BAD_JSON)
        requests = check_requests(body, config.anthropic_max_batch_requests)
        if config.batch_fail_validation:
            raise ApiError(400, "The batch failed validation (sandbox knob batch_fail_validation).")
        queue_limit = state.config.anthropic_queue_limit
        if queue_limit is not None:
            queued = batches.queued()
            if queued + len(requests) > queue_limit:
                state.ledger.note_rate_limited("anthropic", "*", "batch")
                raise _queue_full(queued, len(requests), queue_limit)
        batch = batches.create(requests, config)
        return _ok(batch.to_dict(_base_url(request)))

    async def retrieve_batch(request: Request) -> Response:
        _authenticate(request)
        batch = batches.get(request.path_params["batch_id"])
        return _ok(batch.to_dict(_base_url(request)))

    async def list_batches(request: Request) -> Response:
        _authenticate(request)
        query = request.query_params
        page, has_more = batches.list(query.get("after_id"), _limit(request), before=query.get("before_id"))
        base = _base_url(request)
        data = [b.to_dict(base) for b in page]
        return _ok(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def cancel_batch(request: Request) -> Response:
        _authenticate(request)
        batch = batches.cancel(request.path_params["batch_id"])
        return _ok(batch.to_dict(_base_url(request)))

    async def delete_batch(request: Request) -> Response:
        _authenticate(request)
        batch_id = request.path_params["batch_id"]
        batches.delete(batch_id)
        return _ok({"id": batch_id, "type": "message_batch_deleted"})

    async def batch_results(request: Request) -> Response:
        _authenticate(request)
        data = batches.results(request.path_params["batch_id"])
        response = anthropic_json_response(data)
        response.headers["content-type"] = "application/x-jsonl"
        return response

    def route(path: str, handler: Any, method: str) -> Route:
        return Route(path, guarded(spec, handler), methods=[method])

    return [
        route("/v1/messages", messages, "POST"),
        route("/v1/messages/batches", create_batch, "POST"),
        route("/v1/messages/batches", list_batches, "GET"),
        route("/v1/messages/batches/{batch_id}", retrieve_batch, "GET"),
        route("/v1/messages/batches/{batch_id}", delete_batch, "DELETE"),
        route("/v1/messages/batches/{batch_id}/cancel", cancel_batch, "POST"),
        route("/v1/messages/batches/{batch_id}/results", batch_results, "GET"),
    ]
