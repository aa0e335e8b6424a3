"""Realtime admission: one global concurrency cap, RPM/TPM pacing per rate-limit scope,
retries, and the circuit breaker of each host (:mod:`batchain.engine.breaker`).

A *lane* is one job's share of a rate-limit scope (:mod:`batchain.engine.ratescope`: one
provider, destination, API key and model, shared by every job of the process and, through
the store, every process): its own concurrency, and the user's limits. Pacing is the
scope's: a virtual clock (GCRA) every job reserves its send slots from, limits learned from
the provider's rate-limit headers (the scope's first send goes alone to learn them), and a
429 pausing the scope for all for ``retry-after``. A 429 also halves the lane's concurrency,
which then grows back by one per success (AIMD). So a limit set too high, or none at all,
still converges on what the provider allows.

OpenAI flex's 429 "Resource Unavailable" (:attr:`FailureKind.UNAVAILABLE`) is not a rate
limit: the provider has no flex capacity, not too many of our requests. It neither halves
nor pauses the lane (every other call would wait for one call's refusal); the refused call
alone backs off (exponential, with jitter), for at most ``patience`` seconds, and then
fails with :class:`CallFailed` for its caller's fallback. Those retries do not count
against ``max_retries``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from batchain.engine.breaker import Breakers, BreakerState, reason_of
from batchain.engine.ratescope import RECHECK_S, Board, Heard, RateScope, scopes
from batchain.errors import BatchainError, LeaseLost, StoreError
from batchain.providers.base import Failure, FailureKind, RateInfo, Sent

__all__ = ["CallFailed", "JobStopping", "Lane", "Scheduler", "SchedulerStats"]


class JobStopping(BatchainError):
    """The job is stopping; the call was not sent (it runs on resume). An internal signal
    that may pass through a chain's own code on its way to the runner."""


class CallFailed(Exception):
    """A call failed for good. ``original`` is the provider's own exception.

    Internal: the call manager re-raises ``original``, so the chain sees the provider's own
    exception, never this one."""

    def __init__(self, failure: Failure, original: BaseException, attempts: int) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.original = original
        self.attempts = attempts


@dataclass(slots=True)
class SchedulerStats:
    in_flight: int = 0
    peak_in_flight: int = 0
    sent: int = 0
    succeeded: int = 0
    retries: int = 0
    rate_limited: int = 0
    #: flex requests refused with "Resource Unavailable" (not rate limits)
    unavailable: int = 0
    failed: int = 0


@dataclass(slots=True)
class Lane:
    """One job's share of a rate-limit scope: its concurrency (AIMD) and the user's limits;
    the pacing is the scope's, shared."""

    name: str
    max_concurrency: int
    scope: RateScope
    user_rpm: float | None = None
    user_tpm: float | None = None
    limit: float = 0.0
    active: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limit = float(self.max_concurrency)

    def on_rate_limited(self) -> None:
        self.limit = max(1.0, self.limit / 2)

    def on_success(self) -> None:
        if self.limit < self.max_concurrency:
            self.limit = min(float(self.max_concurrency), self.limit + 1.0 / max(self.limit, 1.0) * 4)

    async def acquire(self) -> None:
        while self.active >= int(self.limit):
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self.waiters:
                    self.waiters.remove(fut)
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        free = int(self.limit) - self.active
        for fut in self.waiters[: max(free, 0)]:
            if not fut.done():
                fut.set_result(None)


