"""Raw catalog rates, read straight from the genai-prices snapshot (no batchain code).

Tests compute expected costs from these numbers by hand, so they check batchain's pricing
against the catalog rather than against itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from genai_prices import data_snapshot

M = Decimal(1_000_000)


def _model(provider: str, model: str):  # type: ignore[no-untyped-def]
    _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    return info


def standard(provider: str, model: str) -> dict[str, Decimal]:
    """The catalog's standard (realtime list) prices, USD per million tokens."""
    prices = _model(provider, model).get_prices(datetime.now(tz=UTC))
    return {k: v for k, v in prices.__dict__.items() if isinstance(v, Decimal)}


def variant(provider: str, model: str, key: str, value: str) -> dict[str, Decimal] | None:
    """The explicit prices of the catalog variant ``{key: value}`` (active now), or None."""
    now = datetime.now(tz=UTC)
    for v in _model(provider, model).price_variants or []:
        if v.when == {key: value} and (v.constraint is None or v.constraint.active(now)):
            return {k: p for k, p in v.prices.__dict__.items() if isinstance(p, Decimal)}
    return None


def batch(provider: str, model: str) -> dict[str, Decimal] | None:
    return variant(provider, model, "processing", "batch")
