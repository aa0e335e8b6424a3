"""Prices of model calls: the ``genai-prices`` catalog, provider rules that stack, user overrides.

Where the numbers come from
---------------------------
Every list price comes from the `genai-prices <https://github.com/pydantic/genai-prices>`_
catalog (``genai_prices.data_snapshot.get_snapshot()``: the snapshot bundled with the
installed package, or a fresher one if the application runs ``genai_prices.UpdatePrices``).
Nothing is hand-kept here. The catalog resolves model references itself, including dated
names (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``, ``claude-haiku-4-5-20251001`` ->
``claude-haiku-4-5``), compact dates and provider inference from the model name.

The catalog also carries *price variants* per model: ``{"processing": "batch"}`` (Batch API
rates), ``{"service_tier": "flex"}`` and ``{"service_tier": "priority"}`` (OpenAI service
tiers). An explicit variant price always wins. Only where the catalog has no price for a
(model, tier, token kind) does a documented provider rule below derive one, and the derived
rate says so in :attr:`PriceSheet.provenance`.

Provider rules (multipliers), applied only to fill gaps in the catalog
-----------------------------------------------------------------------
* :data:`OPENAI_BATCH_MULTIPLIER` = 0.5 - OpenAI Batch API: "50% cost discount" on input and
  output (https://platform.openai.com/docs/guides/batch; reference/peers.md section 2). When the
  model has no batch variant in the catalog at all, cached input in batch is also taken at
  0.5 x the cached price (the stacking rule: gpt-5 cached input in batch = 0.05 x base,
  peers.md section 2; LiteLLM's ``batch_cost_calculator`` fallback). When the catalog *has* a
  batch variant but it lists no cached-input rate (gpt-4o, gpt-4o-mini, gpt-4.1, o3, ...), the
  catalog's own rule is kept: "The Batch table publishes no cached-input rate, so cached input
  keeps the standard rate" (catalog ``price_comments`` for those models, verified against
  https://developers.openai.com/api/docs/pricing on 2026-10-14). For the gpt-4o family the
  standard cached rate equals the batch input rate (gpt-4o-mini: 0.075 both).
* :data:`OPENAI_FLEX_MULTIPLIER` = 0.5 - OpenAI Flex processing is "priced at Batch API rates"
  (https://platform.openai.com/docs/guides/flex-processing): a catalog flex variant wins;
  otherwise the model's batch rates (catalog batch variant, else 0.5 x standard) are used.
* OpenAI priority: only from the catalog's ``service_tier=priority`` variant. Without one the
  standard rate is used and a note says the cost is likely under-counted.
* :data:`ANTHROPIC_BATCH_MULTIPLIER` = 0.5 - Anthropic Message Batches: 50% of standard on
  *all* usage, including cache writes and cache reads (multipliers stack)
  (https://docs.anthropic.com/en/docs/build-with-claude/batch-processing#pricing, also the
  catalog's Anthropic provider ``price_comments``; peers.md section 2: read 0.05 x, 5-min write
  0.625 x, 1-h write 1.0 x base in batch).
* :data:`ANTHROPIC_CACHE_WRITE_5M_MULTIPLIER` = 1.25, :data:`ANTHROPIC_CACHE_WRITE_1H_MULTIPLIER`
  = 2.0, :data:`ANTHROPIC_CACHE_READ_MULTIPLIER` = 0.1 x base input - Anthropic prompt caching
  (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#pricing), used only when
  the catalog lacks explicit cache prices for a model.
* OpenAI (and any other provider) without a catalog cache price: cache writes are billed as
  ordinary input (OpenAI charged no write premium before GPT-5.6; where it does, the catalog
  lists ``cache_write_mtok``), and cache reads without a listed price are billed as input.
* Other providers in batch: 0.5 (Gemini Batch API is 50% off, peers.md section 2).

Token accounting
----------------
batchain's :class:`~batchain.store.records.Usage` counts ``input_tokens`` as the TOTAL prompt,
cache reads and cache writes included, for every provider (OpenAI's ``prompt_tokens`` already
include ``cached_tokens``; Anthropic's raw ``input_tokens`` exclude them and batchain adds them
back). So a call costs::

    (input - cache_read - cache_write) x input_rate + cache_read x cache_read_rate
    + cache_write_5m x write_5m_rate + cache_write_1h x write_1h_rate + output x output_rate

all per million tokens; reasoning tokens are already inside ``output_tokens``. Long-context
tiers (e.g. Claude Sonnet 4.5 above 200k prompt tokens) apply to every token of a request
whose total prompt exceeds the threshold, as in the catalog.

Overrides and additions
-----------------------
``PriceBook(overrides=...)`` takes a mapping, or a path to a ``.json``, ``.toml`` or
``.yaml``/``.yml`` file (YAML only if PyYAML is importable). ``$BATCHAIN_PRICES`` names such a
file for :func:`default_pricebook`. Format: model keys mapping to USD per **million** tokens::

    {
      "openai/gpt-4o-mini": {"input": 0.15, "output": 0.6, "cache_read": 0.075,
                             "batch": {"cache_read": 0.0375}},
      "anthropic/claude-haiku-4-5": {"input": "0.9"},
      "my-finetune": {"input": 1.0, "output": 2.0}
    }

* key: ``"provider/model"`` or just ``"model"`` (any provider); case-insensitive; a key without
  a date suffix also matches dated names (``gpt-4o-mini`` matches ``gpt-4o-mini-2024-07-18``).
* rates: ``input``, ``output``, ``cache_read`` (alias ``cached_input``), ``cache_write_5m``
  (alias ``cache_write``), ``cache_write_1h``; numbers or numeric strings; the catalog's own
  names (``input_mtok`` ...) are accepted too. An optional top-level ``"models"`` wrapper is
  accepted.
* sections ``batch``, ``flex``, ``priority``: explicit rates for that tier, used as given.
* An override merges over the catalog: keys it does not set keep the catalog's price. A base
  rate you override also re-derives that rate's tier prices by the provider rule (unless you
  set the tier rate too). A model the catalog does not know becomes known once it has at
  least an ``input`` rate.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import threading
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, Protocol

# every job prices its calls: load the bundled catalog (~20 ms) with the engine, not in the
# middle of a job's first collection
from genai_prices import data as _catalog  # noqa: F401
from genai_prices import data_snapshot
from genai_prices import types as gp

from batchain.errors import UnknownPriceWarning
from batchain.options import Tier
from batchain.store.records import Usage

__all__ = [
    "ANTHROPIC_BATCH_MULTIPLIER",
    "ANTHROPIC_CACHE_READ_MULTIPLIER",
    "ANTHROPIC_CACHE_WRITE_1H_MULTIPLIER",
    "ANTHROPIC_CACHE_WRITE_5M_MULTIPLIER",
    "DEFAULT_BATCH_MULTIPLIER",
    "OPENAI_BATCH_MULTIPLIER",
    "OPENAI_FLEX_MULTIPLIER",
    "Cost",
    "PriceBook",
    "PriceSheet",
    "Pricing",
    "Rate",
    "Rates",
    "UnknownPriceWarning",
    "cost_of",
    "default_pricebook",
    "list_price_of",
    "load_overrides",
    "normalize_service_tier",
    "parse_overrides",
    "price_usage",
    "response_pricing_facts",
]

log = logging.getLogger(__name__)

#: OpenAI Batch API: 50% off input and output (https://platform.openai.com/docs/guides/batch).
OPENAI_BATCH_MULTIPLIER = Decimal("0.5")
#: OpenAI Flex: "priced at Batch API rates" (https://platform.openai.com/docs/guides/flex-processing).
OPENAI_FLEX_MULTIPLIER = Decimal("0.5")
#: Anthropic Message Batches: 50% of standard on all usage incl. cache reads/writes
#: (https://docs.anthropic.com/en/docs/build-with-claude/batch-processing#pricing).
ANTHROPIC_BATCH_MULTIPLIER = Decimal("0.5")
#: Anthropic 5-minute cache write = 1.25 x base input
#: (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#pricing).
ANTHROPIC_CACHE_WRITE_5M_MULTIPLIER = Decimal("1.25")
#: Anthropic 1-hour cache write = 2 x base input (same page).
ANTHROPIC_CACHE_WRITE_1H_MULTIPLIER = Decimal("2")
#: Anthropic cache read = 0.1 x base input (same page).
ANTHROPIC_CACHE_READ_MULTIPLIER = Decimal("0.1")
#: Other providers' batch APIs (Gemini Batch API: 50% off; reference/peers.md section 2).
DEFAULT_BATCH_MULTIPLIER = Decimal("0.5")

PER_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)
_ONE = Decimal(1)

#: the token kinds priced separately, in display order
KINDS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")
Kind = Literal["input", "cache_read", "cache_write_5m", "cache_write_1h", "output"]
Mode = Literal["standard", "batch", "flex", "priority"]

#: catalog price keys -> our token kinds (cache_write_5m_mtok, if a model has it, beats cache_write_mtok)
_CATALOG_KEYS: dict[str, Kind] = {
    "input_mtok": "input",
    "cache_read_mtok": "cache_read",
    "cache_write_mtok": "cache_write_5m",
    "cache_write_5m_mtok": "cache_write_5m",
    "cache_write_1h_mtok": "cache_write_1h",
    "output_mtok": "output",
}
_OVERRIDE_ALIASES: dict[str, Kind] = {
    "input": "input",
    "input_mtok": "input",
    "output": "output",
    "output_mtok": "output",
    "cache_read": "cache_read",
    "cached_input": "cache_read",
    "cache_read_mtok": "cache_read",
    "cache_write": "cache_write_5m",
    "cache_write_5m": "cache_write_5m",
    "cache_write_mtok": "cache_write_5m",
    "cache_write_5m_mtok": "cache_write_5m",
    "cache_write_1h": "cache_write_1h",
    "cache_write_1h_mtok": "cache_write_1h",
}
_OVERRIDE_SECTIONS = ("batch", "flex", "priority")
#: batchain provider names -> catalog provider ids (None: infer from the model name)
_PROVIDER_IDS: dict[str, str | None] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "generic": None,
    "": None,
}
#: catalog price-variant conditions -> our price lists
_VARIANT_MODES: dict[tuple[tuple[str, str], ...], str] = {
    (("processing", "batch"),): "batch",
    (("service_tier", "flex"),): "flex",
    (("service_tier", "priority"),): "priority",
}
_DATE_SUFFIX = re.compile(r"-(?:20\d{2}-\d{2}-\d{2}|20\d{6})$")


# -- rates --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """One price in USD per million tokens, with optional long-context tiers.

    ``tiers`` are ``(start, price)`` pairs: a request whose total prompt exceeds ``start``
    tokens pays ``price`` for all its tokens of this kind (the catalog's "cliff" model).
    """

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...] = ()

    def at(self, prompt_tokens: int) -> Decimal:
        for start, price in reversed(self.tiers):
            if prompt_tokens > start:
                return price
        return self.base

    def scaled(self, factor: Decimal) -> Rate:
        return Rate(self.base * factor, tuple((s, p * factor) for s, p in self.tiers))


@dataclass(frozen=True, slots=True)
class Rates:
    """Flat USD-per-million-token rates for one request size. ``None``: no price known."""

    input: Decimal | None
    cache_read: Decimal | None
    cache_write_5m: Decimal | None
    cache_write_1h: Decimal | None
    output: Decimal | None

    def get(self, kind: str) -> Decimal | None:
        value: Decimal | None = getattr(self, kind)
        return value


@dataclass(frozen=True, slots=True)
class PriceSheet:
    """Resolved prices of one (provider, model) in one tier, with where each came from."""

    provider: str
    model: str
    #: the catalog's model id and provider id, or None when the model comes only from overrides
    catalog_model: str | None
    catalog_provider: str | None
    tier: str
    service_tier: str | None
    #: "standard", "batch", "flex" or "priority": which price list applies
    mode: str
    rates: Mapping[str, Rate | None]
    #: kind -> human-readable source of the rate (catalog variant, override, rule + multiplier)
    provenance: Mapping[str, str]
    notes: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return self.rates.get("input") is not None

    #: memo of :meth:`at` per long-context bracket (a frozen dataclass may fill a dict)
    _memo: dict[int, Rates] = field(default_factory=dict, compare=False, repr=False)
    _bounds: list[tuple[int, ...]] = field(default_factory=list, compare=False, repr=False)

    @property
    def thresholds(self) -> tuple[int, ...]:
        """Prompt sizes where some rate changes (long-context tiers), ascending."""
        starts = {s for r in self.rates.values() if r is not None for s, _ in r.tiers}
        return tuple(sorted(starts))

    def at(self, prompt_tokens: int = 0) -> Rates:
        # rates only change at the long-context thresholds: one Rates per bracket, cached
        # (pricing runs once per call, on the hot path of a large batch's collection)
        if not self._bounds:
            self._bounds.append(self.thresholds)
        bracket = sum(1 for t in self._bounds[0] if prompt_tokens >= t)
        cache = self._memo
        got = cache.get(bracket)
        if got is None:

            def pick(kind: str) -> Decimal | None:
                rate = self.rates.get(kind)
                return rate.at(prompt_tokens) if rate is not None else None

            got = Rates(
                pick("input"),
                pick("cache_read"),
                pick("cache_write_5m"),
                pick("cache_write_1h"),
                pick("output"),
            )
            cache[bracket] = got
        return got


# -- cost ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cost:
    """The cost of some usage in USD (exact decimals).

    ``known`` is False when no price is known for the model (or for a token kind it used):
    then ``total`` is None, never zero. Components are None when unknown.
    """

    provider: str
    model: str
    tier: str
    service_tier: str | None
    usage: Usage
    known: bool
    total: Decimal | None
    uncached_input: Decimal | None
    cached_input: Decimal | None
    cache_write: Decimal | None
    output: Decimal | None
    sheet: PriceSheet | None = field(default=None, compare=False, repr=False)
    notes: tuple[str, ...] = ()

    @classmethod
    def zero(cls, provider: str = "*", model: str = "*", tier: str = "*") -> Cost:
        return cls(provider, model, tier, None, Usage(), True, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO)

    def __add__(self, other: Cost) -> Cost:
        def same(a: str, b: str) -> str:
            return a if a == b else "*"

        def add(a: Decimal | None, b: Decimal | None) -> Decimal | None:
            return None if a is None or b is None else a + b

        return Cost(
            provider=same(self.provider, other.provider),
            model=same(self.model, other.model),
            tier=same(self.tier, other.tier),
            service_tier=self.service_tier if self.service_tier == other.service_tier else None,
            usage=self.usage + other.usage,
            known=self.known and other.known,
            total=add(self.total, other.total),
            uncached_input=add(self.uncached_input, other.uncached_input),
            cached_input=add(self.cached_input, other.cached_input),
            cache_write=add(self.cache_write, other.cache_write),
            output=add(self.output, other.output),
            sheet=self.sheet if self.sheet is other.sheet else None,
            notes=tuple(dict.fromkeys(self.notes + other.notes)),
        )


# -- overrides ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Override:
    base: dict[str, Rate]
    sections: dict[str, dict[str, Rate]]


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"price override {where}: expected a number, got {value!r}")
    try:
        result = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValueError(f"price override {where}: not a number: {value!r}") from None
    if not result.is_finite() or result < 0:
        raise ValueError(f"price override {where}: must be a finite non-negative number, got {value!r}")
    return result


def _parse_rates(
    spec: Mapping[str, Any], where: str, sections: bool
) -> tuple[dict[str, Rate], dict[str, Any]]:
    rates: dict[str, Rate] = {}
    nested: dict[str, Any] = {}
    for raw_key, value in spec.items():
        key = str(raw_key).lower()
        if sections and key in _OVERRIDE_SECTIONS:
            if not isinstance(value, Mapping):
                raise ValueError(f"price override {where}.{key}: expected a table of rates")
            nested[key] = value
            continue
        kind = _OVERRIDE_ALIASES.get(key)
        if kind is None:
            allowed = sorted(_OVERRIDE_ALIASES) + (list(_OVERRIDE_SECTIONS) if sections else [])
            raise ValueError(
                f"price override {where}: unknown key {raw_key!r} (allowed: {', '.join(allowed)})"
            )
        rates[kind] = Rate(_decimal(value, f"{where}.{key}"))
    return rates, nested


def parse_overrides(data: Mapping[str, Any]) -> dict[str, _Override]:
    """Validate an overrides mapping (see the module docstring for the format)."""
    models = data.get("models", data) if isinstance(data.get("models"), Mapping) else data
    result: dict[str, _Override] = {}
    for raw_name, spec in models.items():
        name = str(raw_name).strip().lower()
        if not isinstance(spec, Mapping):
            raise ValueError(f"price override {raw_name!r}: expected a table of rates, got {spec!r}")
        base, nested = _parse_rates(spec, name, sections=True)
        tiers = {sec: _parse_rates(nested[sec], f"{name}.{sec}", sections=False)[0] for sec in nested}
        result[name] = _Override(base, tiers)
    return result


def load_overrides(path: str | os.PathLike[str]) -> dict[str, _Override]:
    """Read overrides from a ``.json``, ``.toml`` or ``.yaml``/``.yml`` file."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    data: Any
    if suffix == ".toml":
        data = tomllib.loads(text)
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{p}: YAML price files need PyYAML; use JSON or TOML") from None
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, Mapping):
        raise ValueError(f"{p}: expected a mapping of model -> rates at the top level")
    return parse_overrides(data)


