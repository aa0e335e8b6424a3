"""Sandbox knobs: one dataclass, runtime merging, and per-request overrides.

Every knob has a safe default (no latency, no limits, no faults), so a bare
``SandboxConfig()`` behaves like a fast, well-behaved provider.

Knobs can be changed three ways:

* at construction: ``SandboxConfig(latency_ms=50)``;
* at runtime: ``Sandbox.configure(...)`` / ``POST /_sandbox/config`` (merged);
* per request: a header ``x-sandbox-<knob-with-dashes>: <value>`` applies to that
  request only (e.g. ``x-sandbox-latency-ms: 200``).  On a batch-create request the
  batch knobs apply to that batch only.  Server-wide knobs (limits, seed, batch size
  and queue limits) cannot be overridden per request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "REQUEST_SCOPED_KNOBS",
    "ConfigError",
    "SandboxConfig",
    "header_overrides",
]


class ConfigError(ValueError):
    """A knob name or value is invalid."""


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """All sandbox knobs.  Immutable: changes produce a new instance via :meth:`merged`."""

    # -- realtime ------------------------------------------------------------------------
    latency_ms: float = 0.0  # response latency; a client disconnecting during it is not billed
    latency_jitter_ms: float = 0.0  # uniform +/- jitter added to latency_ms
    rpm: int | None = None  # requests/min per (provider, model); real 429s + headers
    tpm: int | None = None  # tokens/min per (provider, model): prompt + completion tokens
    error_rate: float = 0.0  # random 500s (OpenAI server_error, Anthropic api_error)
    overloaded_rate: float = 0.0  # random OpenAI/Gemini 503, Anthropic 529 overloaded_error
    server_retry_after_s: float = 0.0  # > 0: server errors (500, 503, 529) send Retry-After
    # -- OpenAI flex processing (``service_tier: "flex"``; see sandbox/flex.py) ----------
    flex_latency_ms: float = 1500.0  # a flex answer's latency (instead of latency_ms): slower
    flex_latency_jitter_ms: float = 500.0  # uniform +/- jitter added to flex_latency_ms
    flex_unavailable_rate: float = 0.0  # flex requests refused with 429 Resource Unavailable
    # comma-separated model name patterns (fnmatch) that offer flex; "*": every model
    flex_models: str = "o3,o3-20*,o4-mini,o4-mini-20*,gpt-5*,gpt-6*"
    # -- batches -------------------------------------------------------------------------
    batch_validating_s: float = 0.05  # OpenAI `validating` (Anthropic: start delay)
    batch_processing_s: float = 0.5  # whole-batch processing; items finish progressively
    batch_finalizing_s: float = 0.05  # OpenAI `finalizing` (Anthropic: end delay)
    cancel_delay_s: float = 0.05  # `cancelling` / `canceling` before the batch ends
    upload_latency_ms: float = 0.0  # OpenAI file upload / Anthropic batch create: taking the input
    batch_item_error_rate: float = 0.0  # items failing with a server error (500 / api_error)
    batch_expire_after_fraction: float | None = None  # expire after this fraction finished
    batch_drop_rate: float = 0.0  # items silently missing from the results
    batch_fail_validation: bool = False  # OpenAI/Gemini batch -> failed; Anthropic create -> 400
    batch_create_429: int = 0  # the next N batch-create calls get a 429
    shuffle_results: bool = True  # result lines not in input order
    openai_max_batch_requests: int = 50_000  # more lines -> failed with too_many_tasks
    anthropic_max_batch_requests: int = 100_000  # more requests -> 400 at create
    openai_max_batch_bytes: int = 200 * 1024 * 1024  # larger batch input file -> 400 at upload
    anthropic_max_batch_bytes: int = 256 * 1024 * 1024  # larger create body -> 413 at create
    # per model: input tokens of its batches validated and not yet ended; a batch that would
    # pass it fails validation with token_limit_exceeded (None: no limit)
    openai_enqueued_token_limit: int | None = None
    # requests of batches not yet ended; a create that would pass it -> 429 (None: no limit)
    anthropic_queue_limit: int | None = None
    # -- both ----------------------------------------------------------------------------
    simulate_prompt_cache: bool = True  # cached_tokens / cache_read / cache_creation
    seed: int = 0  # seeds every random fault decision, for reproducible runs

    def __post_init__(self) -> None:
        for name in (
            "error_rate",
            "overloaded_rate",
            "flex_unavailable_rate",
            "batch_item_error_rate",
            "batch_drop_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be within [0, 1], got {value!r}")
        fraction = self.batch_expire_after_fraction
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"batch_expire_after_fraction must be within [0, 1], got {fraction!r}")
        for name in ("rpm", "tpm"):
            limit = getattr(self, name)
            if limit is not None and limit <= 0:
                raise ConfigError(f"{name} must be positive or None, got {limit!r}")
        for name in (
            "latency_ms",
            "latency_jitter_ms",
            "flex_latency_ms",
            "flex_latency_jitter_ms",
            "batch_validating_s",
            "batch_processing_s",
            "batch_finalizing_s",
            "cancel_delay_s",
            "upload_latency_ms",
            "batch_create_429",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        for name in (
            "openai_max_batch_requests",
            "anthropic_max_batch_requests",
            "openai_max_batch_bytes",
            "anthropic_max_batch_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("openai_enqueued_token_limit", "anthropic_queue_limit"):
            limit = getattr(self, name)
            if limit is not None and limit < 1:
                raise ConfigError(f"{name} must be at least 1 or None, got {limit!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def merged(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """A copy with ``changes`` applied; values are coerced and validated."""
        if not changes:
            return self
        coerced = {name: _coerce(name, value) for name, value in changes.items()}
        return dataclasses.replace(self, **coerced)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxConfig:
        return cls().merged(data)


# Knobs a single request may override with an ``x-sandbox-*`` header.
REQUEST_SCOPED_KNOBS: frozenset[str] = frozenset(
    {
        "latency_ms",
        "latency_jitter_ms",
        "error_rate",
        "overloaded_rate",
        "flex_latency_ms",
        "flex_latency_jitter_ms",
        "flex_unavailable_rate",
        "flex_models",
        "batch_validating_s",
        "batch_processing_s",
        "batch_finalizing_s",
        "cancel_delay_s",
        "batch_item_error_rate",
        "batch_expire_after_fraction",
        "batch_drop_rate",
        "batch_fail_validation",
        "shuffle_results",
        "simulate_prompt_cache",
    }
)

_HEADER_PREFIX = b"x-sandbox-"

_KNOB_TYPES: dict[str, str] = {f.name: str(f.type) for f in fields(SandboxConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Coerce a JSON or header value to the knob's declared type."""
    kind = _KNOB_TYPES.get(name)
    if kind is None:
        raise ConfigError(f"unknown sandbox knob {name!r}")
    optional = kind.endswith("| None")
    if value is None or (optional and isinstance(value, str) and value.lower() in ("", "none", "null")):
        if optional:
            return None
        raise ConfigError(f"knob {name!r} cannot be null")
    base = kind.removesuffix(" | None")
    try:
        if base == "bool":
            return _to_bool(value)
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if base == "str":
            if not isinstance(value, str):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"invalid value {value!r} for knob {name!r} ({base})") from None
    raise ConfigError(f"knob {name!r} has unsupported type {kind}")  # pragma: no cover


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def header_overrides(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, Any]:
    """Knob overrides from ``x-sandbox-*`` request headers (raw ASGI header pairs).

    Raises :class:`ConfigError` for unknown or server-wide knobs, so a typo in a test
    fails loudly instead of being ignored.
    """
    overrides: dict[str, Any] = {}
    for key, value in raw_headers:
        if not key.startswith(_HEADER_PREFIX):
            continue
        name = key[len(_HEADER_PREFIX) :].decode("latin-1").replace("-", "_")
        if name not in REQUEST_SCOPED_KNOBS:
            raise ConfigError(f"knob {name!r} cannot be overridden per request")
        overrides[name] = _coerce(name, value.decode("latin-1"))
    return overrides
