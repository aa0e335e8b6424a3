"""Batch mode: parked calls become provider batches, and provider results resolve them.

Lifecycle of a round: items run until every live one waits on a parked call; the runner
then asks :meth:`BatchCoordinator.flush` to turn the waiting calls into provider batches
(grouped by provider, destination, endpoint and model, split under every limit). Each batch
is recorded as an intent before the provider is asked to create it and gets its provider id
right after, so a crash in between is reconciled by looking the batch up at the provider,
never by creating it again. Ended batches are downloaded, matched to calls by custom_id,
and their futures resolved; calls that did not run are parked again for the next round.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from batchain._failpoints import failpoint
from batchain.engine.breaker import Breakers, host_of, reason_of
from batchain.engine.budget import Budget, BudgetExhausted
from batchain.errors import BatchCallError, CallCancelled, HostUnreachable
from batchain.options import Tier
from batchain.providers.base import (
    BatchAPI,
    BatchIntent,
    Body,
    CallRequest,
    FailureKind,
    ProviderAdapter,
    ProviderBatch,
    redact,
)
from batchain.providers.batch import BatchView, Outcome, OutcomeKind, chunk
from batchain.states import BatchStatus, LinkSource
from batchain.store.base import Store
from batchain.store.records import Usage

__all__ = [
    "BatchAPI",
    "BatchCallError",
    "BatchCoordinator",
    "CallCancelled",
    "GoRealtime",
    "Parked",
    "Waiter",
]

log = logging.getLogger("batchain.engine.batching")
T = TypeVar("T")


class GoRealtime(Exception):
    """Auto mode's deadline is near: send this call in realtime instead."""


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

    @property
    def key(self) -> str:
        return self.request.key

    def group(self, api: BatchAPI) -> tuple[str, str, str]:
        r = self.request
        return (r.lane, r.endpoint, api.split_key(r))