class _Refusals:
    """One call's "Resource Unavailable" refusals, and its patience with them."""

    __slots__ = ("count", "patience", "since")

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self.count = 0
        self.since: float | None = None

    def next_wait(self, backoff: float) -> float | None:
        """How long to wait before trying again; None once that would outlast the patience
        (a retry after it would be wasted: the call goes by its fallback now)."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        self.count += 1
        if now - self.since + backoff > self.patience:
            return None
        return backoff


Attempt = Callable[[], Awaitable[Sent]]
Classify = Callable[[BaseException], Failure]
Learn = Callable[[Sent | BaseException], RateInfo | None]


class Scheduler:
    def __init__(
        self,
        *,
        max_concurrency: int = 64,
        rpm: float | None = None,
        tpm: float | None = None,
        max_retries: int = 6,
        timeout: float = 120.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        breakers: Breakers | None = None,
        board: Board | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.rpm = rpm
        self.tpm = tpm
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stats = SchedulerStats()
        #: per host: repeated connection failures pause the job instead of failing items
        self.breakers = breakers
        #: where rate-limit scopes are shared with other processes (the job's store)
        self.board = board
        self._global = asyncio.Semaphore(max_concurrency)
        self._lanes: dict[str, Lane] = {}
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    def lane(self, name: str, scope: str | None = None) -> Lane:
        """This job's lane of rate-limit scope ``scope`` (default: ``name``, keyless)."""
        scope = scope or name
        lane = self._lanes.get(scope)
        if lane is None:
            lane = Lane(name, self.max_concurrency, scopes.get(scope), user_rpm=self.rpm, user_tpm=self.tpm)
            self._lanes[scope] = lane
        return lane

    def stop(self) -> None:
        """Send nothing new; calls already on the wire finish normally."""
        self._stopping = True

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def run(
        self,
        lane_name: str,
        tokens: int,
        attempt: Attempt,
        classify: Classify,
        learn: Learn,
        host: str | None = None,
        scope: str | None = None,
        *,
        timeout: float | None = None,
        patience: float = 0.0,
    ) -> Sent:
        """Send with pacing, concurrency and retries; raise :class:`CallFailed` at the end,
        or :class:`HostUnreachable` once ``host`` (``scheme://host:port``) is given up on.
        ``scope``: the call's rate-limit scope (:func:`~batchain.engine.ratescope.scope_id`);
        ``timeout``: of each attempt (default: the scheduler's); ``patience``: seconds a
        call refused as unavailable (flex) keeps retrying."""
        lane = self.lane(lane_name, scope)
        tries = 0
        refusals = _Refusals(patience)
        while True:
            if self._stopping:
                raise JobStopping()
            probe = await self._admit(host)
            try:
                outcome = await self._paced(lane, tokens, attempt, host, probe, timeout or self.timeout)
            except BaseException:
                self._probe_abandoned(host, probe)
                raise
            if outcome is None:
                continue  # the host's breaker tripped while this call waited for a slot
            sent, error = outcome
            tries += 1
            if sent is not None:
                self._reached(host, probe)
                self.stats.succeeded += 1
                lane.on_success()
                lane.scope.settle(learn(sent), Heard.ANSWER, self.board)
                return sent
            assert error is not None
            failure = classify(error)
            if failure.kind == FailureKind.UNAVAILABLE:
                self._reached(host, probe)
                self.stats.unavailable += 1
                # an answer all the same: the scope's first send must let the next ones go
                lane.scope.settle(learn(error), Heard.ERROR, self.board)
                wait = refusals.next_wait(self._backoff(refusals.count + 1, failure))
                if wait is None:
                    raise CallFailed(failure, error, tries)
                tries -= 1  # refusals are bounded by patience, not max_retries
                self.stats.retries += 1
                await asyncio.sleep(wait)
                continue
            last = not failure.retryable or tries > self.max_retries
            if failure.kind == FailureKind.UNREACHABLE and self.breakers is not None and host is not None:
                self.breakers.unreached(host, reason_of(error), probe=probe)
                if last:  # not the call's fault: pause the job rather than fail its item
                    raise self.breakers.give_up(host, reason_of(error))
            else:
                self._reached(host, probe)
            if failure.kind == FailureKind.RATE_LIMIT:
                self.stats.rate_limited += 1
                lane.on_rate_limited()
                lane.scope.rate_limited(failure.retry_after, self.board)
            # an error response carries the limits too: pace the retries
            heard = Heard.NOTHING if getattr(error, "response", None) is None else Heard.ERROR
            lane.scope.settle(learn(error), heard, self.board)
            if last:
                self.stats.failed += 1
                raise CallFailed(failure, error, tries)
            self.stats.retries += 1
            await asyncio.sleep(self._backoff(tries, failure))

    async def _admit(self, host: str | None) -> bool:
        """Wait for the host's breaker; True if this request is its probe."""
        if self.breakers is None or host is None:
            return False
        return await self.breakers.admit(host)

    def _closed(self, host: str | None) -> bool:
        """May requests go to ``host`` (its breaker closed, or none)?"""
        return self.breakers is None or host is None or self.breakers.state(host) is BreakerState.CLOSED

    def _reached(self, host: str | None, probe: bool) -> None:
        if self.breakers is not None:
            self.breakers.reached(host, probe)

    def _probe_abandoned(self, host: str | None, probe: bool) -> None:
        if probe and self.breakers is not None:
            self.breakers.probe_abandoned(host)

    async def _paced(
        self, lane: Lane, tokens: int, attempt: Attempt, host: str | None, probe: bool, timeout: float
    ) -> tuple[Sent | None, BaseException | None] | None:
        """One attempt, once the lane's concurrency, the scope's pace and the global cap
        allow it; None if by then the host's breaker has tripped (unless this is its probe).

        The lane's slot is taken before the scope's send slot, so a send slot never passes
        while its call waits for concurrency (calls held back that way would go out
        together, faster than the pace). A scope's first send, which learns its limits,
        must be settled whatever happens; the caller settles what was sent."""
        await lane.acquire()
        try:
            first = await lane.scope.admit(self.board)
            try:
                await self._pace(lane, tokens)
                async with self._global:
                    if self._stopping:
                        raise JobStopping()
                    if not (probe or self._closed(host)):
                        if first:
                            lane.scope.settle(None, Heard.NOTHING, self.board)
                        return None
                    return await self._send_once(attempt, timeout)
            except BaseException:
                if first:
                    lane.scope.settle(None, Heard.NOTHING, self.board)
                raise
        finally:
            lane.release()

    async def _pace(self, lane: Lane, tokens: int) -> None:
        """Wait for a send slot of the lane's scope. A cooldown another job hits meanwhile
        moves the slot back; limits that loosen meanwhile give a new, earlier one."""
        scope = lane.scope
        slot = await scope.take(tokens, lane.user_rpm, lane.user_tpm, self.board)
        while (left := scope.due(slot) - time.time()) > 0:
            await asyncio.sleep(min(left, RECHECK_S))
            if scope.generation != slot.generation:
                slot = await scope.take(tokens, lane.user_rpm, lane.user_tpm, self.board)

    async def _send_once(self, attempt: Attempt, timeout: float) -> tuple[Sent | None, BaseException | None]:
        self.stats.in_flight += 1
        self.stats.sent += 1
        if self.stats.in_flight > self.stats.peak_in_flight:
            self.stats.peak_in_flight = self.stats.in_flight
        self._idle.clear()
        try:
            return await asyncio.wait_for(attempt(), timeout), None
        except (asyncio.CancelledError, LeaseLost, StoreError):
            raise  # stopped, this run lost the job, or its store failed: not the provider's answer
        except Exception as exc:  # classified by the caller
            return None, exc
        finally:
            self.stats.in_flight -= 1
            if self.stats.in_flight == 0:
                self._idle.set()

    def _backoff(self, tries: int, failure: Failure) -> float:
        if failure.retry_after is not None:
            # the provider said when (a 429, or a 503 while overloaded); for a 429 the scope
            # is already paused until then. Jitter spreads the waiters out.
            return float(failure.retry_after) * (1.0 + random.random() * 0.1)
        delay: float = min(self.backoff_max, self.backoff_base * 2.0 ** (tries - 1))
        return delay * (0.5 + random.random() / 2)
