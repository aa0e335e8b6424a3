"""LangChain's LLM cache, and the marker on answers a call did not pay for.

batchain's hook replaces ``BaseChatModel._agenerate_with_cache``, the method where LangChain
consults its cache (``set_llm_cache``, or a model's ``cache=``), so inside a job batchain
does what it did, in this order:

1. batchain's store: an answered call (this job's own, or an earlier job's) replays, exact
   and free;
2. LangChain's cache (the model's ``cache`` if it is a ``BaseCache``, else the global
   one; none when the model says ``cache=False``), under LangChain's own key, so a cache
   filled by plain LangChain code is hit by batchain and the other way round;
3. the provider, paid for.

After 1 or 3 the answer is written to LangChain's cache, so it is warm for the user's
other code. An answer from 1 or 2, or shared with an identical call in flight, carries
``response_metadata["batchain"] = {"source": ...}`` (:class:`Source`); a paid answer
carries nothing, exactly as the model's own. Paid means: the first delivery, in whatever
run, of a call the item paid for (its ``paid`` link); the store notes it (``told``), and
every later delivery of that call to that item is a ``replay``. When callbacks listen, a
paid answer's ``llm_output`` (what ``on_llm_end`` sees, not the message) carries
``{"batchain": {"tier": ...}}``: the tier its call ran at, so a ``CostTracker`` prices a
batch answer at batch rates without being told.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.load import dumps
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from batchain.errors import LLMCacheNotSet

__all__ = [
    "MARKER",
    "CacheKey",
    "Source",
    "applies",
    "cache_key",
    "lookup",
    "mark",
    "note_tier",
    "source_of",
    "tier_of",
    "update",
]

#: the key of batchain's entry in an answer's ``response_metadata``
MARKER = "batchain"


class Source(StrEnum):
    """Where an answer the call did not pay for came from (the marker's ``source``)."""

    #: batchain's store: an answer an earlier job paid for
    CACHE = "cache"
    #: batchain's store: this job's answer that another item paid for, or that this item
    #: was told before (an item fed again, in batch mode or a resume)
    REPLAY = "replay"
    #: an identical call of this job, in flight at the same time, paid for once
    SHARED = "shared"
    #: LangChain's LLM cache
    LANGCHAIN_CACHE = "langchain_cache"


def _cache_of(model: BaseChatModel) -> BaseCache | None:
    """The cache LangChain would consult for ``model``, as ``_agenerate_with_cache`` picks it."""
    if model.cache is False:
        return None
    cache = model.cache if isinstance(model.cache, BaseCache) else get_llm_cache()
    if cache is None and model.cache is True:
        raise LLMCacheNotSet(
            f"{type(model).__name__}(cache=True) but no LangChain cache is set: call "
            "langchain_core.globals.set_llm_cache(...) or pass cache=<a BaseCache>"
        )
    return cache


def applies(model: BaseChatModel) -> bool:
    """Does a LangChain cache (or a model's demand for one) apply to ``model``'s calls?"""
    return (
        model.cache is True
        or isinstance(model.cache, BaseCache)
        or (model.cache is None and get_llm_cache() is not None)
    )


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Where one call's answer lives in a LangChain cache."""

    cache: BaseCache
    prompt: str
    llm_string: str


def cache_key(
    model: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, object]
) -> CacheKey | None:
    """The call's key in the LangChain cache that applies to it (None: no cache applies).
    LangChain's own: the messages without their ids, dumped, and the model's llm string."""
    cache = _cache_of(model)
    if cache is None:
        return None
    llm_string = model._get_llm_string(stop=stop, **kwargs)
    plain = [m.model_copy(update={"id": None}) if getattr(m, "id", None) is not None else m for m in messages]
    return CacheKey(cache, dumps(plain), llm_string)


async def lookup(model: BaseChatModel, key: CacheKey) -> ChatResult | None:
    """The cached answer, as LangChain returns a cache hit (its usage's ``total_cost``
    zeroed), marked; None on a miss."""
    found = await key.cache.alookup(key.prompt, key.llm_string)
    if not isinstance(found, list):
        return None
    generations = model._convert_cached_generations(found)
    return mark(ChatResult(generations=generations), Source.LANGCHAIN_CACHE)


async def update(key: CacheKey, result: ChatResult) -> None:
    """Write an answer (unmarked) to the cache, as LangChain does after a call."""
    await key.cache.aupdate(key.prompt, key.llm_string, result.generations)


def mark(result: ChatResult, source: Source | None) -> ChatResult:
    """``result`` with each message's ``response_metadata`` carrying ``source`` (None: paid,
    left as it is). The messages are copied: a cache may hold the originals."""
    if source is None:
        return result
    generations = []
    for gen in result.generations:
        meta = {**gen.message.response_metadata, MARKER: {"source": source.value}}
        message = gen.message.model_copy(update={"response_metadata": meta})
        generations.append(ChatGeneration(message=message, generation_info=gen.generation_info))
    return ChatResult(generations=generations, llm_output=result.llm_output)


def note_tier(result: ChatResult, tier: str | None) -> None:
    """Note in ``result``'s ``llm_output`` the tier a paid call ran at (``batch``,
    ``realtime``, ``flex``): what ``on_llm_end`` callbacks see, never the message, the
    stored output or LangChain's cache."""
    if tier:
        result.llm_output = {**(result.llm_output or {}), MARKER: {"tier": tier}}


def tier_of(llm_output: object) -> str | None:
    """The tier batchain noted for a paid answer (:func:`note_tier`), or None."""
    entry = llm_output.get(MARKER) if isinstance(llm_output, dict) else None
    tier = entry.get("tier") if isinstance(entry, dict) else None
    return tier if isinstance(tier, str) else None


def source_of(message: object) -> str | None:
    """The marker's source on a model's answer, or None (paid, or not batchain's)."""
    meta = getattr(message, "response_metadata", None)
    entry = meta.get(MARKER) if isinstance(meta, dict) else None
    source = entry.get("source") if isinstance(entry, dict) else None
    return source if isinstance(source, str) else None