# -- the price book -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    """What is known about one (provider, model) before a tier is chosen."""

    provider: str
    family: str  # "openai", "anthropic" or another catalog provider id / "generic"
    catalog_model: str | None
    catalog_provider: str | None
    catalog_base: dict[str, Rate]
    catalog_variants: dict[str, dict[str, Rate]]
    override: _Override | None
    override_key: str | None


def _rate_of(value: object) -> Rate | None:
    if isinstance(value, Decimal):
        return Rate(value)
    if isinstance(value, gp.TieredPrices):
        return Rate(value.base, tuple((t.start, t.price) for t in value.tiers))
    return None


def _catalog_rates(prices: gp.ModelPrice) -> dict[str, Rate]:
    out: dict[str, Rate] = {}
    values = prices.__dict__
    for key in (
        "input_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "cache_write_5m_mtok",
        "cache_write_1h_mtok",
        "output_mtok",
    ):
        rate = _rate_of(values.get(key))
        if rate is not None:
            out[_CATALOG_KEYS[key]] = rate
    return out


@dataclass(slots=True)
class _Resolved:
    """Rates being resolved for one price list.

    ``derived`` kinds are computed last from another kind of the *same* list (``source``,
    multiplier, why), so a derived cache rate follows the list's own input rate (batch,
    flex, priority) and provider multipliers stack.
    """

    rates: dict[str, Rate | None] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    derived: dict[str, tuple[str, Decimal, str]] = field(default_factory=dict)

    def set(self, kind: str, rate: Rate | None, why: str) -> None:
        self.rates[kind] = rate
        self.provenance[kind] = why

    def fill_derived(self) -> None:
        for kind in KINDS:  # cache_write_5m before cache_write_1h, which may derive from it
            if kind not in self.derived:
                continue
            source, mult, why = self.derived[kind]
            base = self.rates.get(source)
            if base is None:
                self.set(kind, None, "no price")
            else:
                self.set(kind, base.scaled(mult) if mult != _ONE else base, why)


