"""The billing ledger: one entry per request that produced a successful response.

Billing rules
-------------
* A request is billed (one :class:`LedgerEntry`) when it produced a successful
  response: a realtime 200 that was actually delivered (a client that disconnects
  during the simulated latency is not billed), or a ``succeeded`` / 200 batch item.
  Errors (4xx, 5xx, 429), cancelled, expired and dropped batch items are not billed.
* ``tier`` is ``realtime``, ``batch`` or ``flex`` (an OpenAI realtime request served
  at flex processing, priced at Batch API rates; see :mod:`~batchain.sandbox.flex`).
  A flex request refused with 429 "Resource Unavailable" is not billed; it is counted
  as ``unavailable`` (not as ``rate_limited``).
* ``input_tokens`` is the TOTAL prompt tokens including cached ones, for every
  provider (Gemini's ``promptTokenCount``).  OpenAI's wire ``prompt_tokens`` already includes
  ``cached_tokens``; Anthropic's wire ``input_tokens`` excludes cache reads and
  writes, so the ledger stores ``input_tokens + cache_read + cache_creation`` and
  puts the reads in ``cached_tokens`` and the writes in ``cache_creation_tokens`` (of
  which ``cache_write_1h_tokens`` were written with the 1-hour TTL).

Request hash
------------
``request_hash`` is the sha256 hex digest of the canonical JSON of the request body
with the top-level keys ``stream``, ``stream_options`` and ``service_tier`` removed (how
an answer is delivered or which tier serves it, never what the model is asked)::

    json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

A realtime body and the identical body inside a batch line (``body`` for OpenAI,
``params`` for Anthropic) hash the same, so clients can detect double billing; so do a
request served at flex and the same request served at the standard tier.
Prompt-cache markers change the price of a request, never what the model is asked, so
they do not change its hash: every ``cache_control`` key is removed first, and then a
top-level ``system`` given as one plain text block (``[{"type": "text", "text": t}]``)
hashes as ``t``, the string form it is equivalent to.
Gemini's model is in the URL, not the body: its requests are hashed with
``"model": "models/<id>"`` added (realtime and batch alike), and its ledger ``model``
is the bare ``<id>``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "Ledger",
    "LedgerEntry",
    "Provider",
    "Tier",
    "cache_neutral",
    "canonical_json",
    "request_hash",
]

Provider = Literal["openai", "anthropic", "gemini"]
Tier = Literal["realtime", "batch", "flex"]

_EXCLUDED_KEYS = ("stream", "stream_options", "service_tier")
_COUNTERS = (
    "requests",
    "input_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "output_tokens",
    "rate_limited",
    "unavailable",
)


def canonical_json(body: dict[str, Any]) -> str:
    """The canonical JSON used for hashing (``stream``, ``stream_options`` and
    ``service_tier`` removed)."""
    if any(k in body for k in _EXCLUDED_KEYS):
        body = {k: v for k, v in body.items() if k not in _EXCLUDED_KEYS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(body: dict[str, Any]) -> str:
    canonical = canonical_json(body)
    neutral = cache_neutral(body, canonical)
    if neutral is not body:
        canonical = canonical_json(neutral)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def cache_neutral(body: dict[str, Any], canonical: str | None = None) -> dict[str, Any]:
    """``body`` without prompt-cache markers (see "Request hash" above); ``canonical``:
    its :func:`canonical_json`, when the caller has it."""
    text = canonical_json(body) if canonical is None else canonical
    if '"cache_control"' not in text and not isinstance(body.get("system"), list):
        return body
    out: dict[str, Any] = _strip(body)
    system = out.get("system")
    if isinstance(system, list) and len(system) == 1 and isinstance(system[0], dict):
        block = system[0]
        if set(block) == {"type", "text"} and block["type"] == "text" and isinstance(block["text"], str):
            out["system"] = block["text"]
    return out


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    ts: float
    provider: Provider
    model: str
    tier: Tier
    input_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    output_tokens: int
    request_hash: str
    batch_id: str | None = None
    custom_id: str | None = None
    #: the part of ``cache_creation_tokens`` written with the 1-hour TTL (Anthropic
    #: ``cache_control: {"ttl": "1h"}``); the rest are 5-minute writes
    cache_write_1h_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerEntry:
        return cls(**data)


class Ledger:
    """Thread-safe: the server appends on its loop thread while tests read elsewhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        self._rate_limited: Counter[tuple[str, str, str]] = Counter()
        self._unavailable: Counter[tuple[str, str, str]] = Counter()

    def add(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def note_rate_limited(self, provider: Provider, model: str, tier: Tier = "realtime") -> None:
        """Count one 429 (not billed) so benchmarks can report rate-limit pressure."""
        with self._lock:
            self._rate_limited[(provider, model, tier)] += 1

    def note_unavailable(self, provider: Provider, model: str, tier: Tier = "flex") -> None:
        """Count one flex request refused for lack of capacity (429, not billed)."""
        with self._lock:
            self._unavailable[(provider, model, tier)] += 1

    def entries(self) -> list[LedgerEntry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._rate_limited.clear()
            self._unavailable.clear()

    def summary(self) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
        """``summary[provider][model][tier]`` -> counters.

        Counters: ``requests``, ``input_tokens`` (total, cached included),
        ``cached_tokens``, ``cache_creation_tokens``, ``output_tokens``,
        ``rate_limited`` (429s returned, not billed) and ``unavailable`` (flex requests
        refused with 429 Resource Unavailable, not billed).
        """
        with self._lock:
            entries = list(self._entries)
            limited = dict(self._rate_limited)
            unavailable = dict(self._unavailable)
        result: dict[str, dict[str, dict[str, dict[str, int]]]] = {}

        def bucket(provider: str, model: str, tier: str) -> dict[str, int]:
            tiers = result.setdefault(provider, {}).setdefault(model, {})
            return tiers.setdefault(tier, dict.fromkeys(_COUNTERS, 0))

        for e in entries:
            counters = bucket(e.provider, e.model, e.tier)
            counters["requests"] += 1
            counters["input_tokens"] += e.input_tokens
            counters["cached_tokens"] += e.cached_tokens
            counters["cache_creation_tokens"] += e.cache_creation_tokens
            counters["output_tokens"] += e.output_tokens
        for (provider, model, tier), count in limited.items():
            bucket(provider, model, tier)["rate_limited"] += count
        for (provider, model, tier), count in unavailable.items():
            bucket(provider, model, tier)["unavailable"] += count
        return result

    def duplicates(self) -> dict[str, int]:
        """Request hashes billed more than once, with their counts."""
        with self._lock:
            counts = Counter(e.request_hash for e in self._entries)
        return {digest: n for digest, n in counts.items() if n > 1}
