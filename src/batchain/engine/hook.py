"""The model-call hook.

Every chat-model generation in LangChain passes through
``BaseChatModel._agenerate_with_cache`` (async) or ``_generate_with_cache`` (sync), whatever
the chain around it looks like: sequences, parallel fan-out, branches, fallbacks,
structured output, tools, lambdas that call models, LangGraph nodes. batchain replaces
those two methods once, process-wide. Outside a batchain job (no :data:`ACTIVE` context)
they run the original code unchanged; inside one, the call is handed to the job's
:class:`~batchain.engine.calls.CallManager`.

Streamed calls (``model.stream()`` / ``astream()``, in a lambda or a graph node) would go
around those two methods, straight to the provider at full price and unseen. Inside a job,
``BaseChatModel._should_stream`` says no, so LangChain's own fallback sends them through
``invoke`` / ``ainvoke`` (and the hook): one call like any other, in batch mode through the
Batch API, its answer yielded as one chunk. The beta event protocol
(``stream_events(version="v3")``) streams from the provider with no such fallback: inside a
job it raises instead of leaving batchain.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from batchain.errors import StreamedCallRefused

__all__ = [
    "ACTIVE",
    "CallContext",
    "CallHandler",
    "Eviction",
    "install",
    "original_agenerate",
    "original_generate",
]


class CallHandler(Protocol):
    """Who answers the model calls of a running job: the job's call manager, or the
    estimate's dry run (which only records each call's request)."""

    async def generate(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: Any,
        kwargs: dict[str, Any],
        item_idx: int,
        *,
        sync: bool = False,
    ) -> ChatResult: ...

    async def embed(
        self, resource: Any, params: dict[str, Any], item_idx: int, *, sync: bool = False
    ) -> dict[str, Any]:
        """An embeddings call (``resource.create(**params)`` of the OpenAI SDK, or
        ``resource.embed_content(**params)`` of google-genai): its answer's JSON."""
        ...


@dataclass(slots=True)
class Eviction:
    """An item's own task, which batch mode cancels when the item leaves the run's window
    (its calls are at a provider), and the provider batch it then waits for.

    The item's task is cancelled, not sent an exception through its calls: LangChain
    gathers model calls with ``return_exceptions=True`` and takes anything not an
    ``Exception`` for a result, while a cancelled task unwinds the whole chain cleanly."""

    task: asyncio.Task[Any] | None
    batch: str | None = None

    def evict(self, batch: str) -> None:
        if self.batch is None and self.task is not None:
            self.batch = batch
            self.task.cancel()


@dataclass(frozen=True, slots=True)
class CallContext:
    manager: CallHandler
    item_idx: int
    loop: asyncio.AbstractEventLoop
    #: batch mode: how the item leaves the window (None outside an item's own task)
    eviction: Eviction | None = None


#: set by the runner around each item's chain; child tasks and executor threads inherit it
ACTIVE: ContextVar[CallContext | None] = ContextVar("batchain_call_context", default=None)

_ORIGINAL_ASYNC: Any = BaseChatModel._agenerate_with_cache
_ORIGINAL_SYNC: Any = BaseChatModel._generate_with_cache
_ORIGINAL_SHOULD_STREAM: Any = BaseChatModel._should_stream
#: the beta event protocol's drivers (langchain-core 1.8+), by name
_EVENT_STREAMS = ("_iter_v2_events", "_aiter_v2_events")
_install_lock = threading.Lock()
_installed = False
#: google-genai's embed_content is patched (only once the program imported google-genai)
_gemini_installed = False


async def original_agenerate(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None = None,
    run_manager: Any = None,
    **kwargs: Any,
) -> ChatResult:
    result: ChatResult = await _ORIGINAL_ASYNC(model, messages, stop=stop, run_manager=run_manager, **kwargs)
    return result


def original_generate(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None = None,
    run_manager: Any = None,
    **kwargs: Any,
) -> ChatResult:
    result: ChatResult = _ORIGINAL_SYNC(model, messages, stop=stop, run_manager=run_manager, **kwargs)
    return result


async def _agenerate_with_cache(
    self: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None = None,
    run_manager: Any = None,
    **kwargs: Any,
) -> ChatResult:
    ctx = ACTIVE.get()
    if ctx is None:
        return await original_agenerate(self, messages, stop, run_manager, **kwargs)
    return await ctx.manager.generate(self, messages, stop, run_manager, kwargs, ctx.item_idx)


