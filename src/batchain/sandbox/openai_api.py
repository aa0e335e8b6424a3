"""OpenAI routes: ``/v1/chat/completions``, Files and Batches."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from batchain.sandbox.calls import guarded, handle_realtime
from batchain.sandbox.openai_chat import OpenAISpec
from batchain.sandbox.state import SandboxState

__all__ = ["routes"]


def routes(state: SandboxState) -> list[BaseRoute]:
    spec = OpenAISpec()

    async def chat_completions(request: Request) -> Response:
        return await handle_realtime(state, spec, request)

    return [
        Route("/v1/chat/completions", guarded(spec, chat_completions), methods=["POST"]),
    ]
