"""The Starlette application: provider routes plus the ``/_sandbox`` admin API.

Admin endpoints (no auth)::

    GET  /_sandbox/health           {"status": "ok"}
    GET  /_sandbox/ledger           [LedgerEntry as dict, ...]
    GET  /_sandbox/ledger/summary   summary[provider][model][tier] -> counters
    GET  /_sandbox/duplicates       {request_hash: count} for hashes billed > once
    GET  /_sandbox/config           current knobs
    POST /_sandbox/config           merge JSON knobs, returns the new knobs
    POST /_sandbox/reset            clear ledger, batches, files, limiter state
    POST /_sandbox/forget           {"batch_ids": [...]} (absent or null: all): the sandbox
                                    no longer knows these batches (404); returns their ids
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from batchain.sandbox import ids
from batchain.sandbox.anthropic import api as anthropic_api
from batchain.sandbox.anthropic.messages import anthropic_json_response
from batchain.sandbox.calls import Endpoint, dumps
from batchain.sandbox.config import ConfigError
from batchain.sandbox.errors import ApiError, anthropic_error_body, openai_error_body
from batchain.sandbox.gemini import api as gemini_api
from batchain.sandbox.openai import api as openai_api
from batchain.sandbox.openai.chat import openai_json_response
from batchain.sandbox.state import SandboxState

__all__ = ["create_app"]

logger = logging.getLogger("batchain.sandbox")


def _json(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status, media_type="application/json")


def _admin_routes(state: SandboxState) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def ledger(request: Request) -> Response:
        state.advance()
        return _json([entry.to_dict() for entry in state.ledger.entries()])

    async def summary(request: Request) -> Response:
        state.advance()
        return _json(state.ledger.summary())

    async def duplicates(request: Request) -> Response:
        state.advance()
        return _json(state.ledger.duplicates())

    async def config(request: Request) -> Response:
        if request.method == "POST":
            raw = await request.body()
            try:
                changes = json.loads(raw) if raw.strip() else {}
                if not isinstance(changes, dict):
                    raise ConfigError("expected a JSON object of knobs")
                state.configure(changes)
            except (ConfigError, ValueError) as exc:
                return _json({"error": str(exc)}, 400)
        return _json(state.config.to_dict())

    async def reset(request: Request) -> Response:
        state.reset()
        return _json({"status": "reset"})

    async def forget(request: Request) -> Response:
        raw = await request.body()
        try:
            wanted = (json.loads(raw) if raw.strip() else {}).get("batch_ids")
        except (ValueError, AttributeError):
            return _json({"error": 'expected {"batch_ids": [...]} or {}'}, 400)
        if wanted is not None and not (isinstance(wanted, list) and all(isinstance(i, str) for i in wanted)):
            return _json({"error": "batch_ids must be a list of batch ids, or null"}, 400)
        return _json({"forgotten": state.forget_batches(None if wanted is None else set(wanted))})

    return [
        Route("/_sandbox/health", health, methods=["GET"]),
        Route("/_sandbox/ledger", ledger, methods=["GET"]),
        Route("/_sandbox/ledger/summary", summary, methods=["GET"]),
        Route("/_sandbox/duplicates", duplicates, methods=["GET"]),
        Route("/_sandbox/config", config, methods=["GET", "POST"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        Route("/_sandbox/forget", forget, methods=["POST"]),
    ]


def _is_anthropic(path: str) -> bool:
    return path.startswith("/v1/messages")


def _error(request: Request, error: ApiError) -> Response:
    if _is_anthropic(request.url.path):
        request_id = ids.anthropic_request_id()
        body = dumps(anthropic_error_body(error, request_id))
        return anthropic_json_response(body, error.status, {"request-id": request_id})
    return openai_json_response(dumps(openai_error_body(error)), error.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        if _is_anthropic(request.url.path):
            return _error(request, ApiError(404, "Not found"))
        message = f"Invalid URL ({request.method} {request.url.path})"
        return _error(request, ApiError(404, message))
    if status == 405:
        message = f"Method {request.method} not allowed for {request.url.path}"
        return _error(request, ApiError(405, message))
    return _error(request, ApiError(status, "The server had an error processing your request."))


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("sandbox: unhandled error on %s", request.url.path, exc_info=exc)
    return _error(request, ApiError(500, "The server had an error processing your request."))


_FAST_PATHS = frozenset({("POST", "/v1/chat/completions"), ("POST", "/v1/messages")})


class _SandboxApp(Starlette):
    """Starlette with a direct path for the hot realtime endpoints, and Gemini's app.

    Those endpoints render every error themselves (see ``calls.guarded``), so routing
    and the exception middleware add nothing but ~50 us per request to them.  Gemini
    shares ``/v1/batches`` and ``/v1/files`` with OpenAI, so its requests are told
    apart first (:func:`batchain.sandbox.gemini.api.claims`) and go to its own app.
    """

    def __init__(self, fast: dict[tuple[str, str], Endpoint], gemini: Starlette, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fast = fast
        self._gemini = gemini

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if gemini_api.claims(scope):
                await self._gemini(scope, receive, send)
                return
            endpoint = self._fast.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(state: SandboxState | None = None) -> Starlette:
    """The sandbox ASGI app over ``state`` (a fresh default state if omitted)."""
    state = state or SandboxState()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        ticker = asyncio.create_task(state.run_ticker())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    routes = [*openai_api.routes(state), *anthropic_api.routes(state), *_admin_routes(state)]
    fast = {
        (method, route.path): route.endpoint
        for route in routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if (method, route.path) in _FAST_PATHS
    }
    app = _SandboxApp(
        fast,
        gemini_api.app(state),
        routes=routes,
        exception_handlers={404: _http_error, 405: _http_error, Exception: _unexpected},
        lifespan=lifespan,
    )
    app.state.sandbox = state
    return app