@dataclass(slots=True)
class LiveBatch:
    uid: str
    provider_id: str
    adapter: ProviderAdapter
    api: BatchAPI
    client: Any
    next_poll: float
    interval: float
    polls: int = 0
    failures: int = 0
    view: BatchView | None = None
    #: budget reserved for this batch's worst case, and what its answers cost
    reserved: Decimal = Decimal(0)
    spent: Decimal = Decimal(0)


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
    by_round: list[int] = field(default_factory=list)


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
        price_of: Callable[[CallRequest, Usage, str, Body], Decimal | None] | None = None,
        budget: Budget | None = None,
        guard: Callable[[], Awaitable[None]] | None = None,
        breakers: Breakers | None = None,
    ) -> None:
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
        """Is batch ``uid`` at the provider? Settles a create that a crash left open."""
        if uid in self.live:
            self._hold(self.live[uid], parked)
            return True
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            if uid in self.live:
                return True
            row = self.store.get_batch(uid)
            if row is None:
                return False
            api = self._api(parked.adapter)
            provider_id = row.provider_batch_id
            if row.status == BatchStatus.CREATING.value:
                # the intent was recorded, the id was not: ask the provider, never resubmit
                taken = {
                    b.provider_batch_id for b in self.store.job_batches(self.job_id) if b.provider_batch_id
                }
                intent = BatchIntent(uid, row.created_at, row.n_calls, frozenset(taken))
                found = await api.find_created(parked.client, intent)
                if found is None:
                    self.store.batch_abandoned(uid)
                    return False
                provider_id = found.id
                self.store.batch_submitted(uid, provider_id)
                self.stats.reconciled += 1
                log.info("reconciled batch %s as %s", uid, provider_id)
            elif row.status not in (BatchStatus.SUBMITTED.value, BatchStatus.ENDED.value):
                return False
            if provider_id is None:  # submitted and ended batches always have their id
                return False
            self.live[uid] = LiveBatch(
                uid, provider_id, parked.adapter, api, parked.client, next_poll=0.0, interval=self.poll_min
            )
            self._hold(self.live[uid], parked)
            return True

    def _hold(self, batch: LiveBatch, parked: Parked) -> None:
        """A resumed run does not know what an earlier one reserved: reserve it again."""
        if self.budget is not None:
            worst = self.budget.worst_case(parked.request, Tier.BATCH)
            batch.reserved += worst
            self.budget.reserved += worst

    # -- flushing ------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Send every unsubmitted call as provider batches. Returns batches created."""
        keys = list(self.unsubmitted)
        self.unsubmitted.clear()
        groups: dict[tuple[str, str, str], list[Parked]] = {}
        for key in keys:
            p = self.parked.get(key)
            if p is not None and self._materialize(p):
                groups.setdefault(p.group(self._api(p.adapter)), []).append(p)
        created = 0
        self.stats.rounds += 1
        self.stats.by_round.append(len(keys))
        for members in groups.values():
            api = self._api(members[0].adapter)
            encoded = {p.key: api.encode(p.key, p.request) for p in members}
            by_key = {p.key: p for p in members}
            sized = [(k, len(v)) for k, v in encoded.items()]
            for part in chunk(sized, api.limits, self.max_batch_size):
                members, reserved = self._affordable([by_key[k] for k in part])
                if members:
                    await self._create(api, members, [encoded[p.key] for p in members], reserved)
                    created += 1
        if self.unsubmitted and not created and not self.live and self.budget is not None:
            raise BudgetExhausted(self.budget.describe())
        return created

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
            self._fail(
                parked,
                "the chain changed since this call was first sent, so its request is no longer "
                "the stored one; retry the item to send the new request",
                None,
            )
            return False
        parked.request = request
        return True

    def _affordable(self, members: list[Parked]) -> tuple[list[Parked], Decimal]:
        """The leading calls whose worst case fits the budget; the rest wait (unsubmitted)."""
        if self.budget is None:
            return members, Decimal(0)
        total = Decimal(0)
        for n, p in enumerate(members):
            worst = self.budget.worst_case(p.request, Tier.BATCH)
            if not self.budget.fits(total + worst):
                for rest in members[n:]:
                    self.unsubmitted[rest.key] = None
                members = members[:n]
                break
            total += worst
        self.budget.reserved += total
        return members, total

    async def _create(
        self, api: BatchAPI, members: list[Parked], lines: list[bytes], reserved: Decimal
    ) -> None:
        uid = "bc_" + secrets.token_hex(8)
        keys = [p.key for p in members]
        first = members[0]
        host = host_of(first.client)
        probe = await self._admit_create(host, members, reserved)
        if probe is None:
            return
        self.store.batch_intent(
            uid,
            self.job_id,
            first.adapter.name,
            first.request.lane,
            keys,
            {
                "model": first.request.model,
                "endpoint": first.request.endpoint,
                "round": self.stats.rounds,
            },
        )
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
            # unknown whether it reached the provider: settle it now, as a resume would
            log.warning("batch create failed: %s", redact(str(exc)))
            found = await self._find_safely(api, first, uid, len(keys), host)
            if found is None:
                self.store.batch_abandoned(uid)
                if self.budget is not None:
                    self.budget.settle(reserved, Decimal(0))
                await self._create_failed(members, exc)
                return
            provider_batch = found
        except BaseException:
            self._probe_abandoned(host, probe)
            raise
        else:
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
        )

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

    async def _find_safely(
        self, api: BatchAPI, via: Parked, uid: str, n: int, host: str | None
    ) -> ProviderBatch | None:
        try:
            intent = BatchIntent(uid, time.time() - 5, n, frozenset(self.live_provider_ids()))
            found = await api.find_created(via.client, intent)
        except Exception as exc:
            self._connected(host, False, via, exc)
            return None
        self._connected(host, False, via)
        return found

    def live_provider_ids(self) -> list[str]:
        return [b.provider_id for b in self.live.values()]

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
        self.stats.polls += 1
        try:
            view = await self._reach(
                host_of(batch.client), batch, lambda: batch.api.retrieve(batch.client, batch.provider_id)
            )
            batch.view = view
            if view.ended:
                await self._collect(batch, view)
                return 1
        except Exception as exc:  # one failing batch must never block the others
            self.stats.poll_errors += 1
            batch.failures += 1
            log.warning("polling batch %s failed: %s", batch.provider_id, redact(str(exc)))
        batch.polls += 1
        batch.interval = min(self.poll_max, batch.interval * 1.5)
        batch.next_poll = time.monotonic() + batch.interval
        return 0

    async def _collect(self, batch: LiveBatch, view: BatchView) -> None:
        self.store.batch_ended(batch.uid)
        keys = self.store.batch_keys(batch.uid)
        failpoint("batch_before_download")
        outcomes = {o.custom_id: o for o in await batch.api.outcomes(batch.client, view, keys)}
        answered: list[tuple[str, str, Usage, str, Decimal | None]] = []
        links: list[tuple[str, str, int, str]] = []
        for key in keys:
            outcome = outcomes.get(key) or Outcome(
                key, OutcomeKind.RETRY, "missing from results", None, "missing"
            )
            batch.spent += self._apply(key, outcome, answered, links, batch.adapter)
        self.store.calls_succeeded(answered)
        self.store.link_calls(links)
        failpoint("batch_after_apply")
        self.store.commit()
        self.store.batch_collected(batch.uid)
        if self.budget is not None:
            self.budget.settle(batch.reserved, batch.spent)
        self.stats.batches_collected += 1
        del self.live[batch.uid]
        self.on_change()

    def _apply(
        self,
        key: str,
        outcome: Outcome,
        answered: list[tuple[str, str, Usage, str, Decimal | None]],
        links: list[tuple[str, str, int, str]],
        adapter: ProviderAdapter,
    ) -> Decimal:
        """Apply one outcome to its call; returns what it cost. Answered calls and their
        links to items are added to ``answered`` and ``links``, written together."""
        parked = self.parked.get(key)
        if outcome.kind == OutcomeKind.SUCCEEDED:
            cost: Decimal | None = None
            body = outcome.body if outcome.data is None else outcome.data
            if parked is not None:
                usage = self.usage_of(parked.adapter, body)
                if self.price_of is not None:
                    cost = self.price_of(parked.request, usage, Tier.BATCH, body)
            else:  # nobody in this run waits for it (yet): record it for a later replay
                usage = self.usage_of(adapter, body)
            answered.append((key, outcome.body, usage, Tier.BATCH, cost))
            self.stats.paid += 1
            if parked is not None:
                links.append((self.job_id, key, parked.item_idx, LinkSource.PAID))
                del self.parked[key]
                if not parked.future.done():
                    parked.future.answer(outcome.body, outcome.data)
            return cost or Decimal(0)
        if outcome.kind == OutcomeKind.RETRY and not (self.cancelling or self.switched):
            attempts = (parked.attempts if parked else 0) + 1
            if attempts <= self.max_retries:
                self.store.call_requeued(key, outcome.reason)
                self.stats.requeued += 1
                if parked is not None:
                    parked.attempts = attempts
                    self.unsubmitted[key] = None
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
        for key in list(self.unsubmitted):
            p = self.parked.get(key)
            if p is not None:
                self._go_realtime(p)
        n = 0
        for batch in list(self.live.values()):
            try:
                await batch.api.cancel(batch.client, batch.provider_id)
                n += 1
            except Exception as exc:  # already ended: polling collects it
                log.info("cancel of %s: %s", batch.provider_id, redact(str(exc)))
            batch.next_poll = time.monotonic()
            batch.interval = self.poll_min
        self.on_change()
        return n

    # -- cancel ------------------------------------------------------------------------------------

    async def cancel_all(self) -> int:
        """Cancel every live batch at its provider; results that finished are kept."""
        self.cancelling = True
        for key in list(self.unsubmitted):
            p = self.parked.get(key)
            if p is not None:
                self._resolve_cancelled(p)
        n = 0
        for batch in list(self.live.values()):
            try:
                await batch.api.cancel(batch.client, batch.provider_id)
                n += 1
            except Exception as exc:  # already ended, or a transient error: polling settles it
                log.info("cancel of %s: %s", batch.provider_id, redact(str(exc)))
            batch.next_poll = time.monotonic()
            batch.interval = self.poll_min
        return n


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    from batchain.providers._sdk import retry_after_seconds

    return retry_after_seconds(headers)
