"""Provider adapters: build, send, parse and classify model calls per provider."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from batchain.providers.base import (
    CallRequest,
    Failure,
    FailureKind,
    ProviderAdapter,
    RateInfo,
    Sent,
)

__all__ = [
    "CallRequest",
    "Failure",
    "FailureKind",
    "ProviderAdapter",
    "RateInfo",
    "Sent",
    "adapter_for",
]

_cache: dict[type, ProviderAdapter | None] = {}


def adapter_for(model: BaseChatModel) -> ProviderAdapter | None:
    """The adapter for this model's class, or None when batchain has none."""
    cls = type(model)
    if cls in _cache:
        return _cache[cls]
    found: ProviderAdapter | None = None
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI

        if issubclass(cls, BaseChatOpenAI):
            from batchain.providers.openai import OpenAIAdapter

            found = OpenAIAdapter()
    except ImportError:  # pragma: no cover - optional provider package missing
        pass
    if found is None:
        try:
            from langchain_anthropic import ChatAnthropic

            if issubclass(cls, ChatAnthropic):
                from batchain.providers.anthropic import AnthropicAdapter

                found = AnthropicAdapter()
        except ImportError:  # pragma: no cover
            pass
    _cache[cls] = found
    return found
