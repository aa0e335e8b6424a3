"""Prompt caching at the provider, as batch mode uses it: which part of a request many
requests share (its *prefix*), and how a request is marked so the provider caches it.

A provider caches the longest prefix of a prompt it saw recently and bills the tokens of
a later request that starts with it at a fraction of the input price (OpenAI: by itself,
for prompts of 1,024 tokens and more; Anthropic: up to a ``cache_control`` marker, for
prefixes of at least :func:`anthropic_min_cacheable` tokens). Batch mode puts the calls
that share a prefix in the same provider batches, and for Anthropic marks it (see
:mod:`batchain.engine.promptcache`). Marking changes the price of a request, never what
the model is asked: a call's key and its stored request stay those of the unmarked body.

Sans-I/O: pure functions over request bodies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from batchain.providers.base import CallRequest, canonical_json

__all__ = [
    "ONE_HOUR",
    "CachePrefix",
    "PrefixMemo",
    "PromptCaching",
    "anthropic_mark",
    "anthropic_min_cacheable",
    "anthropic_prefix",
    "openai_prefix",
]

#: the marker batch mode sets: Anthropic's 1-hour cache, since a batch can take that long
ONE_HOUR: Mapping[str, str] = {"type": "ephemeral", "ttl": "1h"}
#: characters per token when a prefix's tokens are estimated (as for enqueued tokens)
_CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class CachePrefix:
    """What many requests may share at their start: tools and system prompt."""

    #: names the prefix's content and its model: equal keys, equal prefixes
    key: str
    #: its size in tokens, estimated at 4 characters a token
    tokens: int
    #: the request already carries cache markers of its own: it is never marked again
    marked: bool = False


@runtime_checkable
class PromptCaching(Protocol):
    """A :class:`~batchain.providers.base.BatchAPI` whose provider caches shared prefixes
    (optional: batch mode groups and marks only the calls of Batch APIs that have it)."""

    #: whether a prefix must be marked to be cached and a batch reads only what an earlier
    #: batch wrote (Anthropic): then one request per prefix goes first, in a batch of its own
    primes: bool

    def cache_prefix(self, request: CallRequest) -> CachePrefix | None:
        """The request's shared prefix, or None when it has none worth naming."""
        ...

    def min_cacheable(self, model: str) -> int:
        """The fewest tokens a prefix of ``model`` must have to be cached."""
        ...

    def mark(self, request: CallRequest) -> CallRequest:
        """The request as sent with its prefix marked for caching (same key and hash)."""
        ...


class PrefixMemo:
    """Prefixes already computed, by the identity of the objects they were computed from.

    The requests of one template share their system prompt and tools objects, so a flush
    of 50,000 calls serializes and hashes each distinct prefix once. The objects are kept
    alive with their entry (so their ids cannot be reused), and the memo is emptied when
    it grows past ``size``."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int = 4096) -> None:
        self._entries: dict[tuple[int, ...], tuple[tuple[Any, ...], CachePrefix | None]] = {}
        self._size = size

    def get(self, parts: tuple[Any, ...], compute: Any) -> CachePrefix | None:
        ids = tuple(map(id, parts))
        found = self._entries.get(ids)
        if found is not None:
            return found[1]
        if len(self._entries) >= self._size:
            self._entries.clear()
        prefix: CachePrefix | None = compute()
        self._entries[ids] = (parts, prefix)
        return prefix


def _prefix(model: str, content: Mapping[str, Any]) -> CachePrefix:
    text = canonical_json(content)
    digest = hashlib.sha256(f"{model}\x1f{text}".encode()).hexdigest()
    return CachePrefix(digest, len(text) // _CHARS_PER_TOKEN, '"cache_control"' in text)


def anthropic_prefix(body: Mapping[str, Any], memo: PrefixMemo) -> CachePrefix | None:
    """Tools and system prompt (Anthropic caches tools, then system, then messages); None
    without a system prompt. ``marked`` if the request has a ``cache_control`` anywhere."""
    system, tools = body.get("system"), body.get("tools")
    if not system:
        return None
    model = str(body.get("model"))
    prefix = memo.get((system, tools), lambda: _prefix(model, {"system": system, "tools": tools}))
    if prefix is None or prefix.marked or not _has_marker(body.get("messages")):
        return prefix
    return CachePrefix(prefix.key, prefix.tokens, marked=True)


def _has_marker(messages: Any) -> bool:
    """Whether a message's content block carries a ``cache_control`` (the user's own)."""
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list) and any(
            isinstance(block, Mapping) and "cache_control" in block for block in content
        ):
            return True
    return False


def openai_prefix(body: Mapping[str, Any], memo: PrefixMemo) -> CachePrefix | None:
    """Tools and the first message when it is the system (or developer) prompt: what
    OpenAI's automatic cache matches on first; None without one."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[0], Mapping):
        return None
    first, tools = messages[0], body.get("tools")
    if first.get("role") not in ("system", "developer"):
        return None
    model = str(body.get("model"))
    return memo.get((first, tools), lambda: _prefix(model, {"first": first, "tools": tools}))


#: the shortest prefix each model caches (Anthropic's prompt-caching docs); others: 1,024
_MIN_CACHEABLE = (
    (("claude-opus-4-5", "claude-opus-4-6", "claude-haiku-4-5"), 4096),
    (("claude-sonnet-4-6", "claude-3-5-haiku", "claude-3-haiku", "claude-haiku-3"), 2048),
)


def anthropic_min_cacheable(model: str) -> int:
    """Tokens a cached prefix needs for ``model``: below it a marker writes and reads
    nothing (and costs nothing)."""
    for prefixes, tokens in _MIN_CACHEABLE:
        if model.startswith(prefixes):
            return tokens
    return 1024


def anthropic_mark(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with a 1-hour ``cache_control`` on the last block of its system prompt
    (a string system prompt becomes the one text block it is equivalent to). The rest of
    the body is shared, not copied."""
    system = body.get("system")
    if isinstance(system, str):
        blocks: list[Any] = [{"type": "text", "text": system, "cache_control": dict(ONE_HOUR)}]
    elif isinstance(system, list) and system and isinstance(system[-1], Mapping):
        blocks = [*system[:-1], {**system[-1], "cache_control": dict(ONE_HOUR)}]
    else:
        return dict(body)
    return {**body, "system": blocks}
