"""OpenAI Flex processing: which requests are served at flex, and how flex says no.

A realtime OpenAI request (chat completions or Responses) with ``service_tier: "flex"``
for a model that offers flex is served at flex: its own latency (``flex_latency_ms``,
slower than realtime), ``service_tier: "flex"`` in the response, a ``flex`` tier in the
ledger (priced at Batch API rates), and now and then (``flex_unavailable_rate``) a 429
"Resource Unavailable", which is never billed and is not a rate limit: it consumes no
rate-limit quota and is counted apart (the ledger's ``unavailable`` counter).

Which models offer flex is one knob, ``flex_models``: comma-separated ``fnmatch``
patterns (default: o3, o4-mini and the gpt-5 / gpt-6 families, as OpenAI's pricing page
lists flex prices; ``"*"`` offers it everywhere). A request asking flex of another
model gets a 400 naming ``service_tier`` (OpenAI does not fall back to standard).

``service_tier`` is left out of the request hash (see :mod:`~batchain.sandbox.ledger`),
so a request answers the same at every tier and a request billed at flex and again at
standard shows up in :meth:`~batchain.sandbox.ledger.Ledger.duplicates`.

Wire facts (https://platform.openai.com/docs/guides/flex-processing): flex is asked for
with ``service_tier="flex"``; when capacity is short the answer is HTTP 429 "Resource
Unavailable" and nothing is charged. OpenAI does not document the error body's
``code``; the sandbox answers ``resource_unavailable``, in OpenAI's error envelope.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.errors import ApiError

__all__ = ["SERVICE_TIERS", "offers_flex", "requested_flex", "unavailable_error"]

#: the values OpenAI's ``service_tier`` request parameter takes
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")


def offers_flex(config: SandboxConfig, model: str) -> bool:
    """Does ``model`` offer flex processing, by the ``flex_models`` knob?"""
    patterns = (p.strip() for p in config.flex_models.split(","))
    return any(p and fnmatch.fnmatchcase(model, p) for p in patterns)


def requested_flex(config: SandboxConfig, body: dict[str, Any], model: str) -> bool:
    """Is this request to be served at flex? Raises the 400 OpenAI gives for a
    ``service_tier`` it does not take, or flex asked of a model without it."""
    tier = body.get("service_tier")
    if tier is None:
        return False
    if tier not in SERVICE_TIERS:
        allowed = ", ".join(f"'{t}'" for t in SERVICE_TIERS)
        raise ApiError(
            400,
            f"Invalid value: '{tier}'. Supported values are: {allowed}.",
            param="service_tier",
            code="invalid_value",
        )
    if tier != "flex":
        return False
    if not offers_flex(config, model):
        raise ApiError(
            400,
            f"Flex processing is not available for model '{model}'. Use service_tier 'auto' or "
            "'default', or a model that supports flex processing.",
            param="service_tier",
            code="invalid_value",
        )
    return True


def unavailable_error() -> ApiError:
    """The 429 of a flex request refused for lack of capacity (not billed, not a rate limit)."""
    return ApiError(
        429,
        "Resource Unavailable: there is not enough flex capacity to serve this request right now. "
        "Please retry later, or send it with service_tier 'auto' or 'default'.",
        code="resource_unavailable",
        type="resource_unavailable",
    )