def _refuse_on_job_loop(ctx: CallContext, what: str, instead: str) -> None:
    """A sync call made on the job's own loop would wait for that loop forever: refuse it."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is ctx.loop:
        raise RuntimeError(f"{what} on the event loop of a batchain job; use `{instead}` in async code")


def _generate_with_cache(
    self: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None = None,
    run_manager: Any = None,
    **kwargs: Any,
) -> ChatResult:
    ctx = ACTIVE.get()
    if ctx is None:
        result: ChatResult = _ORIGINAL_SYNC(self, messages, stop=stop, run_manager=run_manager, **kwargs)
        return result
    _refuse_on_job_loop(ctx, "a chat model was called synchronously (invoke)", "await model.ainvoke(...)")
    # a sync step running in an executor thread: hand the call to the job's loop and wait
    coro = ctx.manager.generate(self, messages, stop, run_manager, kwargs, ctx.item_idx, sync=True)
    return asyncio.run_coroutine_threadsafe(coro, ctx.loop).result()


def _should_stream(self: BaseChatModel, *, async_api: bool, run_manager: Any = None, **kwargs: Any) -> bool:
    if ACTIVE.get() is not None:
        return False  # inside a job: one call through the hook, its answer one chunk
    found: bool = _ORIGINAL_SHOULD_STREAM(self, async_api=async_api, run_manager=run_manager, **kwargs)
    return found


def _refuse_event_stream(original: Any) -> Any:
    def events(self: BaseChatModel, *args: Any, **kwargs: Any) -> Any:
        if ACTIVE.get() is not None:
            raise StreamedCallRefused(
                f"{type(self).__name__}.stream_events(version='v3') inside a batchain job would "
                "stream from the provider past batchain (unpriced, outside the budget): call the "
                "model with ainvoke(), invoke(), astream() or stream() instead"
            )
        return original(self, *args, **kwargs)

    return events


def _embeddings_call(original: Any, *, is_async: bool, respond: Respond, what: str) -> Any:
    """An SDK's embeddings method (``original``), handed to the job's call manager inside a
    job; ``respond`` turns the answer into what the SDK returns, ``what`` names the model in
    the refusal of a sync call on the job's loop."""
    if is_async:

        async def acall(self: Any, **params: Any) -> Any:
            ctx = ACTIVE.get()
            if ctx is None:
                return await original(self, **params)
            return respond(await ctx.manager.embed(self, params, ctx.item_idx), params)

        return acall

    def call(self: Any, **params: Any) -> Any:
        ctx = ACTIVE.get()
        if ctx is None:
            return original(self, **params)
        _refuse_on_job_loop(ctx, f"{what} was called synchronously", "await embeddings.aembed_documents(...)")
        coro = ctx.manager.embed(self, params, ctx.item_idx, sync=True)
        return respond(asyncio.run_coroutine_threadsafe(coro, ctx.loop).result(), params)

    return call


#: an embeddings answer (and the call's parameters) as the SDK's own method returns it
Respond = Callable[[dict[str, Any], dict[str, Any]], Any]


def _embedding_response(data: dict[str, Any], params: dict[str, Any]) -> Any:
    """What the SDK's ``create`` returns for this answer (vectors decoded as it would)."""
    from openai.types import CreateEmbeddingResponse

    from batchain.providers.embeddings import decoded

    if "encoding_format" not in params:
        data = decoded(data)
    return CreateEmbeddingResponse.construct(**data)


def _embed_content_response(data: dict[str, Any], params: dict[str, Any]) -> Any:
    """What the SDK's ``embed_content`` returns for this answer (read by its own converter)."""
    from google.genai import models, types

    converted = models._EmbedContentResponse_from_mldev(data, None, None)
    return types.EmbedContentResponse._from_response(response=converted, kwargs={})


def _install_gemini_embeddings() -> None:
    """Patch google-genai's ``embed_content`` if the program has imported google-genai.

    Importing it costs most of a second, a large part of a short job's client time, and no
    one can call it without importing it first: a job started after the import patches it
    (see :func:`install`)."""
    global _gemini_installed
    if _gemini_installed or "google.genai" not in sys.modules:
        return
    _gemini_installed = True
    try:
        from google.genai.models import AsyncModels, Models
    except ImportError:  # pragma: no cover - a broken google-genai install
        return
    for cls, is_async in ((AsyncModels, True), (Models, False)):
        call = _embeddings_call(
            cls.embed_content,
            is_async=is_async,
            respond=_embed_content_response,
            what="a Gemini embeddings model",
        )
        setattr(cls, "embed_content", call)  # noqa: B010


def _install_embeddings() -> None:
    try:
        from openai.resources.embeddings import AsyncEmbeddings, Embeddings
    except ImportError:  # pragma: no cover - the openai SDK is not installed
        return
    for cls, is_async in ((AsyncEmbeddings, True), (Embeddings, False)):
        call = _embeddings_call(
            cls.create, is_async=is_async, respond=_embedding_response, what="an embeddings model"
        )
        setattr(cls, "create", call)  # noqa: B010


def install() -> None:
    """Patch the model boundary once per process (idempotent; called by every job, which
    also patches an SDK imported since the last one)."""
    global _installed
    with _install_lock:
        _install_gemini_embeddings()
        if _installed:
            return
        # replacing methods of a library class is the hook itself, hence setattr
        setattr(BaseChatModel, "_agenerate_with_cache", _agenerate_with_cache)  # noqa: B010
        setattr(BaseChatModel, "_generate_with_cache", _generate_with_cache)  # noqa: B010
        setattr(BaseChatModel, "_should_stream", _should_stream)  # noqa: B010
        for name in _EVENT_STREAMS:
            original = getattr(BaseChatModel, name, None)
            if original is not None:
                setattr(BaseChatModel, name, _refuse_event_stream(original))
        _install_embeddings()
        _installed = True
