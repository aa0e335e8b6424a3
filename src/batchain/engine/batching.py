"""Batch mode: parked calls become provider batches, and provider results resolve them.

Lifecycle of a round: items run until every live one waits on a parked call; the runner
then asks :meth:`BatchCoordinator.flush` to turn the waiting calls into provider batches
(grouped by provider, destination, endpoint and model, split under every limit). Each batch
is recorded as an intent before the provider is asked to create it and gets its provider id
right after, so a crash in between is reconciled by looking the batch up at the provider,
never by creating it again. Ended batches are downloaded, matched to calls by custom_id,
and their futures resolved; calls that did not run are parked again for the next round.

Every custom id carries its batch's nonce where the provider needs it to tell batches apart
(:meth:`BatchAPI.custom_id`), and a result is applied only to the call its custom id names
in the batch it came from. How a lost create is settled, with certainty or not yet, is
:mod:`batchain.engine.reconcile`; while it is not settled its calls wait, and no batch that
may be it is cancelled.

Provider queues are resources (:mod:`batchain.engine.capacity`): per model, no more
batches or enqueued tokens are open than the caps allow, and the calls beyond wait,
unsubmitted, until a batch of the model ends. A batch the provider refuses for its size
or its queue is split or waits, never counted against its calls' retries.

Every wait has an end. A batch the provider says it does not know (404) for
``lost_after`` seconds and at least :data:`LOST_POLLS` polls is declared lost: the
provider will neither run nor bill it, so its calls are sent again in a new batch.
Cancelling treats a batch the provider does not know as gone, and stops waiting for one
it cannot reach after ``lost_after``. Other poll failures are logged with the batch id
and retried, backing off up to ``poll_max``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from batchain._failpoints import failpoint
from batchain.engine.breaker import Breakers, host_of, reason_of
from batchain.engine.budget import Budget, BudgetExhausted
from batchain.engine.capacity import Action, Capacity, Size, enqueued_tokens
from batchain.engine.promptcache import CachePlan, PrefixCaches
from batchain.engine.reconcile import Verdict, Verification
from batchain.errors import BatchCallError, BatchNotFound, CallCancelled, HostUnreachable, StoreError
from batchain.options import Tier
from batchain.providers.base import (
    BatchAPI,
    Body,
    CallRequest,
    FailureKind,
    Identification,
    ProviderAdapter,
    redact,
)
from batchain.providers.batch import (
    BatchView,
    Outcome,
    OutcomeKind,
    Refusal,
    chunk,
    counts_inputs,
    create_refusal,
    request_inputs,
)
from batchain.states import BatchStatus, CallStatus, LinkSource
from batchain.store.base import Store
from batchain.store.records import Usage

__all__ = [
    "LOST_AFTER_S",
    "LOST_POLLS",
    "BatchAPI",
    "BatchCallError",
    "BatchCoordinator",
    "CallCancelled",
    "Evicted",
    "GoRealtime",
    "Parked",
    "Waiter",
    "lost_after_seconds",
]

log = logging.getLogger("batchain.engine.batching")

#: why a call found by its key alone is not sent again
CHAIN_CHANGED = (
    "the chain changed since this call was first sent, so its request is no longer the "
    "stored one; retry the item to send the new request"
)
#: what a batch's info says when its calls were linked to their items as they were parked
_LINKED_AT_PARK = "at park"

T = TypeVar("T")

#: how long a provider must say it does not know a batch before the batch is declared lost
#: (a 404 just after a create can be the provider's eventual consistency), and in at
#: least how many polls
LOST_AFTER_S = 600.0
LOST_POLLS = 3
#: how many times a cancel that failed (not with a 404) is asked again
_CANCEL_TRIES = 3


def lost_after_seconds(option: float | None) -> float:
    """The ``lost_after`` run option, else ``$BATCHAIN_LOST_AFTER_S``, else 10 minutes."""
    if option is not None:
        return float(option)
    return float(os.environ.get("BATCHAIN_LOST_AFTER_S") or LOST_AFTER_S)


class GoRealtime(Exception):
    """Auto mode's deadline is near: send this call in realtime instead."""


class Evicted(BaseException):
    """Told to whoever waits for a call that is at a provider, when its item leaves the
    run's window until provider batch ``batch`` ends (see :class:`~batchain.engine.feed.Returns`).

    A ``BaseException``, like ``CancelledError``: the chain's own ``except Exception`` and
    fallbacks must not take it for the call's failure, so it ends the item's coroutine (or
    row), which stays pending in the store and replays when the batch has ended."""

    def __init__(self, batch: str) -> None:
        super().__init__(batch)
        self.batch = batch


class Waiter(Protocol):
    """Who waits for a parked call (:class:`~batchain.engine.calls.InFlight`, which tells
    the item coroutines and bulk rows that share it). Told once: the answer (its text and
    parsed JSON) or an exception."""

    def done(self) -> bool: ...

    def answer(self, text: str, data: Any) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


@dataclass(slots=True)
class Parked:
    """A call waiting for a provider batch, and who waits for it."""

    request: CallRequest
    adapter: ProviderAdapter
    client: Any
    future: Waiter
    item_idx: int
    attempts: int = 0
    #: set when ``request`` is only the call's identity (its body was not rebuilt): gives
    #: the full request, needed only if the call goes to a provider again
    rebuild: Callable[[], CallRequest] | None = None
    #: the provider batch it was put in (stale once it is queued again)
    batch: str | None = None
    #: not in the store yet (or to be started again): recorded with its batch's intent,
    #: one write instead of a row at parking and the batch's id in it at the flush
    unbegun: bool = False
    #: ``request.key``, read for every call many times over in a flush: a field, not a
    #: property (a rebuilt request keeps the key: see ``_materialize``)
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.request.key

    def group(self, api: BatchAPI) -> tuple[str, str, str]:
        r = self.request
        return (r.lane, r.endpoint, api.split_key(r))


@dataclass(slots=True)
class LiveBatch:
    uid: str
    #: "" while the batch is being verified
    provider_id: str
    adapter: ProviderAdapter
    api: BatchAPI
    client: Any
    next_poll: float
    interval: float
    polls: int = 0
    view: BatchView | None = None
    #: budget reserved for this batch's worst case, and what its answers cost
    reserved: Decimal = Decimal(0)
    spent: Decimal = Decimal(0)
    #: what the custom ids of its calls carry (:meth:`BatchAPI.custom_id`)
    nonce: str = ""
    #: set while a create whose answer was lost is settled (:mod:`.reconcile`)
    verifying: Verification | None = None
    #: polls in a row at which the provider said it does not know the batch, since when
    #: (wall clock; kept in the store, so runs of one poll each add up)
    missing: int = 0
    missing_since: float | None = None
    #: its model's lane (``provider|base URL|model``), whose capacity it takes
    lane: str = ""
    #: polls in a row that failed otherwise, since when (wall clock)
    failures: int = 0
    failing_since: float | None = None
    #: cancelling: whether the provider took the cancel, and how many times it was asked
    cancel_sent: bool = False
    cancel_tries: int = 0
    #: calls in it, and how many of them this run counts in its budget and capacity (all,
    #: for a batch it created; those re-attached so far, for one an earlier run left)
    size: int = 0
    held: int = 0
    #: whether collecting it links its answered calls to their items: a batch an earlier
    #: build made, which linked a call to its item only when answered (this one links
    #: them when it parks them, and says so in the batch's info)
    link_answers: bool = False
    #: it carries calls marked for the prompt cache: their worst case is a cache write
    marked: bool = False


