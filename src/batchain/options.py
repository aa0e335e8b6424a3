"""Run options: what a caller can set for a job (limits, batch policy, auto policy, budget),
and the closed vocabularies it is run with (:class:`Mode`, :class:`Tier`).

Options are stored with the job (:meth:`RunOptions.to_record`), so a resume in another
process runs with the same options; ``callbacks`` and a ``priority`` function cannot be
stored and are passed again. Both enums are :class:`~enum.StrEnum`, so a member *is* its
string: ``Mode.BATCH == "batch"``, stored as ``batch``, and plain strings passed by users
or read back from a store compare equal to the members.

This module imports nothing heavy: the command line imports it for ``--help``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from batchain.errors import InvalidOption

__all__ = ["MODES", "PROMPT_CACHE_MODES", "Mode", "PromptCache", "RunOptions", "Tier", "take_config"]


class Mode(StrEnum):
    """How a job sends its model calls."""

    #: every call now, under the concurrency cap and the provider's rate limits
    REALTIME = "realtime"
    #: every call through the provider's Batch API (half price), round after round
    BATCH = "batch"
    #: urgent items realtime, the others batch; everything realtime near the deadline
    AUTO = "auto"

    @classmethod
    def parse(cls, value: str) -> Mode:
        """The member for ``value`` (a member or its string); :class:`InvalidOption`
        naming the value and the allowed ones otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise InvalidOption(f"mode must be one of {', '.join(MODES)}; got {value!r}") from None


#: the modes' strings, in the order they are documented
MODES: tuple[str, ...] = tuple(m.value for m in Mode)


class Tier(StrEnum):
    """How one call was sent, and so which price list it pays (``calls.tier`` in the store).

    A provider's *service tier* (OpenAI's ``flex``, ``priority``...) is something else: the
    provider's own word, read from each response and kept as the provider says it (see
    :func:`batchain.cost.prices.normalize_service_tier`)."""

    REALTIME = "realtime"
    BATCH = "batch"


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
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(PROMPT_CACHE_MODES)
            raise InvalidOption(f"prompt_cache must be one of {allowed}; got {value!r}") from None


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
    #: auto mode: an input field, or a function of the input; urgent (> 0 / true) items
    #: run realtime, the others batch
    priority: Any = None
    #: auto mode: epoch seconds by which everything should be done; ``deadline_margin``
    #: seconds before it, calls still at a provider are cancelled there and sent realtime
    deadline: float | None = None
    deadline_margin: float = 300.0
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
        if not isinstance(d["priority"], str | None):
            d["priority"] = None  # a function cannot be stored: pass it again on resume
        return d

    def is_urgent(self, value: Any) -> bool:
        """Auto mode: does this item run realtime? (priority > 0, or a true value)"""
        p = self.priority
        if p is None:
            return False
        try:
            got = p(value) if callable(p) else value.get(p) if isinstance(value, dict) else None
        except Exception:  # a priority that cannot be computed is not urgent
            return False
        if isinstance(got, bool) or got is None:
            return bool(got)
        if isinstance(got, int | float):
            return got > 0
        text = str(got).strip().lower()
        try:
            return float(text) > 0  # CSV gives numbers as strings
        except ValueError:
            return text in ("true", "yes", "y", "urgent", "high", "realtime")


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
