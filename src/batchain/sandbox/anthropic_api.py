"""Anthropic routes: ``/v1/messages`` and Message Batches."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from batchain.sandbox.anthropic_messages import AnthropicSpec
from batchain.sandbox.calls import guarded, handle_realtime
from batchain.sandbox.state import SandboxState

__all__ = ["routes"]


def routes(state: SandboxState) -> list[BaseRoute]:
    spec = AnthropicSpec()

    async def messages(request: Request) -> Response:
        return await handle_realtime(state, spec, request)

    return [
        Route("/v1/messages", guarded(spec, messages), methods=["POST"]),
    ]