@dataclass(slots=True)
class BatchStats:
    rounds: int = 0
    paid: int = 0
    batches_created: int = 0
    batches_collected: int = 0
    reconciled: int = 0
    requeued: int = 0
    polls: int = 0
    poll_errors: int = 0
    #: batches declared lost (see :attr:`BatchStatus.LOST`)
    lost: int = 0
    #: batches the provider refused for their size, its queue or its rate of creates
    refused: int = 0
    #: times calls of a model started (or went on, in other numbers) waiting for capacity
    capacity_waits: int = 0
    by_round: list[int] = field(default_factory=list)
    #: the answered calls of this run's batches: their tokens, what they cost, and how
    #: many have no known price (for the live progress line)
    input_tokens: int = 0
    output_tokens: int = 0
    spent: Decimal = Decimal(0)
    unpriced: int = 0


OnResult = Callable[[str, str, Usage], None]


class BatchCoordinator:
    def __init__(
        self,
        *,
        store: Store,
        job_id: str,
        max_retries: int,
        poll_min: float,
        poll_max: float,
        max_batch_size: int | None,
        on_change: Callable[[], None],
        usage_of: Callable[[ProviderAdapter, Body], Usage],
        price_of: Callable[[str, str, Usage, str, Body], Decimal | None] | None = None,
        budget: Budget | None = None,
        guard: Callable[[], Awaitable[None]] | None = None,
        lost_after: float = LOST_AFTER_S,
        on_refused: Callable[[str], None] | None = None,
        capacity: Capacity | None = None,
        breakers: Breakers | None = None,
        on_ended: Callable[[str], None] | None = None,
        prompt_cache: PrefixCaches | None = None,
    ) -> None:
        #: calls sharing a prefix grouped, and marked for the provider's prompt cache
        self.cache = prompt_cache or PrefixCaches(enabled=False)
        #: told the uid of every batch that stops being live (its evicted items go on)
        self.on_ended = on_ended
        #: told, before a collected batch stops being live, what became of its calls that
        #: no waiter in memory took (their items left the window): ``(uid, {key: answer,
        #: or None for a call queued to be sent again})``
        self.on_answered: Callable[[str, dict[str, Body | None]], None] | None = None
        #: per model: open batches, enqueued tokens, and what refusals taught
        self.capacity = capacity or Capacity(backoff_min=poll_min, backoff_max=poll_max)
        #: seconds a batch may be unknown to its provider before it is declared lost
        self.lost_after = lost_after
        #: waiting cannot help (the provider refused our key while polling, or keeps refusing
        #: to create batches): pause the job, saying why
        self.on_refused = on_refused
        #: awaited before every batch create: raises if this run lost the job's lease
        self.guard = guard
        #: per host: repeated connection failures pause the job instead of failing calls
        self.breakers = breakers
        self.price_of = price_of
        self.budget = budget
        self.store = store
        self.job_id = job_id
        self.max_retries = max_retries
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.max_batch_size = max_batch_size
        self.on_change = on_change
        self.usage_of = usage_of
        self.stats = BatchStats()
        self.cancelling = False
        #: auto mode past its deadline margin: nothing more goes to a Batch API
        self.switched = False
        #: every call waiting on a provider, by key
        self.parked: dict[str, Parked] = {}
        #: keys not yet in a provider batch, in arrival order
        self.unsubmitted: dict[str, None] = {}
        self.live: dict[str, LiveBatch] = {}
        self._apis: dict[str, BatchAPI] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: the budget held calls back in the current flush
        self._budget_short = False
        #: calls of this run that failed for good while no item of the window waited for
        #: them (evicted): an item fed again gets the failure instead of sending them anew
        self.failures: dict[str, BatchCallError] = {}

    # -- parking ------------------------------------------------------------------------

    async def park(self, parked: Parked, batch_uid: str | None) -> None:
        """Wait for a call: a new one, or one that an earlier run already put in a batch."""
        self.parked[parked.key] = parked
        if batch_uid is None or not await self._at_provider(batch_uid, parked):
            self._queue(parked)
        self.on_change()

    def park_new(self, calls: list[Parked]) -> None:
        """:meth:`park` for calls no earlier run put in a batch, many at once."""
        for parked in calls:
            self.parked[parked.key] = parked
            self._queue(parked)
        self.on_change()

    def evict(self) -> int:
        """Every call at a provider lets go of whoever waits for it (:class:`Evicted`): their
        items leave the window until the call's batch ends, and nothing of the call stays
        in memory but its batch's uid. Calls not at a provider yet stay. Returns how many
        calls let go."""
        n = 0
        unsubmitted, live = self.unsubmitted, self.live
        for key, parked in list(self.parked.items()):
            uid = parked.batch
            if uid is None or key in unsubmitted or uid not in live:
                continue
            del self.parked[key]
            parked.future.fail(Evicted(uid))
            n += 1
        if n:
            self.on_change()
        return n

    def _queue(self, parked: Parked) -> None:
        """A call at no provider: queued for the next flush, unless the job is cancelling
        or (auto mode past its deadline) sending everything realtime."""
        if self.cancelling:
            self._resolve_cancelled(parked)
        elif self.switched:
            self._go_realtime(parked)
        else:
            self.unsubmitted[parked.key] = None

    def _api(self, adapter: ProviderAdapter) -> BatchAPI:
        api = self._apis.get(adapter.name)
        if api is None:
            found = adapter.batch_api()
            if found is None:  # only batchable adapters' calls are parked
                raise TypeError(f"the {adapter.name} adapter has no Batch API")
            api = self._apis[adapter.name] = found
        return api

    async def _at_provider(self, uid: str, parked: Parked) -> bool:
        """Is batch ``uid`` at the provider (or may it be, while that is verified)? Settles
        a create that a crash left open."""
        batch = await self._live_or_resumed(uid, parked.adapter, parked.client)
        if batch is None:
            return False
        parked.batch = uid
        self._hold(batch, parked)
        return True

    async def adopt(self, uid: str, adapter: ProviderAdapter, client: Any) -> bool:
        """Make batch ``uid``, which an earlier run left, live with no call re-attached to it:
        the bulk path's resumed rows wait for it out of the window, and end from its answers
        (:meth:`BulkItems.answered`). True if it is at the provider (or may be, while that is
        verified); its whole size is counted in its model's queue at once."""
        if self.cancelling or self.switched:
            return False
        batch = await self._live_or_resumed(uid, adapter, client)
        if batch is None:
            return False
        if batch.link_answers:
            return False  # an older build's: its calls link to their items as they re-attach
        if batch.held < batch.size:
            # what its calls hold, counted once: none of them will be re-attached to count it
            self.capacity.hold(uid, batch.lane, None, requests=batch.size - batch.held)
            batch.held = batch.size
        return True

    async def _live_or_resumed(self, uid: str, adapter: ProviderAdapter, client: Any) -> LiveBatch | None:
        """Live batch ``uid``, resumed (once, however many ask at once) if an earlier run
        left it; None if it is no longer at the provider."""
        batch = self.live.get(uid)
        if batch is None:
            async with self._locks.setdefault(uid, asyncio.Lock()):
                batch = self.live.get(uid)
                if batch is None:
                    batch = await self._resume(uid, adapter, client)
                    if batch is not None:
                        self.live[uid] = batch
        return batch

    async def _resume(self, uid: str, adapter: ProviderAdapter, client: Any) -> LiveBatch | None:
        """Batch ``uid`` as an earlier run left it: live again, or None (its calls go anew)."""
        row = self.store.get_batch(uid)
        if row is None:
            return None
        batch = LiveBatch(
            uid,
            row.provider_batch_id or "",
            adapter,
            self._api(adapter),
            client,
            next_poll=0.0,
            interval=self.poll_min,
            nonce=str(row.info.get("nonce") or ""),
            missing=row.missing_polls,
            missing_since=row.missing_since,
            lane=row.lane,
            size=row.n_calls,
            link_answers=row.info.get("linked") != _LINKED_AT_PARK,
            marked=bool(row.info.get("marked")),
        )
        if row.status == BatchStatus.CREATING.value:
            if self.cancelling:
                return None  # its calls end as cancelled; the intent waits for a later run
            # the intent was recorded, the id was not: ask the provider, never resubmit blindly
            return await self._reconcile(batch, row.created_at, row.n_calls)
        if row.status in (BatchStatus.SUBMITTED.value, BatchStatus.ENDED.value) and batch.provider_id:
            return batch
        return None

    async def _reconcile(self, batch: LiveBatch, recorded: float, n: int) -> LiveBatch | None:
        """Look for the batch a create may have made (:mod:`.reconcile`): adopted when it is
        surely there, verifying while that is not known, None (abandoned) when it surely is
        not."""
        verifying = Verification.of(
            batch.api, batch.client, batch.uid, recorded, n, batch.nonce, self.store, batch.adapter.name
        )
        batch.verifying = verifying
        try:
            verdict = await verifying.look()
        except Exception as exc:
            log.warning(
                "batch %s: could not look for it at the provider (%s); looking again later, "
                "never creating it anew meanwhile",
                batch.uid,
                redact(str(exc)),
            )
            return batch
        if verdict.absent:
            self._abandon(batch)
            return None
        if verdict.ours:
            self._adopt(batch, verdict.ours)
        return batch

    def _adopt(self, batch: LiveBatch, provider_id: str) -> None:
        self.store.batch_submitted(batch.uid, provider_id)
        batch.provider_id = provider_id
        batch.verifying = None
        self.stats.reconciled += 1
        log.info("reconciled batch %s as %s", batch.uid, provider_id)

    def _abandon(self, batch: LiveBatch) -> None:
        """The create never reached the provider: forget the batch (its calls go again)."""
        self.store.batch_abandoned(batch.uid)
        self._drop(batch)
        if self.budget is not None:
            self.budget.settle(batch.reserved, Decimal(0))

    def _hold(self, batch: LiveBatch, parked: Parked) -> None:
        """A resumed run does not know what an earlier one reserved, nor what the batch
        holds in its model's queue: count them again. Never more calls than the batch has:
        an item fed again after an eviction re-attaches a call already counted."""
        if batch.held >= batch.size:
            return
        batch.held += 1
        tokens = enqueued_tokens(parked.request) if parked.rebuild is None else None
        self.capacity.hold(batch.uid, parked.request.lane, tokens)
        if self.budget is not None:
            worst = self.budget.worst_case(parked.request, Tier.BATCH, cache_write=batch.marked)
            batch.reserved += worst
            self.budget.reserved += worst

    # -- flushing ------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Send every unsubmitted call as provider batches, as far as each model's capacity
        allows (the rest stay unsubmitted). Returns batches created."""
        keys = list(self.unsubmitted)
        self.unsubmitted.clear()
        groups: dict[tuple[str, str, str], list[Parked]] = {}
        for key in keys:
            p = self.parked.get(key)
            if p is not None and self._materialize(p):
                groups.setdefault(p.group(self._api(p.adapter)), []).append(p)
        self._budget_short = False
        sending = [members for members in groups.values() if await self._may_open(members)]
        if sending:
            self.stats.rounds += 1
            self.stats.by_round.append(len(keys))
        created = 0
        for members in sending:
            created += await self._flush_group(members)
        if self._budget_short and not created and not self.live and self.budget is not None:
            raise BudgetExhausted(self.budget.describe())
        return created

    async def _may_open(self, members: list[Parked]) -> bool:
        """Whether a batch of these calls' model may be created now; if not, they wait. With
        nothing at any provider a short wait (after a refusal) is slept here."""
        lane = members[0].request.lane
        wait = self.capacity.ready_in(lane, time.monotonic())
        if wait > 0 and not self.live:
            await asyncio.sleep(wait)  # nothing else to poll meanwhile
        if self.capacity.can_open(lane, time.monotonic()):
            return True
        self.unsubmitted.update(dict.fromkeys(p.key for p in members))
        self._note_held(lane, len(members))
        return False

    async def _flush_group(self, members: list[Parked]) -> int:
        """Create the batches of one group (same model and endpoint), its calls ordered by
        prompt prefix; the primers of prefixes worth caching go first, alone, and the calls
        that share them wait for that batch to end (:mod:`.promptcache`). Returns how many."""
        api = self._api(members[0].adapter)
        await self._await_priming(members[0])
        plan = self.cache.plan(api, members)
        by_key = {p.key: p for p in members}
        created = 0
        if plan.primers:
            primers = [by_key[k] for k in plan.primers]
            for p in primers:
                p.batch = None
            created += await self._send_group(api, primers, plan)
            # a primer that did not go: the calls it held wait with it for the next flush
            self.unsubmitted.update(dict.fromkeys(self.cache.sent(plan.primers, self._live_batch_of)))
        if plan.now:
            created += await self._send_group(api, [by_key[k] for k in plan.now], plan)
        return created

    async def _await_priming(self, first: Parked) -> None:
        """The batches priming prefixes of ``first``'s model (an earlier run's, maybe in
        another process) are live, for the calls sharing them to wait on; one no longer at
        the provider primed nothing: its prefixes are primed again."""
        if self.cancelling or self.switched:
            return  # nothing is primed any more (and adopting nothing tells nothing)
        for uid in self.cache.priming(first.request.lane):
            if uid not in self.live:
                await self.adopt(uid, first.adapter, first.client)
            if uid not in self.live:
                self._requeue(self.cache.ended(uid))

    def _requeue(self, keys: list[str]) -> None:
        """Calls that waited for a priming batch go to the next flush."""
        released = [p for p in map(self.parked.get, keys) if p is not None]
        for p in released:
            self._queue(p)
        if released:
            self.on_change()

    def _live_batch_of(self, key: str) -> str | None:
        parked = self.parked.get(key)
        return parked.batch if parked is not None and parked.batch in self.live else None

    async def _send_group(self, api: BatchAPI, members: list[Parked], plan: CachePlan) -> int:
        """Create the batches of these calls of one group: split under every limit, each as
        large as the model's capacity allows now. Returns how many."""
        lane = members[0].request.lane
        uid = _new_uid()
        encode, custom_id, wire = api.encode, api.custom_id, self.cache.wire
        # one pass (at tens of thousands of calls, each pass counts): the tokens each holds
        # in the model's queue, what goes on the wire (marked for the prompt cache where
        # that pays; same key) and its line
        tokens: dict[str, int] = {}
        wired: dict[str, CallRequest] = {}
        encoded: dict[str, bytes] = {}
        by_key: dict[str, Parked] = {}
        sized: list[tuple[str, int]] = []
        for p in members:
            key = p.key
            held_tokens = tokens[key] = enqueued_tokens(p.request)
            if self._over_cap(p, held_tokens):
                continue
            request = wired[key] = wire(api, p, plan)
            line = encoded[key] = encode(custom_id(uid, key), request)
            by_key[key] = p
            sized.append((key, len(line)))
        members = list(by_key.values())
        if not members:
            return 0
        limits = self.capacity.limits(lane, api.limits)
        inputs, cap = None, self.max_batch_size
        if limits.max_inputs is not None:
            endpoint = members[0].request.endpoint  # one per group
            if counts_inputs(endpoint):
                inputs = {p.key: request_inputs(endpoint, p.request.body) for p in members}
            else:  # one input a request: the input limit is a request limit
                cap = min(cap or limits.max_inputs, limits.max_inputs)
        parts = list(chunk(sized, limits, cap, inputs))
        created = held = 0
        for n, part in enumerate(parts):
            chosen = self.capacity.admit(lane, [tokens[k] for k in part], time.monotonic())
            waiting = set(part).difference(part[i] for i in chosen)
            held += len(waiting)
            self.unsubmitted.update(dict.fromkeys(k for k in part if k in waiting))
            members, reserved = self._affordable([by_key[part[i]] for i in chosen], plan)
            if not members:
                continue
            if created:  # the lines carry the group's first batch's uid: this one has its own
                uid = _new_uid()
                if api.identification is Identification.RESULTS:
                    encoded.update(
                        (p.key, api.encode(api.custom_id(uid, p.key), wired[p.key])) for p in members
                    )
            lines = [encoded[p.key] for p in members]
            size = Size(len(members), sum(tokens[p.key] for p in members), sum(map(len, lines)))
            marked = sum(1 for p in members if p.key in plan.marked) if plan.marked else 0
            if not await self._create(api, uid, members, lines, reserved, size, marked):
                # refused or failed: the rest waits for the next flush (sized by what it taught)
                self.unsubmitted.update(dict.fromkeys(k for later in parts[n + 1 :] for k in later))
                break
            for p in members:
                p.batch = uid
            self.cache.in_batch(uid, plan, [p.key for p in members])
            created += 1
        self._note_held(lane, held)
        return created

    def _over_cap(self, parked: Parked, tokens: int) -> bool:
        """A call that can never fit ``max_enqueued_tokens`` fails (True), clearly."""
        why = self.capacity.too_large(tokens)
        if why is None:
            return False
        message = f"{why} ({_model(parked.request.lane)}): raise max_enqueued_tokens or shorten the request"
        self.store.call_failed(parked.key, message, retryable=False)
        self._fail(parked, message, None)
        return True

    def _note_held(self, lane: str, n: int) -> None:
        """Say once (not at every flush) that calls of a model wait for capacity."""
        if self.capacity.held(lane, n) and n:
            self.stats.capacity_waits += 1
            log.info(
                "%s: %d calls wait for room at the provider (%s); they go as batches of the model end",
                _model(lane),
                n,
                self.capacity.describe(lane),
            )

    def _materialize(self, parked: Parked) -> bool:
        """Give a call found by its key alone its full request before it is sent again.
        The rebuilt request must be the stored one: if the chain changed since, the call
        fails (a retry of its items sends the new request)."""
        rebuild, parked.rebuild = parked.rebuild, None
        if rebuild is None:
            return True
        try:
            request = rebuild()
        except Exception as exc:
            self._fail(parked, f"could not build the request again: {redact(str(exc))}", None)
            return False
        if request.key != parked.key:
            self._fail(parked, CHAIN_CHANGED, None)
            return False
        parked.request = request
        return True

    def _affordable(self, members: list[Parked], plan: CachePlan) -> tuple[list[Parked], Decimal]:
        """The leading calls whose worst case fits the budget; the rest wait (unsubmitted).
        A call marked for the prompt cache may write it: its worst case is that write."""
        if self.budget is None:
            return members, Decimal(0)
        total = Decimal(0)
        for n, p in enumerate(members):
            worst = self.budget.worst_case(p.request, Tier.BATCH, cache_write=p.key in plan.marked)
            if not self.budget.fits(total + worst):
                for rest in members[n:]:
                    self.unsubmitted[rest.key] = None
                members = members[:n]
                self._budget_short = True
                break
            total += worst
        self.budget.reserved += total
        return members, total

    async def _create(
        self,
        api: BatchAPI,
        uid: str,
        members: list[Parked],
        lines: list[bytes],
        reserved: Decimal,
        size: Size,
        marked: int = 0,
    ) -> bool:
        """Create one provider batch (``marked``: how many of its calls are marked for the
        prompt cache); True when its calls are at the provider (or may be, while that is
        verified)."""
        keys = [p.key for p in members]
        first = members[0]
        host = host_of(first.client)
        probe = await self._admit_create(host, members, reserved)
        if probe is None:
            return False
        recorded = time.time()
        unbegun = [p for p in members if p.unbegun]
        info: dict[str, Any] = {
            "model": first.request.model,
            "endpoint": first.request.endpoint,
            "round": self.stats.rounds,
            # every custom id of the batch carries it (Anthropic: its only name)
            "nonce": uid,
            "linked": _LINKED_AT_PARK,
        }
        if marked:  # a resumed run reserves their worst case as cache writes
            info["marked"] = marked
        self.cache.intent(uid, keys)  # committed with the intent
        self.store.batch_intent(
            uid,
            self.job_id,
            first.adapter.name,
            first.request.lane,
            keys,
            info,
            [
                (p.key, p.request.provider, p.request.model, p.request.endpoint, p.request.body_hash)
                for p in unbegun
            ],
        )
        for p in unbegun:
            p.unbegun = False
        failpoint("batch_before_create", first.adapter.name)
        try:
            if self.guard is not None:
                await self.guard()
        except BaseException:
            self._probe_abandoned(host, probe)
            raise
        try:
            provider_batch = await api.create(
                first.client, uid, self.job_id, lines, [p.request for p in members]
            )
        except Exception as exc:
            self._connected(host, probe, first, exc)
            text = redact(str(exc))
            refusal = create_refusal(getattr(exc, "status_code", None), text) if _refused(exc) else None
            if refusal is None:
                log.warning("batch create failed: %s", text)
            if await self._created_anyway(api, members, uid, recorded, reserved, exc, size, marked):
                return True
            if refusal is not None:
                lane = first.request.lane
                self._after_refusal(lane, members, size, refusal, "a new batch", _retry_after(exc))
            else:
                await self._create_failed(members, exc)
            return False
        except BaseException:
            self._probe_abandoned(host, probe)
            raise
        self._connected(host, probe, first)
        provider_id = provider_batch.id
        failpoint("batch_after_create", first.adapter.name)
        self.store.batch_submitted(uid, provider_id)
        self.stats.batches_created += 1
        self.live[uid] = LiveBatch(
            uid,
            provider_id,
            first.adapter,
            api,
            first.client,
            next_poll=time.monotonic() + self.poll_min,
            interval=self.poll_min,
            reserved=reserved,
            nonce=uid,
            lane=first.request.lane,
            size=len(members),
            held=len(members),
            marked=bool(marked),
        )
        self.capacity.opened(uid, first.request.lane, size)
        return True

    async def _admit(self, host: str | None) -> bool:
        """Wait for the host's breaker; True if this request is its probe."""
        return await self.breakers.admit(host) if self.breakers is not None else False

    async def _admit_create(self, host: str | None, members: list[Parked], reserved: Decimal) -> bool | None:
        """Wait for the host's breaker before a create: True if the create is its probe;
        None if the breaker is open (the job pauses; the calls wait for its resume)."""
        try:
            return await self._admit(host)
        except HostUnreachable:
            for p in members:
                self.unsubmitted[p.key] = None
            if self.budget is not None:
                self.budget.settle(reserved, Decimal(0))
            return None

    def _probe_abandoned(self, host: str | None, probe: bool) -> None:
        if probe and self.breakers is not None:
            self.breakers.probe_abandoned(host)

    async def _reach(self, host: str | None, via: LiveBatch, request: Callable[[], Awaitable[T]]) -> T:
        """A request to ``host`` through its breaker: it waits while the breaker probes and
        raises :class:`HostUnreachable` once it is open; the breaker hears how it went."""
        probe = await self._admit(host)
        try:
            result = await request()
        except Exception as exc:
            self._connected(host, probe, via, exc)
            raise
        except BaseException:
            self._probe_abandoned(host, probe)
            raise
        self._connected(host, probe, via)
        return result

    def _connected(
        self, host: str | None, probe: bool, via: Parked | LiveBatch, exc: Exception | None = None
    ) -> None:
        """Tell the host's breaker how a request went: reached (any answer) or not. The
        SDK retried it ``max_retries`` times before raising: every attempt counts."""
        if self.breakers is None:
            return
        if exc is None or via.adapter.classify(exc).kind != FailureKind.UNREACHABLE:
            self.breakers.reached(host, probe)
            return
        attempts = 1 + int(getattr(via.client, "max_retries", 0) or 0)
        self.breakers.unreached(host, reason_of(exc), probe=probe, attempts=attempts)

    async def _created_anyway(
        self,
        api: BatchAPI,
        members: list[Parked],
        uid: str,
        recorded: float,
        reserved: Decimal,
        exc: Exception,
        size: Size,
        marked: int,
    ) -> bool:
        """A create that raised may still have reached the provider: settle it now, as a
        resume would. True when the batch is there, or may be while that is verified: its
        calls wait on it. False when it surely is not (abandoned)."""
        first = members[0]
        batch = LiveBatch(
            uid,
            "",
            first.adapter,
            api,
            first.client,
            next_poll=time.monotonic() + self.poll_min,
            interval=self.poll_min,
            reserved=reserved,
            nonce=uid,
            lane=first.request.lane,
            size=len(members),
            held=len(members),
            marked=bool(marked),
        )
        if _refused(exc) or first.adapter.classify(exc).kind == FailureKind.UNREACHABLE:
            # a definite no, or no connection ever made (refused, not resolved, no connection
            # in time): the request never reached the provider, so nothing was created
            self._abandon(batch)
            return False
        if await self._reconcile(batch, recorded, len(members)) is None:
            return False
        if batch.verifying is None:
            self.stats.batches_created += 1  # found by its metadata
        else:
            for p in members:
                p.attempts += 1  # this create counts as an attempt, whatever it turns out to be
        self.live[uid] = batch
        for p in members:
            p.batch = uid
        self.capacity.opened(uid, first.request.lane, size)
        return True

    def _after_refusal(
        self,
        lane: str,
        members: list[Parked],
        size: Size,
        refusal: Refusal,
        what: str,
        retry_after: float | None = None,
    ) -> None:
        """The provider refused a batch for its size, its queue or its rate of creates:
        nothing in it ran. Its calls wait or go again in smaller batches, with no attempt
        counted; only a request refused alone, over the limit on its own, fails."""
        decision = self.capacity.refused(lane, size, refusal, time.monotonic(), retry_after)
        self.stats.refused += 1
        log.info(
            "%s: the provider refused %s of %d calls (%s): %s",
            _model(lane),
            what,
            size.requests,
            refusal.kind.value.replace("_", " "),
            decision.why,
        )
        for p in members:
            if decision.action is Action.FAIL:
                message = f"refused by the provider: {decision.why}"
                self.store.call_failed(p.key, message, retryable=False)
                self._fail(p, message, None)
            else:
                self._queue(p)
        if decision.action is Action.PAUSE and self.on_refused is not None:
            self.on_refused(f"{_model(lane)}: the provider refused its batches: {decision.why}")
        self.on_change()

    async def _create_failed(self, members: list[Parked], exc: Exception) -> None:
        """A create that failed: retry the calls in a later round, up to the limit. A host
        not reached costs the calls no attempt: its breaker decides when to give up."""
        status = getattr(exc, "status_code", None)
        retryable = status is None or status == 429 or status >= 500
        unreached = members[0].adapter.classify(exc).kind == FailureKind.UNREACHABLE
        for p in members:
            p.attempts += 0 if unreached else 1
            if retryable and p.attempts <= self.max_retries:
                self.unsubmitted[p.key] = None
            else:
                self._fail(p, f"batch create failed: {redact(str(exc))}", status)
        if retryable:
            retry_after = _retry_after(exc)
            await asyncio.sleep(retry_after if retry_after is not None else self.poll_min)
        self.on_change()

    # -- polling and collecting ------------------------------------------------------------------

    def next_poll_in(self) -> float | None:
        if not self.live:
            return None
        return max(0.0, min(b.next_poll for b in self.live.values()) - time.monotonic())

    async def poll_due(self, force: bool = False) -> int:
        """Poll the batches that are due (all with ``force``); collect the ended ones."""
        now = time.monotonic()
        due = [b for b in self.live.values() if force or b.next_poll <= now]
        if not due:
            return 0
        ended = await asyncio.gather(*(self._poll(b) for b in due))
        return sum(ended)

    async def _poll(self, batch: LiveBatch) -> int:
        """Poll one batch; 1 if it is settled (collected or lost), else 0."""
        self.stats.polls += 1
        if batch.verifying is not None:
            if await self._verify(batch, batch.verifying):
                return 1
        elif await self._poll_once(batch):
            return 1
        batch.polls += 1
        batch.interval = min(self.poll_max, batch.interval * 1.5)
        batch.next_poll = time.monotonic() + batch.interval
        return 0

    async def _verify(self, batch: LiveBatch, verifying: Verification) -> bool:
        """Look again at a batch whose create's answer was lost. True once it is settled."""
        try:
            return await self._settle(batch, await self._reach(host_of(batch.client), batch, verifying.look))
        except StoreError:
            raise
        except Exception as exc:  # the provider could not be listed: look again later
            self.stats.poll_errors += 1
            log.warning(
                "batch %s: could not look for it at the provider (%s); looking again later, "
                "never creating it anew meanwhile",
                batch.uid,
                redact(str(exc)),
            )
            return False

    async def _settle(self, batch: LiveBatch, verdict: Verdict) -> bool:
        """Act on a look at a verifying batch. True once it is settled: adopted and collected,
        or absent (its calls go again)."""
        if verdict.absent:
            return self._absent(batch)
        if verdict.ours:
            self._adopt(batch, verdict.ours)
            if verdict.view is not None:  # ended, and its results already read
                batch.view = verdict.view
                await self._collect(batch, verdict.view, verdict.outcomes)
                return True
        return False

    def _absent(self, batch: LiveBatch) -> bool:
        """No provider batch is the one a lost create would have made: it never reached the
        provider, so its calls are sent again (a create that raised counted an attempt)."""
        keys = self.store.batch_keys(batch.uid)
        self._abandon(batch)
        log.info("batch %s: its create never reached the provider; sending its calls again", batch.uid)
        for key in keys:
            parked = self.parked.get(key)
            if parked is None:
                continue
            if parked.attempts > self.max_retries:
                self._fail(parked, f"gave up after {self.max_retries + 1} failed batch creates", None)
            else:
                self._queue(parked)
        self.on_change()
        return True

    async def _poll_once(self, batch: LiveBatch) -> bool:
        try:
            view = await self._reach(
                host_of(batch.client), batch, lambda: batch.api.retrieve(batch.client, batch.provider_id)
            )
        except BatchNotFound:
            return self._not_found(batch)
        except StoreError:
            raise  # the store failed, not the provider: the run stops
        except Exception as exc:  # one failing batch must never block the others
            return self._poll_failed(batch, exc)
        self._found(batch)
        batch.view = view
        self.store.batch_seen(batch.uid, view.status, view.done, view.total)  # for progress
        if not view.ended:
            if self.cancelling and not batch.cancel_sent:
                await self._cancel(batch)  # the first ask failed: ask again
            return batch.uid not in self.live
        if view.refusal is not None:
            self._refused_at_provider(batch, view.refusal)
            return True
        try:
            await self._collect(batch, view)
        except StoreError:
            raise
        except Exception as exc:  # e.g. the download failed: polled and collected again
            return self._poll_failed(batch, exc)
        return True

    def _refused_at_provider(self, batch: LiveBatch, refusal: Refusal) -> None:
        """The batch ended refused as a whole (OpenAI: failed validation for its model's
        queue or its size): none of it ran or was billed. Its calls go back to pending,
        and wait or go again in smaller batches (:meth:`_after_refusal`)."""
        keys = self.store.batch_keys(batch.uid)
        self.store.batch_ended(batch.uid)
        for key in keys:
            self.store.call_requeued(key, f"batch refused by the provider: {refusal.message}")
        self.store.commit()
        self.store.batch_collected(batch.uid)
        size = self._drop(batch) or Size(len(keys), 0)
        if self.budget is not None:
            self.budget.settle(batch.reserved, Decimal(0))
        members = [p for p in map(self.parked.get, keys) if p is not None]
        what = f"batch {batch.provider_id} ({batch.uid})"
        self._after_refusal(batch.lane, members, size, refusal, what)

    def _drop(self, batch: LiveBatch) -> Size | None:
        """``batch`` is no longer live: its room in its model's queue is free again, and
        the items evicted on it go on."""
        self.live.pop(batch.uid, None)
        if self.on_ended is not None:
            self.on_ended(batch.uid)
        released = self.cache.ended(batch.uid)
        if released:  # they waited for this batch to write their prompt's cache
            failpoint("prompt_cache_released")
            self._requeue(released)
        return self.capacity.closed(batch.uid)

    def _found(self, batch: LiveBatch) -> None:
        """The provider answered about the batch: it knows it, and it can be reached."""
        batch.failures, batch.failing_since = 0, None
        if batch.missing:
            log.info("batch %s is known to the provider again", batch.provider_id)
            batch.missing, batch.missing_since = 0, None
            self.store.batch_missing(batch.uid, 0, None)

    def _not_found(self, batch: LiveBatch) -> bool:
        """The provider says it does not know the batch. Lost once it has said so for
        ``lost_after`` seconds in at least :data:`LOST_POLLS` polls (at once when
        cancelling: there is nothing left to cancel). True if lost."""
        self.stats.poll_errors += 1
        now = time.time()
        if batch.missing_since is None:
            batch.missing_since = now
        batch.missing += 1
        self.store.batch_missing(batch.uid, batch.missing, batch.missing_since)
        unknown_for = now - batch.missing_since
        if self.cancelling:
            self._lose(batch, "the provider does not know it, so there is nothing to cancel")
            return True
        if batch.missing >= LOST_POLLS and unknown_for >= self.lost_after:
            self._lose(
                batch, f"the provider has not known it for {unknown_for:.0f} s ({batch.missing} polls)"
            )
            return True
        # said at the first not-found of a streak and every tenth: never silent, never a flood
        log.log(
            _level(batch.missing),
            "batch %s (%s): the provider does not know it (%d polls over %.0f s); "
            "declared lost after %.0f s unless it shows up",
            batch.provider_id,
            batch.uid,
            batch.missing,
            unknown_for,
            self.lost_after,
        )
        return False

    def _poll_failed(self, batch: LiveBatch, exc: Exception) -> bool:
        """A poll or download failed otherwise (transient as far as we know): retried,
        backing off. When cancelling, a batch that cannot be reached for ``lost_after``
        is no longer waited for. True if it is not."""
        self.stats.poll_errors += 1
        now = time.time()
        if batch.failing_since is None:
            batch.failing_since = now
        batch.failures += 1
        failing_for = now - batch.failing_since
        log.log(
            _level(batch.failures),
            "polling batch %s (%s) failed (%d in a row over %.0f s): %s",
            batch.provider_id,
            batch.uid,
            batch.failures,
            failing_for,
            redact(str(exc)),
        )
        status = getattr(exc, "status_code", None)
        if status in (401, 403) and self.on_refused is not None and not self.cancelling:
            # waiting cannot help: the key is wrong or lacks access; nothing is lost
            self.on_refused(
                f"batch {batch.provider_id}: the provider refused access (HTTP {status}): "
                f"{redact(str(exc))}; fix the API key, then resume"
            )
            return False
        if self.cancelling and failing_for >= self.lost_after:
            self._lose(
                batch,
                f"it could not be reached for {failing_for:.0f} s while cancelling "
                "(it may still run at the provider)",
            )
            return True
        return False

    def _lose(self, batch: LiveBatch, why: str) -> None:
        """Declare ``batch`` lost: the store moves its unanswered calls back to pending, and
        the calls this run waits for are sent again (or cancelled, or sent realtime). The
        provider does not know the batch, so it bills none of it: sending its calls again
        pays for them once."""
        keys = self.store.batch_keys(batch.uid)
        reason = f"batch {batch.provider_id} lost: {why}"
        self.store.batch_lost(batch.uid, reason)
        self._drop(batch)
        self.stats.lost += 1
        if self.budget is not None:
            self.budget.settle(batch.reserved, batch.spent)
        resent = 0
        self._give_up_evicted(keys, reason)
        for key in keys:
            parked = self.parked.get(key)
            if parked is None:
                continue
            if self.cancelling:
                self._resolve_cancelled(parked)
            elif self.switched:
                self._go_realtime(parked)
            else:
                parked.attempts += 1
                if parked.attempts <= self.max_retries:
                    self.unsubmitted[key] = None
                    resent += 1
                else:
                    message = f"gave up after {parked.attempts} attempts: {reason}"
                    self.store.call_failed(key, message, retryable=False)
                    self._fail(parked, message, None)
        self.stats.requeued += resent
        if self.cancelling:
            then = "its calls are cancelled"
        elif self.switched:
            then = "its calls are sent realtime"
        else:
            then = f"{resent} of its calls are sent again" if resent else "no call of this run waits for it"
        log.warning(
            "batch %s (%s, %d calls) declared lost: %s; %s",
            batch.provider_id,
            batch.uid,
            len(keys),
            why,
            then,
        )
        self.on_change()

    def _give_up_evicted(self, keys: list[str], reason: str) -> None:
        """Calls of a lost batch that no item of the window waits for (their items were
        evicted, and go on when the batch is dropped): those out of attempts fail here, so
        their items get the failure instead of sending them again."""
        gone = [k for k in keys if k not in self.parked]
        if not gone or self.cancelling or self.switched:
            return
        for key, record in self.store.get_calls(gone).items():
            if record.status == CallStatus.PENDING and record.attempts > self.max_retries:
                message = f"gave up after {record.attempts} attempts: {reason}"
                self.store.call_failed(key, message, retryable=False)
                self.failures[key] = BatchCallError(f"{record.provider}: {message}", None)

    def lose_unreachable(self, lanes: Collection[str]) -> int:
        """At the end of a run in which every item ended: the job's batches still open at an
        endpoint (provider and base URL) that no call of this run went to, while calls of
        the same provider went to another endpoint, belong to an endpoint the job has left
        (its base URL changed). This job can no longer poll or cancel them, and nothing of
        it waits for them: they are declared lost, so none of their calls stays submitted.
        Returns how many."""
        reached = {_endpoint(lane) for lane in lanes}
        providers = {provider for provider, _ in reached}
        open_ = (BatchStatus.CREATING, BatchStatus.SUBMITTED, BatchStatus.ENDED)
        n = 0
        for row in self.store.job_batches(self.job_id, open_):
            provider, scope = _endpoint(row.lane)
            if row.id in self.live or (provider, scope) in reached or provider not in providers:
                continue
            why = f"no model of the job sends to {scope} any more, so it can be neither polled nor cancelled"
            self.store.batch_lost(row.id, f"batch {row.provider_batch_id or row.id} lost: {why}")
            self.stats.lost += 1
            n += 1
            log.warning(
                "batch %s (%s, %d calls) declared lost: %s (if that endpoint runs it, it bills it there)",
                row.provider_batch_id or row.id,
                row.id,
                row.n_calls,
                why,
            )
        return n

    async def _collect(
        self, batch: LiveBatch, view: BatchView, outcomes: list[Outcome] | None = None
    ) -> None:
        """Apply an ended batch's results (``outcomes``: already downloaded). A result is
        applied only to the call its custom id names in this batch: one that names none
        (another batch's nonce) is never applied."""
        self.store.batch_ended(batch.uid)
        keys = self.store.batch_keys(batch.uid)
        failpoint("batch_before_download")
        if outcomes is None:
            outcomes = await batch.api.outcomes(batch.client, view, keys)
        custom_id, nonce = batch.api.custom_id, batch.nonce
        key_of = {custom_id(nonce, k): k for k in keys}
        by_key: dict[str, Outcome] = {}
        strays = 0
        for o in outcomes:
            key = key_of.get(o.custom_id)
            if key is None:
                strays += 1
            else:
                by_key[key] = o
        if strays:
            log.warning(
                "batch %s (%s): %d results name no call of the batch; ignored",
                batch.uid,
                batch.provider_id,
                strays,
            )
        answered: list[tuple[str, str, Usage, str, Decimal | None]] = []
        links: list[tuple[str, str, int, str]] = []
        unclaimed: dict[str, Body | None] = {}
        # calls whose items were evicted: their attempts so far are the store's
        parked, ok = self.parked, OutcomeKind.SUCCEEDED
        gone = [k for k in keys if k not in parked and by_key.get(k, _RETRY).kind != ok]
        attempts = {k: r.attempts for k, r in self.store.get_calls(gone).items()} if gone else {}
        for key in keys:
            outcome = by_key.get(key) or Outcome(
                key, OutcomeKind.RETRY, "missing from results", None, "missing"
            )
            batch.spent += self._apply(key, outcome, answered, links, unclaimed, batch, attempts.get(key, 0))
        self.store.calls_succeeded(answered)
        if links:
            # a call is its item's from when it was parked (see CallManager.admit): these
            # links are new only for calls parked by builds that linked them when answered
            self.store.link_first(links)
        failpoint("batch_after_apply")
        self.store.commit()
        self.store.batch_collected(batch.uid)
        if self.budget is not None:
            self.budget.settle(batch.reserved, batch.spent)
        self.stats.batches_collected += 1
        if unclaimed and self.on_answered is not None:
            self.on_answered(batch.uid, unclaimed)
        self._drop(batch)
        self.on_change()

    def _count(self, usage: Usage, cost: Decimal | None) -> None:
        st = self.stats
        st.paid += 1
        st.input_tokens += usage.input_tokens
        st.output_tokens += usage.output_tokens
        if cost is None:
            st.unpriced += 1
        else:
            st.spent += cost

    def _apply(
        self,
        key: str,
        outcome: Outcome,
        answered: list[tuple[str, str, Usage, str, Decimal | None]],
        links: list[tuple[str, str, int, str]],
        unclaimed: dict[str, Body | None],
        batch: LiveBatch,
        stored_attempts: int,
    ) -> Decimal:
        """Apply one outcome to its call; returns what it cost. Answered calls and their
        links to items are added to ``answered`` and ``links``, written together. A call
        whose items were evicted (no one waits in memory) is recorded for their replay;
        ``stored_attempts`` are then its attempts so far."""
        parked = self.parked.get(key)
        if outcome.kind == OutcomeKind.SUCCEEDED:
            cost: Decimal | None = None
            body = outcome.body if outcome.data is None else outcome.data
            usage = self.usage_of(batch.adapter, body)
            if self.price_of is not None:
                provider, _, model = batch.lane.partition("|")
                cost = self.price_of(provider, model.rpartition("|")[2], usage, Tier.BATCH, body)
            answered.append((key, outcome.body, usage, Tier.BATCH, cost))
            self._count(usage, cost)
            self.cache.answered(key, usage)
            if parked is not None:
                if batch.link_answers:
                    links.append((self.job_id, key, parked.item_idx, LinkSource.PAID))
                del self.parked[key]
                if not parked.future.done():
                    parked.future.answer(outcome.body, outcome.data)
            else:
                unclaimed[key] = body
            return cost or Decimal(0)
        if outcome.kind == OutcomeKind.RETRY and not (self.cancelling or self.switched):
            attempts = parked.attempts + 1 if parked else stored_attempts
            if attempts <= self.max_retries:
                self.store.call_requeued(key, outcome.reason)
                self.stats.requeued += 1
                if parked is not None:
                    parked.attempts = attempts
                    self.unsubmitted[key] = None
                else:
                    unclaimed[key] = None
                return Decimal(0)
        if outcome.kind == OutcomeKind.RETRY and self.switched:
            self.store.call_requeued(key, "moved to realtime")
            if parked is not None:
                self._go_realtime(parked)
            return Decimal(0)
        if outcome.kind == OutcomeKind.RETRY and self.cancelling:
            self.store.call_requeued(key, "cancelled")
            if parked is not None:
                self._resolve_cancelled(parked)
            return Decimal(0)
        message = (
            outcome.body
            if outcome.kind == OutcomeKind.FAILED
            else (f"gave up after {self.max_retries + 1} attempts: {outcome.body}")
        )
        self.store.call_failed(key, message, retryable=False)
        if parked is not None:
            self._fail(parked, message, outcome.status)
        else:
            self.failures[key] = BatchCallError(f"{batch.adapter.name}: {message}", outcome.status)
        return Decimal(0)

    def _fail(self, parked: Parked, message: str, status: int | None) -> None:
        self.parked.pop(parked.key, None)
        if not parked.future.done():
            parked.future.fail(BatchCallError(f"{parked.adapter.name}: {message}", status))

    def _resolve_cancelled(self, parked: Parked) -> None:
        self.parked.pop(parked.key, None)
        self.unsubmitted.pop(parked.key, None)
        if not parked.future.done():
            parked.future.fail(CallCancelled("job cancelled"))

    def _go_realtime(self, parked: Parked) -> None:
        self.parked.pop(parked.key, None)
        self.unsubmitted.pop(parked.key, None)
        if not parked.future.done():
            parked.future.fail(GoRealtime())

    async def switch_to_realtime(self) -> int:
        """Auto mode near its deadline: cancel what is still at a provider (finished results
        are kept) and send every call not yet answered in realtime instead."""
        self.switched = True
        self.unsubmitted.update(dict.fromkeys(self.cache.release_all()))
        for key in list(self.unsubmitted):
            p = self.parked.get(key)
            if p is not None:
                self._go_realtime(p)
        n = 0
        for batch in list(self.live.values()):
            if batch.verifying is not None:
                log.info("batch %s: not cancelled while it is verified; its calls wait for it", batch.uid)
                continue
            batch.next_poll = time.monotonic()
            batch.interval = self.poll_min
            n += await self._cancel(batch)
        self.on_change()
        return n

    # -- cancel ------------------------------------------------------------------------------------

    async def cancel_all(self) -> int:
        """Cancel every live batch at its provider; results that finished are kept."""
        self.cancelling = True
        self.unsubmitted.update(dict.fromkeys(self.cache.release_all()))
        for key in list(self.unsubmitted):
            p = self.parked.get(key)
            if p is not None:
                self._resolve_cancelled(p)
        n = 0
        for batch in list(self.live.values()):
            if batch.verifying is not None:
                self._leave_unverified(batch)
                continue
            batch.next_poll = time.monotonic()
            batch.interval = self.poll_min
            n += await self._cancel(batch)
        return n

    def _leave_unverified(self, batch: LiveBatch) -> None:
        """Cancelling while a lost create is verified: no candidate is known to be ours, so
        none is cancelled. The calls end as cancelled; the intent stays open."""
        candidates = (batch.verifying.candidates if batch.verifying else None) or []
        log.warning(
            "batch %s: not cancelled at the provider: whether %s is its create is not known "
            "(only its results will tell), so it is left to run; its calls end as cancelled",
            batch.uid,
            ", ".join(candidates) or "any provider batch",
        )
        self._drop(batch)
        if self.budget is not None:
            self.budget.settle(batch.reserved, Decimal(0))
        for key in self.store.batch_keys(batch.uid):
            parked = self.parked.get(key)
            if parked is not None:
                self._resolve_cancelled(parked)

    async def _cancel(self, batch: LiveBatch) -> bool:
        """Ask the provider to cancel ``batch``; True if it took the cancel. A batch it does
        not know is gone: lost, with nothing to cancel. Any other refusal (already ended,
        or transient) is left to polling, which asks again a few times."""
        batch.cancel_tries += 1
        try:
            await batch.api.cancel(batch.client, batch.provider_id)
        except BatchNotFound:
            self._lose(batch, "the provider does not know it, so there is nothing to cancel")
            return False
        except Exception as exc:
            log.info("cancel of %s: %s", batch.provider_id, redact(str(exc)))
            batch.cancel_sent = batch.cancel_tries >= _CANCEL_TRIES  # then stop asking
            return False
        batch.cancel_sent = True
        return True


#: a result the provider did not give: the call goes again
_RETRY = Outcome("", OutcomeKind.RETRY, "missing from results", None, "missing")


def _level(streak: int) -> int:
    """A warning for the first of a streak of failed polls and every tenth, else info."""
    return logging.WARNING if streak % 10 == 1 else logging.INFO


def _endpoint(lane: str) -> tuple[str, str]:
    """A lane's provider and base URL (a lane is ``provider|base URL|model``)."""
    provider, _, rest = lane.partition("|")
    return provider, rest.rpartition("|")[0]


def _model(lane: str) -> str:
    """A lane (``provider|base URL|model``) as a reader names it: ``provider model``."""
    provider, _, rest = lane.partition("|")
    return f"{provider} {rest.rpartition('|')[2]}"


def _new_uid() -> str:
    """A batch's uid, drawn fresh (64 random bits): also the nonce its custom ids carry."""
    return "bc_" + secrets.token_hex(8)


def _refused(exc: Exception) -> bool:
    """Did the provider answer a create with a definite no (nothing was created)?"""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 409)


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    from batchain.providers._sdk import retry_after_seconds

    return retry_after_seconds(headers)
