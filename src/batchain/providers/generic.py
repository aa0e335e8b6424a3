"""Fallback for chat models with no adapter: realtime only, through the model's own code.

The call still gets batchain's concurrency cap, retries, dedup and store-backed replay; its
key is LangChain's own cache key (the model's serialised settings plus the messages).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.load import dumpd, dumps, load
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from batchain.providers._sdk import unreachable
from batchain.providers.base import (
    BatchAPI,
    Body,
    CallRequest,
    Failure,
    FailureKind,
    RateInfo,
    Sent,
    parsed,
    redact,
)
from batchain.store.records import Usage

__all__ = ["GenericAdapter"]

#: the unpatched ``BaseChatModel._agenerate_with_cache``, set by :mod:`batchain.engine.hook`
Original = Callable[..., Awaitable[ChatResult]]


class GenericAdapter:
    name = "generic"
    batchable = False

    def __init__(self, original: Original, original_sync: Callable[..., ChatResult]) -> None:
        self._original = original
        self._original_sync = original_sync

    def build(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        salt: str,
    ) -> CallRequest:
        llm_string = model._get_llm_string(stop=stop, **kwargs)
        prompt = dumps([m.model_copy(update={"id": None}) if m.id else m for m in messages])
        digest = hashlib.sha256("\x1f".join((llm_string, prompt, salt)).encode()).hexdigest()
        name = str(getattr(model, "model_name", None) or getattr(model, "model", None) or "")
        name = name or model._llm_type
        return CallRequest(
            provider=self.name,
            endpoint="",
            model=name,
            body={},
            lane=f"generic|{type(model).__name__}|{name}",
            key=digest,
            est_tokens=len(prompt) // 4,
            context={"messages": messages, "stop": stop, "kwargs": kwargs},
        )

    def client(self, model: BaseChatModel) -> Any:
        return None

    def job_client(self, client: Any, max_connections: int) -> Any:
        return client

    async def send(self, model: BaseChatModel, client: Any, request: CallRequest, timeout: float) -> Sent:
        ctx = request.context
        args = (model, ctx["messages"])
        kw = {"stop": ctx["stop"], "run_manager": ctx.get("run_manager"), **ctx["kwargs"]}
        if ctx.get("sync"):
            # a sync caller handed us a sync callback manager: run the model's sync path
            result = await asyncio.to_thread(self._original_sync, *args, **kw)
        else:
            result = await self._original(*args, **kw)
        payload = {"generations": [dumpd(g) for g in result.generations], "llm_output": result.llm_output}
        return Sent(json.dumps(payload, default=str), {})

    def parse(self, model: BaseChatModel, request: CallRequest, body: Body) -> ChatResult:
        payload = parsed(body)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # `load` is marked beta
            gens = [load(g, allowed_objects="core") for g in payload["generations"]]
        return ChatResult(
            generations=[g for g in gens if isinstance(g, ChatGeneration)],
            llm_output=payload.get("llm_output"),
        )

    def usage(self, body: Body) -> Usage:
        payload = parsed(body)
        total = Usage(requests=1)
        for g in payload["generations"]:
            meta = (g.get("kwargs", {}).get("message", {}) or {}).get("kwargs", {})
            um = meta.get("usage_metadata") or {}
            details = um.get("input_token_details") or {}
            out_details = um.get("output_token_details") or {}
            total = total + Usage(
                int(um.get("input_tokens") or 0),
                int(um.get("output_tokens") or 0),
                int(details.get("cache_read") or 0),
                int(details.get("cache_creation") or 0),
                int(out_details.get("reasoning") or 0),
                0,
            )
        return total

    def classify(self, exc: BaseException) -> Failure:
        status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
        message = redact(f"{type(exc).__name__}: {exc}")
        if unreachable(exc) is not None:
            return Failure(FailureKind.UNREACHABLE, message)
        if isinstance(exc, TimeoutError):
            return Failure(FailureKind.TIMEOUT, message)
        if isinstance(exc, ConnectionError):
            return Failure(FailureKind.CONNECTION, message)
        if isinstance(status, int):
            if status == 429:
                return Failure(FailureKind.RATE_LIMIT, message, status)
            if status >= 500:
                return Failure(FailureKind.SERVER, message, status)
            return Failure(FailureKind.REQUEST, message, status)
        # unknown exception from unknown code: do not guess that retrying helps
        return Failure(FailureKind.OTHER, message)

    def rate_info(self, headers: Mapping[str, str]) -> RateInfo | None:
        return None

    def batch_api(self) -> BatchAPI | None:
        return None
