"""Which provider adapter serves which chat-model class.

A model's adapter is the one registered for the nearest class in its MRO, so an adapter
registered for ``BaseChatOpenAI`` serves ``ChatOpenAI`` and ``AzureChatOpenAI`` too, and
one registered for a subclass takes precedence for that subclass. The built-in adapters
(OpenAI, Anthropic, the in-process fake) are registered lazily: their packages are
imported only when a model whose class comes from that package is looked up.

A new provider is one class implementing :class:`~batchain.providers.base.ProviderAdapter`
(its :meth:`~batchain.providers.base.ProviderAdapter.batch_api` returning a
:class:`~batchain.providers.base.BatchAPI` for batch mode, None for realtime only), and
one call::

    batchain.register_adapter(ChatMyProvider, MyProviderAdapter())
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel

from batchain.providers.base import BatchAPI, ProviderAdapter

if TYPE_CHECKING:
    from batchain.providers.anthropic import AnthropicAdapter, AnthropicBatchAPI
    from batchain.providers.base import BatchEndpoints
    from batchain.providers.embeddings import OpenAIEmbeddingsAdapter
    from batchain.providers.fake import FakeAdapter, FakeBatchAPI
    from batchain.providers.gemini import GeminiAdapter, GeminiBatchAPI
    from batchain.providers.gemini_embeddings import GeminiEmbeddingsAdapter, GeminiEmbeddingsBatchAPI
    from batchain.providers.generic import GenericAdapter
    from batchain.providers.openai import OpenAIAdapter, OpenAIBatchAPI

    def _implement_the_protocols(
        a: OpenAIAdapter,
        b: AnthropicAdapter,
        c: FakeAdapter,
        d: GenericAdapter,
        e: OpenAIBatchAPI,
        f: AnthropicBatchAPI,
        g: FakeBatchAPI,
        h: GeminiAdapter,
        i: GeminiBatchAPI,
        j: OpenAIEmbeddingsAdapter,
        k: GeminiEmbeddingsAdapter,
        m: GeminiEmbeddingsBatchAPI,
    ) -> tuple[list[ProviderAdapter], list[BatchAPI], list[BatchEndpoints]]:
        """Never called: mypy checks here that every built-in implements the Protocols."""
        return [a, b, c, d, h, j, k], [e, f, g, i, m], [a, b, h, j, k]


__all__ = ["adapter_for", "register_adapter", "registered", "unregister_adapter"]

#: what the engine calls on an adapter (see :class:`ProviderAdapter`)
_MEMBERS = (
    "name",
    "batchable",
    "build",
    "client",
    "job_client",
    "send",
    "parse",
    "usage",
    "classify",
    "rate_info",
    "batch_api",
)

#: built-in adapters, registered the first time a model from their package is looked up:
#: (package of the model class, module and name of the class, module and name of the adapter)
_BUILTIN: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "langchain_openai",
        "langchain_openai.chat_models.base",
        "BaseChatOpenAI",
        "batchain.providers.openai",
        "OpenAIAdapter",
    ),
    (
        "langchain_anthropic",
        "langchain_anthropic",
        "ChatAnthropic",
        "batchain.providers.anthropic",
        "AnthropicAdapter",
    ),
    (
        "langchain_google_genai",
        "langchain_google_genai.chat_models",
        "ChatGoogleGenerativeAI",
        "batchain.providers.gemini",
        "GeminiAdapter",
    ),
    ("batchain", "batchain.providers.fake", "FakeChatModel", "batchain.providers.fake", "FakeAdapter"),
)

_lock = threading.RLock()
_registered: dict[type, ProviderAdapter] = {}
#: adapter (or None) by the exact model class, cleared on every registration
_cache: dict[type, ProviderAdapter | None] = {}
#: packages whose built-in adapters were registered (or found missing)
_loaded: set[str] = set()


def register_adapter(model_class: type[BaseChatModel], adapter: ProviderAdapter) -> None:
    """Run calls of ``model_class`` (and its subclasses) through ``adapter``.

    Replaces any adapter registered for exactly that class, built-in ones included. The
    adapter must implement :class:`~batchain.providers.base.ProviderAdapter`.
    """
    if not (isinstance(model_class, type) and issubclass(model_class, BaseChatModel)):
        raise TypeError(f"register_adapter: {model_class!r} is not a BaseChatModel subclass")
    missing = [m for m in _MEMBERS if not hasattr(adapter, m)]
    if missing:
        raise TypeError(
            f"register_adapter: {type(adapter).__name__} does not implement ProviderAdapter "
            f"(missing: {', '.join(missing)})"
        )
    with _lock:
        _load_builtins(model_class)  # a built-in loaded later must not replace this one
        _registered[model_class] = adapter
        _cache.clear()


def unregister_adapter(model_class: type[BaseChatModel]) -> ProviderAdapter | None:
    """Forget the adapter registered for exactly ``model_class``; returns it (or None)."""
    with _lock:
        _cache.clear()
        return _registered.pop(model_class, None)


def registered() -> dict[type, ProviderAdapter]:
    """A copy of the registrations made so far (built-ins appear once loaded)."""
    with _lock:
        return dict(_registered)


def adapter_for(model: BaseChatModel) -> ProviderAdapter | None:
    """The adapter for this model's class, or None when batchain has none."""
    cls = type(model)
    try:
        return _cache[cls]
    except KeyError:
        pass
    with _lock:
        _load_builtins(cls)
        found = next((_registered[c] for c in cls.__mro__ if c in _registered), None)
        _cache[cls] = found
    return found


def _load_builtins(cls: type) -> None:
    """Register the built-in adapters for the packages ``cls`` and its bases come from."""
    packages = {c.__module__.partition(".")[0] for c in cls.__mro__}
    for package, module, name, adapter_module, adapter_name in _BUILTIN:
        if package not in packages or module in _loaded:
            continue
        _loaded.add(module)
        try:
            model_class: Any = getattr(importlib.import_module(module), name)
        except ImportError:  # pragma: no cover - optional provider package missing
            continue
        adapter = getattr(importlib.import_module(adapter_module), adapter_name)()
        _registered.setdefault(model_class, adapter)
