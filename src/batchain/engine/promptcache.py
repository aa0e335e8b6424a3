"""Batch mode and the providers' prompt caches: calls that share a long prefix go in the
same provider batches, and where the provider needs it the prefix is marked and written
once, by a small priming batch, before the others read it.

What a provider caches and how a request is marked is the Batch API's
(:class:`~batchain.providers.promptcache.PromptCaching`); this module decides, per flush
of one model's calls:

* **Grouping.** The calls are ordered by prefix (in the order the prefixes first came),
  so that where they are split into several provider batches each prefix lands in as few
  as possible. Nothing is marked or held for it: OpenAI's cache needs nothing more.
* **Priming** (Anthropic, whose batches read only the caches earlier batches wrote: the
  requests of one batch run in parallel, so each would write). A prefix of at least the
  model's minimum cacheable length, shared by at least :data:`PRIME_MIN_CALLS` calls of
  the flush, and not marked by the user, is primed: one of its calls goes alone (with the
  other prefixes' primers) in a batch of its own, marked with a 1-hour ``cache_control``,
  and the others wait, unsent, until that batch ended. The rule: with ``n`` calls, the
  prefix costs ``2 + 0.1 (n - 1)`` times its uncached price (one 1-hour write, reads)
  instead of ``n``; from 5 calls that saves at least half of it, worth the one extra
  provider turnaround the waiting calls pay.
* **Marking.** Once the primer's answer shows the cache written (or read), every call of
  the prefix is sent marked, in this flush and later ones, while the cache is surely
  alive: :data:`TRUSTED_S` after the last batch that used it ended. An answer that shows
  no cache (the prefix was shorter than estimated) leaves the prefix unmarked for the job.

Marks go into the batch line only: a call's key, its stored request and its hash are
those of the unmarked body (:func:`batchain.providers.base.cache_neutral`), and a call
sent realtime (auto mode's deadline) goes unmarked.

**Across runs.** What became of each prefix is the job's, in the store
(:class:`~batchain.states.PrefixStatus`), so a detached job primes too: ``submit`` sends
the primers (and what needs none) and leaves; the calls they hold are no one's until a
later run (``poll``, ``wait``, a resume; maybe another process) replays their items, finds
the prefix being primed by that batch, and holds them again until it ended. The row of a
priming is written in the transaction that records its batch's intent, and its outcome in
the one that records the primer's answer, so a crash at any point neither loses the held
calls (their items are pending) nor primes a prefix twice while its cache lives: a
priming row whose batch is no longer at the provider, unanswered, is a failed priming.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from batchain.providers.base import CallRequest
from batchain.providers.promptcache import CachePrefix, PromptCaching
from batchain.states import PrefixStatus
from batchain.store.records import PrefixRecord, Usage

__all__ = ["PRIME_MIN_CALLS", "TRUSTED_S", "CachePlan", "PrefixBoard", "PrefixCaches"]

#: the fewest calls of one flush sharing a prefix for it to be primed (see above)
PRIME_MIN_CALLS = 5
#: how long after the last batch that used a written prefix it is still marked: within the
#: 1-hour lifetime that each use renews, with a margin for a batch's own duration
TRUSTED_S = 50 * 60.0


#: what became of a prefix (PRIMING: its primer is at the provider, the other calls wait;
#: WRITTEN: its calls are sent marked; UNCACHED: the primer's answer showed no cache, so
#: they are sent unmarked)
_State = PrefixStatus


class PrefixBoard(Protocol):
    """Where a job's prefixes are kept across runs (the store)."""

    def prompt_prefixes(self, job_id: str) -> list[PrefixRecord]: ...

    def prefix_priming(self, job_id: str, lane: str, prefix: str, batch_id: str, primer: str) -> None: ...

    def prefix_settled(
        self, job_id: str, lane: str, prefix: str, status: PrefixStatus, until: float
    ) -> None: ...

    def prefix_dropped(self, job_id: str, lane: str, prefix: str) -> None: ...


@dataclass(slots=True)
class _Prefix:
    state: _State
    #: the priming batch (PRIMING)
    batch: str = ""
    #: the priming call (PRIMING)
    primer: str = ""
    #: calls waiting for the priming batch to end (PRIMING)
    held: list[str] = field(default_factory=list)
    #: wall time until which it is marked (WRITTEN)
    until: float = 0.0


class _Call(Protocol):
    """A parked call, as far as this module looks at it."""

    @property
    def key(self) -> str: ...

    @property
    def request(self) -> CallRequest: ...