def normalize_service_tier(service_tier: str | None) -> str | None:
    """``flex``, ``priority`` or ``batch``; None for standard (``default``, ``auto``, ``standard``...)."""
    if not service_tier:
        return None
    st = str(service_tier).strip().lower()
    if st in ("flex", "priority", "batch"):
        return st
    return None


class Pricing(Protocol):
    """The price-book seam: what the engine, the budget and reports ask of prices.
    :class:`PriceBook` (genai-prices plus overrides) is the implementation batchain ships."""

    def cost_of(
        self,
        provider: str,
        model: str,
        usage: Usage,
        tier: str = "realtime",
        service_tier: str | None = None,
        *,
        cache_write_1h_tokens: int = 0,
        prompt_tokens: int | None = None,
    ) -> Cost: ...

    def cost_of_call(
        self,
        provider: str,
        model: str,
        usage: Usage,
        tier: str,
        response: str | Mapping[str, Any] | None = None,
    ) -> Cost: ...

    def list_price_of(
        self,
        provider: str,
        model: str,
        usage: Usage,
        *,
        cache_write_1h_tokens: int = 0,
        prompt_tokens: int | None = None,
    ) -> Cost: ...


class PriceBook:
    """Resolves (provider, model, tier, service tier) to per-million-token rates, and prices usage.

    Thread-safe; resolutions are cached per book. ``at`` fixes the date used to pick the
    catalog's dated prices (default: now, at each first resolution).
    """

    def __init__(
        self,
        overrides: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        at: datetime | None = None,
        snapshot: data_snapshot.DataSnapshot | None = None,
    ) -> None:
        if overrides is None:
            self._overrides: dict[str, _Override] = {}
        elif isinstance(overrides, Mapping):
            self._overrides = parse_overrides(overrides)
        else:
            self._overrides = load_overrides(overrides)
        self._at = at
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._sheets: dict[tuple[str, str, str, str | None], PriceSheet] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> PriceBook:
        return cls(path, **kwargs)

    @property
    def overrides(self) -> Mapping[str, Any]:
        return dict(self._overrides)

    # -- resolution ---------------------------------------------------------------------------

    def _when(self) -> datetime:
        return self._at or datetime.now(tz=UTC)

    def _find_override(self, provider: str, model: str) -> tuple[str, _Override] | None:
        m = model.lower()
        candidates = [f"{provider}/{m}", m]
        undated = _DATE_SUFFIX.sub("", m)
        if undated != m:
            candidates += [f"{provider}/{undated}", undated]
        for key in candidates:
            if key in self._overrides:
                return key, self._overrides[key]
        return None

    def _find_catalog(self, provider: str, model: str) -> tuple[gp.Provider, gp.ModelInfo] | None:
        snap = self._snapshot or data_snapshot.get_snapshot()
        ref = model
        if "/" in ref and ref.split("/", 1)[0].lower() == provider.lower():
            ref = ref.split("/", 1)[1]
        provider_id = _PROVIDER_IDS.get(provider.lower(), provider.lower())
        attempts: list[str | None] = [provider_id] if provider_id is not None else []
        attempts.append(None)  # infer the provider from the model name
        for pid in attempts:
            try:
                return snap.find_provider_model(ref, None, pid, None)
            except LookupError:
                continue
        return None

    def _entry(self, provider: str, model: str) -> _Entry:
        key = (provider.lower(), model.lower())
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        found = self._find_catalog(provider, model)
        base: dict[str, Rate] = {}
        variants: dict[str, dict[str, Rate]] = {}
        catalog_model = catalog_provider = None
        when = self._when()
        if found is not None:
            cprov, cmodel = found
            catalog_model, catalog_provider = cmodel.id, cprov.id
            base = _catalog_rates(cmodel.get_prices(when))
            # like genai-prices' calc_price: variants apply only to the provider's own models
            own = any(cmodel is m for m in cprov.models)
            for variant in (cmodel.price_variants or []) if own else []:
                if variant.constraint is not None and not variant.constraint.active(when):
                    continue
                mode = _VARIANT_MODES.get(tuple(sorted(variant.when.items())))
                if mode is None:
                    continue
                explicit = variants.setdefault(mode, {})
                for kind, rate in _catalog_rates(variant.prices).items():
                    explicit.setdefault(kind, rate)  # first matching variant wins, per key
        fam = provider.lower()
        if fam in ("generic", "") and catalog_provider is not None:
            fam = catalog_provider
        ov = self._find_override(provider.lower(), model)
        entry = _Entry(
            provider=provider,
            family=fam,
            catalog_model=catalog_model,
            catalog_provider=catalog_provider,
            catalog_base=base,
            catalog_variants=variants,
            override=ov[1] if ov else None,
            override_key=ov[0] if ov else None,
        )
        self._entries[key] = entry
        return entry

    def _standard(self, e: _Entry) -> _Resolved:
        """Realtime list rates; cache rates the catalog lacks are derived (and marked so)."""
        r = _Resolved()
        ov = e.override.base if e.override else {}
        cat = f"catalog {e.catalog_provider}/{e.catalog_model}"
        for kind in ("input", "output"):
            if kind in ov:
                r.set(kind, ov[kind], f"override {e.override_key}")
                r.touched.add(kind)
            elif kind in e.catalog_base:
                r.set(kind, e.catalog_base[kind], cat)
            else:
                r.set(kind, None, "no price")
        anthropic = e.family == "anthropic"
        for kind, mult in (
            ("cache_read", ANTHROPIC_CACHE_READ_MULTIPLIER),
            ("cache_write_5m", ANTHROPIC_CACHE_WRITE_5M_MULTIPLIER),
            ("cache_write_1h", ANTHROPIC_CACHE_WRITE_1H_MULTIPLIER),
        ):
            if kind in ov:
                r.set(kind, ov[kind], f"override {e.override_key}")
                r.touched.add(kind)
            elif kind in e.catalog_base and not (anthropic and "input" in r.touched):
                r.set(kind, e.catalog_base[kind], cat)
            elif anthropic:
                r.derived[kind] = ("input", mult, f"{mult} x input (Anthropic prompt-caching pricing)")
            elif kind == "cache_write_1h":
                r.derived[kind] = ("cache_write_5m", _ONE, "= cache_write_5m (no 1h price listed)")
            else:
                r.derived[kind] = ("input", _ONE, "= input (no cache price listed: billed as ordinary input)")
        r.fill_derived()
        return r

    def _batch_factor(self, family: str) -> tuple[Decimal, str]:
        if family == "openai":
            return OPENAI_BATCH_MULTIPLIER, "OpenAI Batch API 50%"
        if family == "anthropic":
            return ANTHROPIC_BATCH_MULTIPLIER, "Anthropic Message Batches 50% on all usage"
        return DEFAULT_BATCH_MULTIPLIER, f"{family} batch 50% (assumed)"

    def _batch(self, e: _Entry, std: _Resolved) -> _Resolved:
        factor, why = self._batch_factor(e.family)
        ov_tier = e.override.sections.get("batch", {}) if e.override else {}
        variant = e.catalog_variants.get("batch")
        cat = f"catalog {e.catalog_provider}/{e.catalog_model} batch variant"
        r = _Resolved(touched=set(std.touched))
        for kind in KINDS:
            s = std.rates[kind]
            if kind in ov_tier:
                r.set(kind, ov_tier[kind], f"override {e.override_key}.batch")
            elif kind in std.derived:
                r.derived[kind] = std.derived[kind]
            elif s is None:
                r.set(kind, None, "no price")
            elif kind not in std.touched and variant is not None and kind in variant:
                r.set(kind, variant[kind], cat)
            elif kind == "cache_read" and e.family == "openai" and variant is not None:
                # the catalog lists batch rates for this model but no cached-input one
                r.set(
                    kind,
                    s,
                    "standard cached rate: the catalog's batch variant lists no cached-input rate "
                    "(OpenAI's Batch price table publishes none; catalog price_comments)",
                )
            else:
                r.set(kind, s.scaled(factor), f"{factor} x [{std.provenance[kind]}] ({why})")
        r.fill_derived()
        return r

    def _explicit(self, e: _Entry, mode: str, std: _Resolved, fallback: _Resolved) -> _Resolved:
        """``mode``'s explicit rates (override section, then catalog variant), else ``fallback``."""
        ov_tier = e.override.sections.get(mode, {}) if e.override else {}
        variant = e.catalog_variants.get(mode, {})
        r = _Resolved(touched=set(std.touched))
        for kind in KINDS:
            if kind in ov_tier:
                r.set(kind, ov_tier[kind], f"override {e.override_key}.{mode}")
            elif kind in std.derived:
                r.derived[kind] = std.derived[kind]
            elif std.rates[kind] is not None and kind in variant and kind not in std.touched:
                r.set(kind, variant[kind], f"catalog {e.catalog_provider}/{e.catalog_model} {mode} variant")
            else:
                r.set(kind, fallback.rates[kind], fallback.provenance[kind])
        r.fill_derived()
        return r

    def sheet(
        self, provider: str, model: str, tier: str = Tier.REALTIME, service_tier: str | None = None
    ) -> PriceSheet:
        """The resolved prices of ``model`` in ``tier`` (``realtime``/``batch``) and service tier."""
        st = normalize_service_tier(service_tier)
        cache_key = (provider.lower(), model.lower(), tier, st)
        cached = self._sheets.get(cache_key)
        if cached is not None:
            return cached
        with self._lock:
            e = self._entry(provider, model)
            std = self._standard(e)
            notes: list[str] = []
            mode: Mode = "standard"
            sections = e.override.sections if e.override else {}
            if tier == Tier.BATCH or st == "batch":
                mode = "batch"
                res = self._batch(e, std)
            elif st == "flex":
                mode = "flex"
                res = self._explicit(e, "flex", std, self._batch(e, std))
                if "flex" not in e.catalog_variants and "flex" not in sections:
                    notes.append("no flex price in the catalog: Batch API rates used (flex = batch rates)")
            elif st == "priority":
                mode = "priority"
                res = self._explicit(e, "priority", std, std)
                if "priority" not in e.catalog_variants and "priority" not in sections:
                    notes.append("no priority price in the catalog: standard rates used (under-counted)")
            else:
                res = std
            if e.catalog_model is None and e.override is None:
                notes.append("model not in the genai-prices catalog and no override")
            elif e.catalog_model is not None and provider.lower() in ("generic", ""):
                notes.append(f"provider inferred from the model name: {e.catalog_provider}")
            elif e.catalog_provider not in (None, _PROVIDER_IDS.get(provider.lower(), provider.lower())):
                notes.append(
                    f"not under {provider} in the catalog: priced as {e.catalog_provider}/{e.catalog_model}"
                )
            result = PriceSheet(
                provider=provider,
                model=model,
                catalog_model=e.catalog_model,
                catalog_provider=e.catalog_provider,
                tier=tier,
                service_tier=st,
                mode=mode,
                rates={k: res.rates[k] for k in KINDS},
                provenance={k: res.provenance[k] for k in KINDS},
                notes=tuple(notes),
            )
            self._sheets[cache_key] = result
            return result

    def lists_price(self, provider: str, model: str, mode: str) -> bool:
        """Does the catalog have a ``mode`` (``batch``, ``flex``, ``priority``) price variant
        for ``model``, or an override a ``mode`` section? (Flex mode sends at flex the
        OpenAI models that have a flex price: OpenAI lists flex prices exactly for the
        models that offer flex.)"""
        with self._lock:
            e = self._entry(provider, model)
        return mode in e.catalog_variants or (e.override is not None and mode in e.override.sections)

    def rates(
        self,
        provider: str,
        model: str,
        tier: str = Tier.REALTIME,
        service_tier: str | None = None,
        *,
        prompt_tokens: int = 0,
    ) -> Rates | None:
        """Flat per-million-token rates for a request of ``prompt_tokens``; None if unknown."""
        sheet = self.sheet(provider, model, tier, service_tier)
        return sheet.at(prompt_tokens) if sheet.known else None

    # -- pricing ------------------------------------------------------------------------------

    def cost_of(
        self,
        provider: str,
        model: str,
        usage: Usage,
        tier: str = Tier.REALTIME,
        service_tier: str | None = None,
        *,
        cache_write_1h_tokens: int = 0,
        prompt_tokens: int | None = None,
    ) -> Cost:
        """Price ``usage`` of ``model`` in ``tier`` (``realtime``/``batch``) and service tier.

        ``cache_write_1h_tokens`` is the part of ``usage.cache_creation_tokens`` written with
        the 1-hour TTL (Anthropic ``cache_creation.ephemeral_1h_input_tokens``); the rest is
        priced as 5-minute writes. ``prompt_tokens`` selects long-context tiers (default: the
        average prompt per request, ``input_tokens / requests``).
        """
        sheet = self.sheet(provider, model, tier, service_tier)
        if prompt_tokens is None:
            prompt_tokens = usage.input_tokens // max(usage.requests, 1)
        return price_usage(sheet, usage, cache_write_1h_tokens, prompt_tokens, self.warn_unknown)

    def cost_of_call(
        self,
        provider: str,
        model: str,
        usage: Usage,
        tier: str,
        response: str | Mapping[str, Any] | None = None,
    ) -> Cost:
        """:meth:`cost_of` with the service tier and 1-hour cache writes read from the response.

        ``response`` is the provider's JSON response body (text or parsed): OpenAI's top-level
        ``service_tier`` (``flex``/``priority`` change the price) and Anthropic's
        ``usage.cache_creation.ephemeral_1h_input_tokens``. Invalid or missing JSON is ignored.
        """
        st, w1h = response_pricing_facts(provider, response)
        return self.cost_of(provider, model, usage, tier, st, cache_write_1h_tokens=w1h)

    def list_price_of(
        self,
        provider: str,
        model: str,
        usage: Usage,
        *,
        cache_write_1h_tokens: int = 0,
        prompt_tokens: int | None = None,
    ) -> Cost:
        """The same usage at the realtime list price (standard tier): the baseline for savings."""
        return self.cost_of(
            provider,
            model,
            usage,
            Tier.REALTIME,
            None,
            cache_write_1h_tokens=cache_write_1h_tokens,
            prompt_tokens=prompt_tokens,
        )

    def warn_unknown(self, sheet: PriceSheet, reason: str) -> None:
        """Warn, once per model per process, that ``sheet`` has no price: the cost is
        unknown. An unknown model is often a typo, so the warning names the nearest models
        the catalog knows. One channel only (a warning, which the CLI prints as one line);
        logging it as well printed it twice, and so did each price book of a run."""
        key = (sheet.provider.lower(), sheet.model.lower())
        with _WARNED_LOCK:
            if key in _WARNED:
                return
            _WARNED.add(key)
        message = f"no price for {sheet.provider}/{sheet.model}: {reason}; its cost is unknown (not zero)"
        near = self.nearest_models(sheet.provider, sheet.model)
        if near and sheet.model not in near:
            guess = " or ".join(near)
            message += f". Did you mean {guess}? (a model its provider does not serve fails there)"
        log.debug(message)
        warnings.warn(message, UnknownPriceWarning, stacklevel=4)

    def check_known(self, provider: str, model: str) -> bool:
        """Is ``model`` priced? If not, warn now (see :meth:`warn_unknown`): a job checks
        its chain's models before it runs, so a typo is named before anything is paid."""
        sheet = self.sheet(provider, model, Tier.REALTIME)
        if not sheet.known:
            self.warn_unknown(sheet, sheet.notes[-1] if sheet.notes else "no price")
        return sheet.known

    def nearest_models(self, provider: str, model: str, n: int = 3) -> list[str]:
        """The catalog's model names closest to ``model`` (the provider's first), best first."""
        snap = self._snapshot or data_snapshot.get_snapshot()
        provider_id = _PROVIDER_IDS.get(provider.lower(), provider.lower())
        own = [m.id for p in snap.providers if p.id == provider_id for m in p.models]
        every = own or [m.id for p in snap.providers for m in p.models]
        names = [m for m in every if not m.startswith("ft:")]  # fine-tunes: never a typo's aim
        bare = model.split("/", 1)[1] if "/" in model else model
        return difflib.get_close_matches(bare.lower(), names, n=n, cutoff=0.75)


