"""Run options: what a caller can set for a job (limits, batch policy, auto policy, budget),
and the closed vocabularies it is run with (:class:`Mode`, :class:`Tier`).

Options are stored with the job (:meth:`RunOptions.to_record`), so a resume in another
process runs with the same options; ``callbacks`` and a ``priority`` function cannot be
stored and are passed again (a job run with a priority function records that it was, so a
resume without one is refused rather than routing every item as ``normal``). Both enums
are :class:`~enum.StrEnum`, so a member *is* its string: ``Mode.BATCH == "batch"``,
stored as ``batch``, and plain strings passed by users or read back from a store compare
equal to the members.

This module imports nothing heavy: the command line imports it for ``--help``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from batchain.errors import InvalidOption

__all__ = [
    "FLEX_FALLBACKS",
    "MODES",
    "PRIORITY_FUNCTION",
    "PROMPT_CACHE_MODES",
    "FlexFallback",
    "Mode",
    "PromptCache",
    "RunOptions",
    "Tier",
    "take_config",
]


_E = TypeVar("_E", bound=StrEnum)


def _member(cls: type[_E], value: str, option: str) -> _E:
    """The member of ``cls`` for ``value`` (a member or its string); :class:`InvalidOption`
    naming ``option``, the value and the allowed ones otherwise."""
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise InvalidOption(f"{option} must be one of {allowed}; got {value!r}") from None


class Mode(StrEnum):
    """How a job sends its model calls."""

    #: every call now, under the concurrency cap and the provider's rate limits
    REALTIME = "realtime"
    #: every call through the provider's Batch API (half price), round after round
    BATCH = "batch"
    #: per item by its priority (high realtime, normal flex or batch, low batch; see
    #: :mod:`batchain.priority`); everything realtime near the deadline
    AUTO = "auto"
    #: every call now, at OpenAI's flex tier where the model offers it (batch price, slower,
    #: sometimes refused: then ``flex_fallback``); other calls realtime at standard price
    FLEX = "flex"

    @classmethod
    def parse(cls, value: str) -> Mode:
        """The member for ``value`` (a member or its string); :class:`InvalidOption`
        naming the value and the allowed ones otherwise."""
        return _member(cls, value, "mode")


#: the modes' strings, in the order they are documented
MODES: tuple[str, ...] = tuple(m.value for m in Mode)


class Tier(StrEnum):
    """How one call was sent, and so which price list it pays (``calls.tier`` in the store).

    ``FLEX`` is a realtime call OpenAI served at its flex tier (its answer says
    ``service_tier: "flex"``). A provider's *service tier* (OpenAI's ``flex``,
    ``priority``...) is otherwise the provider's own word, read from each response and kept
    as the provider says it (see :func:`batchain.cost.prices.normalize_service_tier`)."""

    REALTIME = "realtime"
    BATCH = "batch"
    #: sent realtime and served at OpenAI's flex tier (the response says so): batch rates
    FLEX = "flex"


class FlexFallback(StrEnum):
    """Flex mode: what a call does that cannot go at flex (its model has no flex tier), or
    that flex kept refusing for lack of capacity for ``flex_patience`` seconds."""

    #: sent realtime at the standard tier (standard price)
    STANDARD = "standard"
    #: a call whose model has no flex goes through the provider's Batch API (batch price,
    #: a batch's turnaround); one that flex kept refusing is sent at the standard tier
    BATCH = "batch"
    #: fails (the provider's own error; for a model without flex, :class:`FlexUnavailable`)
    FAIL = "fail"

    @classmethod
    def parse(cls, value: str) -> FlexFallback:
        return _member(cls, value, "flex_fallback")


#: the flex fallbacks' strings, in the order they are documented
FLEX_FALLBACKS: tuple[str, ...] = tuple(f.value for f in FlexFallback)


class PromptCache(StrEnum):
    """Batch mode's use of the providers' prompt caches (see batchain.engine.promptcache)."""

    #: calls that share a long prefix go in the same batches; Anthropic's are marked for
    #: its cache, after one priming batch per prefix, where that saves at least half of
    #: what the prefix would cost
    AUTO = "auto"
    #: requests go as the chain built them, in the order they came
    OFF = "off"

    @classmethod
    def parse(cls, value: str) -> PromptCache:
        return _member(cls, value, "prompt_cache")


#: the prompt-cache settings' strings
PROMPT_CACHE_MODES: tuple[str, ...] = tuple(m.value for m in PromptCache)


@dataclass(slots=True)
class RunOptions:
    mode: str = Mode.REALTIME
    max_concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 6
    timeout: float = 120.0
    cache: bool = True
    #: items running at once: realtime 4 x max_concurrency (at least 256), batch 50,000
    window: int | None = None
    progress: bool = True
    #: threads for sync steps (sync lambdas calling models hold one while they wait)
    threads: int = 256
    #: batch mode: first and longest wait between polls of a provider batch (seconds)
    poll_min: float = 1.0
    poll_max: float = 60.0
    #: batch mode: seconds (and at least 3 polls) a provider batch may be unknown to its
    #: provider (404) before it is declared lost and its calls are sent again; also how long
    #: a cancel waits for a batch it cannot reach. None: ``$BATCHAIN_LOST_AFTER_S``, else 600
    lost_after: float | None = None
    #: batch mode: most requests in one provider batch (the provider's own limit applies too)
    max_batch_size: int | None = None
    #: batch mode, per model: most provider batches open at once, and most input tokens
    #: they may hold (its *enqueued tokens*, estimated at ~4 characters a token); calls
    #: beyond wait and go as batches end. None: no cap of ours (the provider's queue limits
    #: are learned from its refusals either way)
    max_open_batches: int | None = None
    max_enqueued_tokens: int | None = None
    #: batch mode: "auto" groups calls that share a long prefix and marks Anthropic's for
    #: its prompt cache (after a priming batch); "off" sends them as built
    prompt_cache: str = PromptCache.AUTO
    #: batch mode: "realtime" lets models without a Batch API adapter run at full price
    fallback: str | None = None
    #: batch mode: refuse, before anything is sent, a model whose endpoint has no Batch API
    #: (by default its calls run realtime, noted in the report)
    batch_only: bool = False
    #: batch mode: "batch" or "realtime" for a model name, base URL or host, over what
    #: batchain knows or finds out about its endpoint (see batchain.providers.endpoints)
    endpoint_modes: dict[str, str] = field(default_factory=dict)
    #: auto mode: one level for every item (``"high"``, ``"normal"``, ``"low"``, a number)
    #: or a function of the input that returns an item's level (see batchain.priority)
    priority: Any = None
    #: auto mode: the input field that holds each item's level
    priority_field: str | None = None
    #: auto mode: where each level's calls go, over the default (high: realtime, normal:
    #: flex where the model offers it, else batch; low: batch)
    auto_routes: dict[str, str] = field(default_factory=dict)
    #: auto mode: epoch seconds by which everything should be done; ``deadline_margin``
    #: seconds before it, calls still at a provider are cancelled there and sent realtime
    deadline: float | None = None
    deadline_margin: float = 300.0
    #: flex mode: the timeout of one flex request (OpenAI suggests 15 minutes: flex is slow)
    flex_timeout: float = 900.0
    #: flex mode: seconds a call keeps retrying (exponential backoff with jitter) while flex
    #: answers "Resource Unavailable", before ``flex_fallback`` (0: at the first refusal)
    flex_patience: float = 300.0
    #: flex mode: "standard" (send at the standard tier, standard price) or "fail"
    flex_fallback: str = FlexFallback.STANDARD
    #: flex mode: the OpenAI models (names or fnmatch patterns) to send at flex; None: those
    #: the price catalog (or ``prices``) has a flex price for
    flex_models: list[str] | None = None
    #: a hard cap in USD across realtime and batch (None: no cap)
    budget: float | None = None
    #: price overrides: a dict, or the path of a JSON/TOML/YAML file (see batchain.cost)
    prices: Any = None
    callbacks: list[Any] = field(default_factory=list)
    #: what each item's chain is invoked with, from ``run(config=...)``: tags, metadata,
    #: run_name, configurable, recursion_limit (JSON, stored with the job)
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    def to_record(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "callbacks"}
        if callable(d["priority"]):
            # a function cannot be stored: pass it again on resume (see resolve_options)
            d["priority"] = None
            d[PRIORITY_FUNCTION] = True
        return d


#: the stored options' mark of a job run with a priority function
PRIORITY_FUNCTION = "priority_function"


#: what of a RunnableConfig each item is invoked with (stored with the job: JSON only)
_ITEM_CONFIG = ("tags", "metadata", "run_name", "configurable", "recursion_limit")


def take_config(opts: dict[str, Any]) -> None:
    """Spread ``config`` (a LangChain ``RunnableConfig``) over the options: its callbacks
    join ``callbacks``, its ``max_concurrency`` is ``max_concurrency``, and what each item
    is invoked with stays in ``config``. A key that cannot apply to a job of many items
    (``run_id``) or is not LangChain's is refused by name."""
    given = opts.get("config") or {}
    if not isinstance(given, Mapping):
        raise InvalidOption(f"config must be a RunnableConfig (a dict), not {type(given).__name__}")
    unknown = set(given) - set(_ITEM_CONFIG) - {"callbacks", "max_concurrency"}
    if unknown:
        raise InvalidOption(
            f"config key(s) {', '.join(sorted(unknown))} cannot apply to a job (each item is its own run);"
            f" a job takes {', '.join(('callbacks', 'max_concurrency', *_ITEM_CONFIG))}"
        )
    callbacks: Any = given.get("callbacks")
    if callbacks is not None:
        handlers: list[Any] = list(getattr(callbacks, "handlers", callbacks))  # a manager, or a list
        opts["callbacks"] = [*opts["callbacks"], *handlers]
    if given.get("max_concurrency") is not None:
        opts["max_concurrency"] = given["max_concurrency"]
    item = {k: given[k] for k in _ITEM_CONFIG if given.get(k) is not None}
    try:
        json.dumps(item)
    except (TypeError, ValueError) as exc:
        raise InvalidOption(
            f"config's {', '.join(item)} must be JSON data (they are stored with the job): {exc}"
        ) from None
    opts["config"] = item