@dataclass(slots=True)
class CachePlan:
    """One flush of one model's calls: primers to send alone first, the calls to send now
    (ordered by prefix), and how many wait for a priming batch."""

    primers: list[str]
    now: list[str]
    held: int = 0
    #: the calls to send marked, and the prefix (lane, key) each uses
    marked: dict[str, tuple[str, str]] = field(default_factory=dict)


class PrefixCaches:
    """The prefixes of one job's batch calls, and what became of them (kept on ``board``,
    when given, for the job's later runs)."""

    def __init__(
        self,
        enabled: bool,
        board: PrefixBoard | None = None,
        job_id: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.enabled = enabled
        self._board = board
        self._job_id = job_id
        self._clock = clock
        #: whether the board's prefixes were read (once, at the first plan)
        self._loaded = board is None
        #: by (lane, prefix key)
        self._prefixes: dict[tuple[str, str], _Prefix] = {}
        #: the prefix each primer primes
        self._primers: dict[str, tuple[str, str]] = {}
        #: batches being primed and the prefixes they prime; batches carrying marked calls
        self._priming: dict[str, list[tuple[str, str]]] = {}
        self._marked: dict[str, set[tuple[str, str]]] = {}
        #: whether each Batch API caches prompts (a runtime Protocol check is slow: once)
        self._apis: dict[int, tuple[object, PromptCaching | None]] = {}
        #: calls sent marked, and primers sent, in this run (for the job's stats)
        self.marked_calls = 0
        self.primed = 0

    def _load(self) -> None:
        """The prefixes earlier runs of the job left: those being primed wait for their
        batch again (:meth:`priming`), written ones are marked until their time."""
        self._loaded = True
        if self._board is None:
            return
        for row in self._board.prompt_prefixes(self._job_id):
            where = (row.lane, row.prefix)
            state = _State(row.status)
            self._prefixes[where] = _Prefix(state, batch=row.batch_id, primer=row.primer, until=row.until)
            if state is _State.PRIMING:
                self._primers[row.primer] = where
                self._priming.setdefault(row.batch_id, []).append(where)

    def priming(self, lane: str) -> list[str]:
        """The batches priming prefixes of ``lane`` (an earlier run's among them: the caller
        makes them live, or tells :meth:`ended` they are gone)."""
        if not self._loaded:
            self._load()
        return [uid for uid, wheres in self._priming.items() if any(w[0] == lane for w in wheres)]

    def _caching(self, api: object) -> PromptCaching | None:
        """``api`` if it caches prompts and this run uses it, else None."""
        if not self.enabled:
            return None
        found = self._apis.get(id(api))
        if found is None:
            found = self._apis[id(api)] = (api, api if isinstance(api, PromptCaching) else None)
        return found[1]

    def plan(self, api: object, calls: Sequence[_Call]) -> CachePlan:
        """Order ``calls`` (one lane's) by prefix, and pick the primers and the calls
        that wait for them."""
        caching = self._caching(api)
        if caching is None:
            return CachePlan([], [c.key for c in calls])
        if not self._loaded:
            self._load()
        api = caching
        lane = calls[0].request.lane
        groups: dict[str | None, list[_Call]] = {}
        prefixes: dict[str, CachePrefix] = {}
        for c in calls:
            prefix = api.cache_prefix(c.request)
            if prefix is not None:
                prefixes[prefix.key] = prefix
            groups.setdefault(prefix.key if prefix else None, []).append(c)
        plan = CachePlan([], [])
        for name, members in groups.items():
            if name is None or not api.primes:
                plan.now.extend(c.key for c in members)
                continue
            self._plan_prefix(api, lane, prefixes[name], members, plan)
        return plan

    def _plan_prefix(
        self, api: PromptCaching, lane: str, prefix: CachePrefix, members: list[_Call], plan: CachePlan
    ) -> None:
        where = (lane, prefix.key)
        known = self._prefixes.get(where)
        if known is not None and known.state is _State.WRITTEN and known.until < self._clock():
            self._forget(where)  # surely expired: primed again if it pays
            known = None
        if known is not None and known.state is _State.PRIMING:
            known.held.extend(c.key for c in members)
            plan.held += len(members)
            return
        if known is None and self._pays(api, prefix, members):
            primer, rest = members[0], members[1:]
            self._prefixes[where] = _Prefix(_State.PRIMING, primer=primer.key, held=[c.key for c in rest])
            self._primers[primer.key] = where
            plan.primers.append(primer.key)
            plan.marked[primer.key] = where
            plan.held += len(rest)
            return
        plan.now.extend(c.key for c in members)
        if known is not None and known.state is _State.WRITTEN and not prefix.marked:
            plan.marked.update((c.key, where) for c in members)

    @staticmethod
    def _pays(api: PromptCaching, prefix: CachePrefix, members: list[_Call]) -> bool:
        model = members[0].request.model
        return (
            not prefix.marked
            and len(members) >= PRIME_MIN_CALLS
            and prefix.tokens >= api.min_cacheable(model)
        )

    def _forget(self, where: tuple[str, str]) -> None:
        """The prefix is primed again if it pays: its priming failed, or its cache may have
        expired."""
        known = self._prefixes.pop(where, None)
        if known is not None and self._board is not None:
            self._board.prefix_dropped(self._job_id, *where)

    def intent(self, uid: str, keys: Iterable[str]) -> None:
        """Batch ``uid`` is about to be recorded with these calls: its primers' prefixes are
        primed by it (kept on the board in the same transaction as the batch's intent)."""
        if not self._primers:  # most batches: no primer at all, nothing to look up per call
            return
        for key in keys:
            where = self._primers.get(key)
            prefix = self._prefixes.get(where) if where else None
            if where is None or prefix is None or prefix.state is not _State.PRIMING or prefix.batch:
                continue
            if self._board is not None:
                self._board.prefix_priming(self._job_id, where[0], where[1], uid, key)

    def sent(self, primers: Sequence[str], batch_of: Callable[[str], str | None]) -> list[str]:
        """The primers went (``batch_of``: the live batch each is in, None if not sent).
        Returns the calls to send now after all: those held for a primer that did not go."""
        released: list[str] = []
        for key in primers:
            where = self._primers.get(key)
            uid = batch_of(key)
            prefix = self._prefixes.get(where) if where else None
            if where is None or prefix is None:
                continue
            if uid is None:
                del self._primers[key]
                self._forget(where)
                released.extend(prefix.held)
                continue
            prefix.batch = uid
            self._priming.setdefault(uid, []).append(where)
            self.primed += 1
        return released

    def wire(self, api: object, parked: _Call, plan: CachePlan) -> CallRequest:
        """The request as it goes into a batch line: marked where ``plan`` says (its prefix
        was written, or it primes it)."""
        caching = self._caching(api) if parked.key in plan.marked else None
        return parked.request if caching is None else caching.mark(parked.request)

    def in_batch(self, uid: str, plan: CachePlan, keys: Sequence[str]) -> None:
        """Batch ``uid`` carries these calls of ``plan``: the prefixes its marked calls use
        live on when it ends."""
        if not plan.marked:
            return
        used = {plan.marked[k] for k in keys if k in plan.marked}
        if used:
            self.marked_calls += sum(1 for k in keys if k in plan.marked)
            self._marked[uid] = used

    def answered(self, key: str, usage: Usage) -> None:
        """A call was answered: if it primed a prefix, whether the cache was written (kept
        on the board with the answer, uncommitted: the caller commits them together)."""
        where = self._primers.pop(key, None)
        prefix = self._prefixes.get(where) if where else None
        if where is None or prefix is None or prefix.state is not _State.PRIMING:
            return
        if usage.cache_creation_tokens or usage.cache_read_tokens:
            prefix.state, prefix.until = _State.WRITTEN, self._clock() + TRUSTED_S
        else:
            prefix.state = _State.UNCACHED
        if self._board is not None:
            self._board.prefix_settled(self._job_id, where[0], where[1], prefix.state, prefix.until)

    def ended(self, uid: str) -> list[str]:
        """Batch ``uid`` is no longer live: the calls its primers held go now (their
        prefix written, or not: then unmarked, or primed again), and the prefixes it used
        live on."""
        now = self._clock()
        for where in self._marked.pop(uid, ()):
            known = self._prefixes.get(where)
            if known is not None and known.state is _State.WRITTEN:
                known.until = max(known.until, now + TRUSTED_S)
                if self._board is not None:
                    self._board.prefix_settled(self._job_id, *where, _State.WRITTEN, known.until)
        released: list[str] = []
        for where in self._priming.pop(uid, ()):
            prefix = self._prefixes.get(where)
            if prefix is None:
                continue
            released.extend(prefix.held)
            prefix.held = []
            if prefix.state is _State.PRIMING:  # its primer was not answered: prime again
                self._primers.pop(prefix.primer, None)
                self._forget(where)
        return released

    def release_all(self) -> list[str]:
        """Every call held for a priming batch (the job is cancelling, or going realtime)."""
        released: list[str] = []
        for prefix in self._prefixes.values():
            released.extend(prefix.held)
            prefix.held = []
        return released