#: models without a price warned about in this process: (provider, model)
_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


def response_pricing_facts(provider: str, response: str | Mapping[str, Any] | None) -> tuple[str | None, int]:
    """(service tier, 1-hour cache-write tokens) from a provider response body."""
    if type(response) is dict and provider == "openai":  # a batch's answers, tens of thousands
        st = response.get("service_tier")
        return (st if isinstance(st, str) else None), 0
    body: Any = response
    if isinstance(response, str | bytes):
        try:
            body = json.loads(response)
        except ValueError:
            return None, 0
    if not isinstance(body, Mapping):
        return None, 0
    usage = body.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    st = body.get("service_tier") if provider == "openai" else None
    w1h = 0
    if provider == "anthropic":
        creation = usage.get("cache_creation")
        if isinstance(creation, Mapping):
            value = creation.get("ephemeral_1h_input_tokens")
            w1h = value if isinstance(value, int) and not isinstance(value, bool) else 0
    return (st if isinstance(st, str) else None), w1h


def price_usage(
    sheet: PriceSheet,
    usage: Usage,
    cache_write_1h_tokens: int = 0,
    prompt_tokens: int = 0,
    on_unknown: Any = None,
) -> Cost:
    """Price ``usage`` with a resolved ``sheet`` (see :meth:`PriceBook.cost_of`)."""
    notes = list(sheet.notes)
    cached = max(usage.cache_read_tokens, 0)
    writes = max(usage.cache_creation_tokens, 0)
    w1h = min(max(cache_write_1h_tokens, 0), writes)
    w5m = writes - w1h
    uncached = usage.input_tokens - cached - writes
    if uncached < 0:
        notes.append(f"cache tokens exceed input tokens by {-uncached}: uncached input taken as 0")
        uncached = 0
    r = sheet.at(prompt_tokens)

    def part(*pairs: tuple[int, Decimal | None]) -> Decimal | None:
        total = _ZERO
        for tokens, rate in pairs:
            if tokens == 0:
                continue
            if rate is None:
                return None
            total += tokens * rate
        return total / PER_MILLION

    unc = part((uncached, r.input))
    cr = part((cached, r.cache_read))
    cw = part((w5m, r.cache_write_5m), (w1h, r.cache_write_1h))
    out = part((usage.output_tokens, r.output))
    known = sheet.known and None not in (unc, cr, cw, out)
    if not known and on_unknown is not None:
        reason = sheet.notes[-1] if not sheet.known and sheet.notes else "a token kind it used has no price"
        on_unknown(sheet, reason)
    total: Decimal | None = None
    if known and unc is not None and cr is not None and cw is not None and out is not None:
        total = unc + cr + cw + out
    return Cost(
        provider=sheet.provider,
        model=sheet.model,
        tier=sheet.tier,
        service_tier=sheet.service_tier,
        usage=usage,
        known=known,
        total=total,
        uncached_input=unc,
        cached_input=cr,
        cache_write=cw,
        output=out,
        sheet=sheet,
        notes=tuple(notes),
    )


