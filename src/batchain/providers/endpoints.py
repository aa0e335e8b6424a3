"""Which endpoints have a Batch API, and so which models' calls batch mode may park.

An adapter speaks a protocol (OpenAI's, Anthropic's), but a model may send it to any server
that speaks it: Gemini, Groq, vLLM and a hundred others answer OpenAI's chat completions,
and few of them have its ``/v1/files`` and ``/v1/batches``. A call parked for such an
endpoint can only fail, after the same items' other calls were billed. So batch mode sends a
model's calls to a Batch API only where one exists:

1. the user's choice for the model, its base URL or its host (``endpoint_modes``, the CLI's
   ``--endpoint-mode``), ``"batch"`` or ``"realtime"``, wins;
2. a host in :data:`BATCH_API_HOSTS` has one;
3. any other endpoint is asked once per process: one listing of its batches (the adapter's
   :meth:`~batchain.providers.base.BatchEndpoints.probe_batch_api`, no cost). A 404 or 405
   means it has none; any other answer that it has (a wrong key or a flaky server then
   shows up where it would anyway: on the first upload).

An adapter without :class:`~batchain.providers.base.BatchEndpoints` (the in-process fake, a
third-party adapter) is taken at its word: ``batchable`` says it all.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from langchain_core.language_models import BaseChatModel

from batchain.providers.base import BatchEndpoints, ProviderAdapter

__all__ = [
    "BATCH_API_HOSTS",
    "ENDPOINT_MODES",
    "EndpointSupport",
    "batch_support",
    "model_label",
    "model_name",
]

#: hosts known to serve each adapter's Batch API, by adapter name (docs/providers.md)
BATCH_API_HOSTS: dict[str, tuple[str, ...]] = {
    "openai": (
        "api.openai.com",
        "*.openai.azure.com",  # Azure OpenAI
        "*.cognitiveservices.azure.com",  # Azure AI Foundry resources
        "*.services.ai.azure.com",
    ),
    "anthropic": ("api.anthropic.com",),
    "gemini": ("generativelanguage.googleapis.com",),  # the Developer API's own (not /openai/)
}

#: the values of an ``endpoint_modes`` entry
ENDPOINT_MODES = ("batch", "realtime")

_lock = threading.Lock()
#: probe results by (adapter name, base URL), for the life of the process
_probed: dict[tuple[str, str], bool] = {}


@dataclass(frozen=True, slots=True)
class EndpointSupport:
    """Can this model's calls go through its provider's Batch API, and why (or why not)."""

    batch: bool
    #: where the model's calls go (None: no network endpoint, e.g. the fake provider)
    base_url: str | None
    #: one phrase: "known host", "a batch listing there did not answer 404", "endpoint_modes", or why not
    why: str
    #: the user chose realtime for it (``endpoint_modes``): no refusal, only a note
    chosen: bool = False

    def refused(self, *, batch_only: bool) -> bool:
        """Is a batch-mode job that holds this model refused? Not when its calls can be
        parked, or the user chose realtime for it; an endpoint without a Batch API only
        when the user asked for batch only (else its calls run realtime, noted); no
        adapter, or an API the Batch API does not take, always (unless the caller lets
        such models run realtime: ``fallback``)."""
        if self.batch or self.chosen:
            return False
        return batch_only or self.base_url is None


def model_name(model: Any, fallback: str = "") -> str:
    """The model name a LangChain model is set to (``model_name`` or ``model``), else
    ``fallback``."""
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    return name if isinstance(name, str) and name else fallback


def model_label(model: Any, fallback: str = "") -> str:
    """``Class(model name)``; ``fallback`` names a model object without a name of its own
    (an SDK resource making embeddings calls)."""
    return f"{type(model).__name__}({model_name(model, fallback)})"


def batch_support(
    adapter: ProviderAdapter, model: BaseChatModel, modes: Mapping[str, str] | None = None
) -> EndpointSupport:
    """May ``model``'s calls through ``adapter`` be parked in its provider's Batch API?"""
    if not adapter.batchable:
        return EndpointSupport(False, None, "batchain has no Batch API adapter for it")
    if not isinstance(adapter, BatchEndpoints):
        return EndpointSupport(True, None, "its adapter has a Batch API")
    base = adapter.endpoint(model).rstrip("/")
    refusal = adapter.batch_refusal(model)
    if refusal is not None:
        return EndpointSupport(False, None, refusal)
    chosen = _chosen(model, base, modes or {})
    if chosen is not None:
        return EndpointSupport(chosen == "batch", base, "endpoint_modes", chosen=chosen == "realtime")
    host = (urlsplit(base).hostname or "").lower()
    if any(fnmatch.fnmatchcase(host, pattern) for pattern in BATCH_API_HOSTS.get(adapter.name, ())):
        return EndpointSupport(True, base, "known host")
    if _probe(adapter, model, base):
        return EndpointSupport(True, base, "a batch listing there did not answer 404")
    return EndpointSupport(False, base, "its endpoint has no Batch API: a batch listing there answered 404")


def _chosen(model: BaseChatModel, base: str, modes: Mapping[str, str]) -> str | None:
    """The user's choice for this model: by model name, then base URL, then host."""
    if not modes:
        return None
    m: Any = model
    name = str(getattr(m, "model_name", None) or getattr(m, "model", None) or "")
    host = (urlsplit(base).hostname or "").lower()
    for key in (name, base):
        if key in modes:
            return modes[key]
    hosts = {k.lower(): v for k, v in modes.items() if "/" not in k}
    return hosts.get(host)


def _probe(adapter: BatchEndpoints, model: BaseChatModel, base: str) -> bool:
    key = (type(adapter).__name__, base)
    with _lock:
        if key in _probed:
            return _probed[key]
    found = adapter.probe_batch_api(model)
    with _lock:
        _probed[key] = found
    return found


def forget_probes() -> None:
    """Ask every endpoint again (tests; a server that gained a Batch API)."""
    with _lock:
        _probed.clear()
