"""Provider adapters: build, send, parse and classify model calls per provider.

The seam is declared once in :mod:`batchain.providers.base` (:class:`ProviderAdapter` and
its :class:`BatchAPI`); :mod:`batchain.providers.registry` maps chat-model classes to
adapters.
"""

from __future__ import annotations

from batchain.providers.base import (
    BatchAPI,
    BatchIntent,
    CallRequest,
    Failure,
    FailureKind,
    Identification,
    ProviderAdapter,
    ProviderBatch,
    RateInfo,
    Sent,
    Unsupported,
)
from batchain.providers.registry import adapter_for, register_adapter, unregister_adapter

__all__ = [
    "BatchAPI",
    "BatchIntent",
    "CallRequest",
    "Failure",
    "FailureKind",
    "Identification",
    "ProviderAdapter",
    "ProviderBatch",
    "RateInfo",
    "Sent",
    "Unsupported",
    "adapter_for",
    "register_adapter",
    "unregister_adapter",
]