# -- module-level conveniences ------------------------------------------------------------------

_default: PriceBook | None = None
_default_lock = threading.Lock()


def default_pricebook() -> PriceBook:
    """A process-wide book: the catalog plus the overrides file named by ``$BATCHAIN_PRICES``."""
    global _default
    with _default_lock:
        if _default is None:
            path = os.environ.get("BATCHAIN_PRICES")
            _default = PriceBook(path) if path else PriceBook()
        return _default


def cost_of(
    provider: str,
    model: str,
    usage: Usage,
    tier: str = Tier.REALTIME,
    service_tier: str | None = None,
    *,
    cache_write_1h_tokens: int = 0,
    pricebook: PriceBook | None = None,
) -> Cost:
    """:meth:`PriceBook.cost_of` on ``pricebook`` or the :func:`default_pricebook`."""
    book = pricebook or default_pricebook()
    return book.cost_of(
        provider, model, usage, tier, service_tier, cache_write_1h_tokens=cache_write_1h_tokens
    )


def list_price_of(
    provider: str,
    model: str,
    usage: Usage,
    *,
    cache_write_1h_tokens: int = 0,
    pricebook: PriceBook | None = None,
) -> Cost:
    """:meth:`PriceBook.list_price_of` on ``pricebook`` or the :func:`default_pricebook`."""
    book = pricebook or default_pricebook()
    return book.list_price_of(provider, model, usage, cache_write_1h_tokens=cache_write_1h_tokens)
