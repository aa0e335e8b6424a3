"""One rate-limit scope per (provider, destination, API key, model): the unit providers
enforce limits on, shared by every job of the process and, through the store, by every
process using it.

Pacing per job let two jobs on one quota send twice the limit, and a new job's first
burst (sent before any header told it the limit) overshot. So a scope:

- sends its first request alone (slow start): that answer's rate-limit headers give the
  limits before anything else goes out, and every later answer's headers keep them
  current. An answer with no rate-limit headers means none is enforced;
- paces every send by one virtual clock (GCRA) per dimension (requests, tokens), in
  wall-clock seconds so that processes can share it: a send reserves the next free slot
  ``cost / rate`` after the previous one. Requests may run ahead of their clock by what
  the first answer's ``remaining`` said the provider's bucket held (less a few sends of
  slack), so a scope starts with the bucket's burst, then sends at the rate and never
  drains it. A ``remaining`` of 0 waits for the next unit to come back;
- is paused by a 429 for everyone: the cooldown shifts every reserved slot by its length,
  keeping their spacing (so the waiters do not all come back at once);
- reserves a send's slot only once it is at most ``LOOKAHEAD_S`` away; sends further off
  wait in line, first come first served (:meth:`RateScope.take`). So every process's
  reservations stay near the present and processes sharing the scope interleave their
  sends: one of them reserving the slots of all its queued sends (64 sends are 6.4 s at
  600 RPM) would make the other's wait in one block behind them, each side's burst lost at
  every handover, and the one finishing last then sending alone;
- across processes, claims its capacity from the store's row of the scope
  (:meth:`batchain.store.base.Store.rate_scope`) in blocks of about a quarter of a second
  of sends, one atomic statement per block: two processes pace as one at the cost of a few
  store writes a second, whatever the rate, and a cooldown or limit one of them learns
  reaches the other at its next claim.

The key itself never leaves the process: a scope is named by a digest of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pydantic import SecretStr

from batchain.providers.base import RateInfo
from batchain.store.records import ScopeClaim, ScopeRow

__all__ = ["Board", "Heard", "RateScope", "Slot", "key_digest", "scope_id", "scopes"]

#: seconds of a scope's capacity a process claims from the store at once
BLOCK_S = 0.25
#: a send reserves its slot at most this long ahead of the scope's clock: short, so that
#: processes sharing a scope take the clock in turns of a few sends; longer than a burst
#: (which is under a second of the rate), and than an event loop's lag
LOOKAHEAD_S = 1.0
#: a waiting send looks this often whether its slot moved (limits loosened, a cooldown)
RECHECK_S = 0.5
#: sends wait this long for the scope's first answer; then one of them goes as a new
#: first send (a first send left unsettled, by a path that forgot to, never blocks a
#: scope for good)
PROBE_WAIT_S = 30.0
#: sends of the provider's bucket (as its first answer's ``remaining`` shows it) left
#: unused by a scope's first burst: room for arrival jitter
BURST_SLACK = 3
#: once a 429 was seen, learned limits are paced with this margin: at exactly the
#: provider's rate its bucket has no slack once a burst drained it, and arrival jitter alone
#: would cause more 429s; 3% lets it refill a little
MARGIN = 0.97


class Board(Protocol):
    """Where processes share a scope's clocks: the store."""

    def rate_scope(self, scope: str, claim: ScopeClaim) -> ScopeRow: ...


class Heard(StrEnum):
    """What came back from a send, for learning the scope's limits."""

    #: no response (a connection failure, a timeout, cancelled): nothing learned
    NOTHING = "nothing"
    #: an error response: its headers, if any, are learned
    ERROR = "error"
    #: an answer: its headers are the limits, and none means no limit
    ANSWER = "answer"


def key_digest(api_key: object) -> str:
    """A one-way digest of an API key naming its scope ("nokey" without one)."""
    if isinstance(api_key, SecretStr):
        api_key = api_key.get_secret_value()
    if not isinstance(api_key, str) or not api_key:
        return "nokey"
    return hashlib.sha256(b"batchain rate scope\0" + api_key.encode()).hexdigest()[:16]


def scope_id(lane: str, client: Any) -> str:
    """The scope of a call in ``lane`` (provider, destination, model) sent with ``client``
    (an SDK client: OpenAI's and Anthropic's carry ``api_key``)."""
    return f"{lane}|{key_digest(getattr(client, 'api_key', None))}"


@dataclass(frozen=True, slots=True)
class Slot:
    """A reserved send time, with the scope's cooldown shift and limit generation then."""

    at: float
    shift: float
    generation: int


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class RateScope:
    """One scope's limits and clocks. Thread-safe: jobs on other threads (other event
    loops) share it; the store's row carries it to other processes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        #: learned limits (None: none enforced, or not known yet)
        self.rpm: float | None = None
        self.tpm: float | None = None
        #: a response has told the limits (or that there are none)
        self.known = False
        self.throttled = False
        self.paused_until = 0.0
        #: seconds every reserved slot was pushed back by cooldowns so far
        self.shift = 0.0
        #: bumped when limits loosen: slots reserved before are taken again
        self.generation = 0
        self._next_request = 0.0
        self._next_token = 0.0
        #: the end of the capacity claimed from the store (per dimension)
        self._request_end = 0.0
        self._token_end = 0.0
        #: how far ahead of the request clock a send may go (None: not learned yet)
        self._burst_s: float | None = None
        self._probing = False
        #: when the first send went (``time.monotonic()``)
        self._probe_at = 0.0
        self._consulted = False
        #: the limits and burst last told the store
        self._published: tuple[float | None, float | None, float | None] = (None, None, None)
        self._waiters: list[asyncio.Future[None]] = []
        #: sends waiting to reserve a slot (:meth:`take`); only the first one looks
        self._line: deque[asyncio.Future[None]] = deque()

    # -- slow start ----------------------------------------------------------------------

    async def admit(self, board: Board | None) -> bool:
        """Wait until the limits are known; True if this send goes first, to learn them
        (it must then be :meth:`settle`\\ d whatever happens)."""
        while True:
            with self._lock:
                if not self.known and not self._consulted and board is not None:
                    self._consulted = True  # another process may know them already
                    self._merge(board.rate_scope(self.name, ScopeClaim(now=time.time())), time.time())
                if self.known:
                    return False
                if not self._probing or time.monotonic() - self._probe_at >= PROBE_WAIT_S:
                    self._probing = True
                    self._probe_at = time.monotonic()
                    return True
                left = self._probe_at + PROBE_WAIT_S - time.monotonic()
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), left)
            finally:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def settle(self, info: RateInfo | None, heard: Heard, board: Board | None) -> None:
        """A send ended: learn from what came back, and let the next one go if it was the
        first."""
        with self._lock:
            now = time.time()
            if heard is Heard.ANSWER or (heard is Heard.ERROR and info is not None):
                self._learn(info, now)
                self.known = True
            if self._probing:
                self._probing = False
                _wake(self._waiters)
                self._waiters = []
            told = (self.rpm, self.tpm, self._burst_s)
            publish = board is not None and self.known and told != self._published
            if publish:
                self._published = told
        if publish and board is not None and (told[0] or told[1]):
            self._tell(board, ScopeClaim(now=now, rpm=told[0], tpm=told[1], burst_s=told[2]))

    # -- pacing ----------------------------------------------------------------------------

    async def take(self, tokens: int, rpm: float | None, tpm: float | None, board: Board | None) -> Slot:
        """:meth:`reserve`, once the slot is at most :data:`LOOKAHEAD_S` away: until then
        the send waits in line (first come first served, across the process's jobs and
        threads), and only the first in line looks, at most every :data:`RECHECK_S`."""
        mine: asyncio.Future[None] | None = None
        try:
            while True:
                with self._lock:
                    if mine is None and self._line:
                        mine = self._join()  # others wait already: behind them
                    first = mine is None or self._line[0] is mine
                    if first:
                        slot, wait = self._reserve(tokens, rpm, tpm, board, LOOKAHEAD_S)
                        if slot is not None:
                            if mine is not None:
                                self._line.popleft()
                                mine = None
                                self._call_next()
                            return slot
                        if mine is None:
                            mine = self._join()
                    waiting = mine
                if first:
                    await asyncio.sleep(min(wait, RECHECK_S))
                elif waiting is not None:
                    await asyncio.shield(waiting)  # resolved when it is first in line
        finally:
            if mine is not None:  # cancelled while in line
                with self._lock:
                    was_first = bool(self._line) and self._line[0] is mine
                    with contextlib.suppress(ValueError):
                        self._line.remove(mine)
                    if was_first:
                        self._call_next()

    def _join(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(waiter)
        return waiter

    def _call_next(self) -> None:
        """The first in line now looks (it may be another thread's)."""
        if self._line:
            _wake([self._line[0]])

    def reserve(self, tokens: int, rpm: float | None, tpm: float | None, board: Board | None) -> Slot:
        """The next free send slot for a request of ``tokens``, however far off (see
        :meth:`_reserve`)."""
        with self._lock:
            slot, _ = self._reserve(tokens, rpm, tpm, board, None)
        assert slot is not None
        return slot

    def _reserve(
        self, tokens: int, rpm: float | None, tpm: float | None, board: Board | None, horizon: float | None
    ) -> tuple[Slot | None, float]:
        """The next free send slot for a request of ``tokens``, under the learned limits and
        the caller's own (``rpm``, ``tpm``: the user's, None for none).

        GCRA: each dimension's clock is the theoretical time of its next send; a send may go
        ``burst`` seconds ahead of the request clock (what the first answer's ``remaining``
        said the provider's bucket held, less a margin), so a scope starts with the bucket's
        burst and afterwards sends at the rate, the bucket never drained.

        With a ``horizon``, a slot whose clock is further off than that is not taken: (None,
        seconds until it would be within it). Capacity claimed from the store meanwhile stays this
        process's, for its next sends. The caller holds the lock."""
        now = time.time()
        # a user's limit below the provider's is kept without bursts
        mine = rpm is None or (self.rpm is not None and self.rpm <= rpm)
        burst = (self._burst_s or 0.0) if mine else 0.0
        rpm, tpm = _min(rpm, self.rpm), _min(tpm, self.tpm)
        request_s = 60.0 / rpm if rpm else 0.0
        token_s = tokens * 60.0 / tpm if tpm else 0.0
        start = max(now, self.paused_until)
        for _ in range(3 if board is not None else 0):
            clock = self._clock(start, request_s, token_s)
            short_r = request_s > 0 and max(start, self._next_request) + request_s > self._request_end
            short_t = token_s > 0 and max(start, self._next_token) + token_s > self._token_end
            if not (short_r or short_t):
                break
            self._claim(board, now, clock, rpm if short_r else None, token_s if short_t else 0.0)
        clock = self._clock(start, request_s, token_s)
        if horizon is not None and clock - now > horizon:
            # by the clock, not the send time: processes whose bursts differ still take
            # the clock in turns (the one with the larger burst would take it first)
            return None, clock - now - horizon
        at = start
        if request_s:
            at = max(at, self._next_request - burst)
        if token_s:
            at = max(at, self._next_token)
            self._next_token = at + token_s
        if request_s:
            self._next_request = max(self._next_request, at) + request_s
        return Slot(at, self.shift, self.generation), 0.0

    def due(self, slot: Slot) -> float:
        """When ``slot`` may send now: later by every cooldown since it was reserved."""
        return slot.at + (self.shift - slot.shift)

    def _clock(self, start: float, request_s: float, token_s: float) -> float:
        """The latest of the dimensions' clocks in use (and ``start``)."""
        clock = start
        if request_s:
            clock = max(clock, self._next_request)
        if token_s:
            clock = max(clock, self._next_token)
        return clock

    def _claim(self, board: Board | None, now: float, at: float, rpm: float | None, token_s: float) -> None:
        """Claim the next block of capacity from the store, starting no earlier than ``at``."""
        assert board is not None
        request_s = 0.0
        if rpm:
            per_block = max(1, round(rpm / 60.0 * BLOCK_S))  # whole sends: none straddles two
            request_s = per_block * 60.0 / rpm
        token_s = max(token_s, BLOCK_S) if token_s else 0.0
        row = board.rate_scope(self.name, ScopeClaim(now=now, after=at, request_s=request_s, token_s=token_s))
        if request_s:
            self._next_request = max(self._next_request, row.request_from)
            self._request_end = row.request_from + request_s
        if token_s:
            self._next_token = max(self._next_token, row.token_from)
            self._token_end = row.token_from + token_s
        self._merge(row, now)

    # -- learning ----------------------------------------------------------------------------

    def _learn(self, info: RateInfo | None, now: float) -> None:
        margin = MARGIN if self.throttled else 1.0
        rpm = info.limit_requests * margin if info is not None and info.limit_requests else None
        tpm = info.limit_tokens * margin if info is not None and info.limit_tokens else None
        if _looser(self.rpm, rpm) or _looser(self.tpm, tpm):
            self._loosened()
        self.rpm, self.tpm = rpm, tpm
        if info is None:
            return
        if self._burst_s is None and rpm and info.limit_requests and info.remaining_requests is not None:
            # remaining counts per minute: a 60th of it is what the bucket holds now; keep
            # BURST_SLACK sends of it in hand for arrival jitter
            held = info.remaining_requests / 60.0 - BURST_SLACK
            self._burst_s = max(0.0, held * 60.0 / info.limit_requests)
        # an empty bucket refills continuously: wait for the next unit, not the full reset
        if info.remaining_requests == 0 and info.reset_requests_s and rpm:
            self._pause(now + min(info.reset_requests_s, 60.0 / rpm), now)
        if info.remaining_tokens == 0 and info.reset_tokens_s:
            self._pause(now + min(info.reset_tokens_s, 1.0), now)

    def _loosened(self) -> None:
        """Limits rose or went: slots reserved at the old pace are taken again, from now
        (and capacity claimed at the old pace is given up)."""
        self.generation += 1
        self._burst_s = None  # learned again from the next answer
        self._next_request = self._next_token = 0.0
        self._request_end = self._token_end = 0.0

    def rate_limited(self, retry_after: float | None, board: Board | None) -> None:
        """A 429: every send of the scope, in every job and process, waits it out."""
        with self._lock:
            now = time.time()
            self.throttled = True
            self._burst_s = 0.0  # the bucket was not what it seemed: no burst from now on
            until = now + (retry_after or 1.0)
            self._pause(until, now)
        if board is not None:
            self._tell(board, ScopeClaim(now=now, paused_until=until, throttled=True))

    def _pause(self, until: float, now: float) -> None:
        """Cool down until ``until``: every reserved slot moves back by the new part."""
        extra = until - max(now, self.paused_until)
        if extra <= 0:
            return
        self.paused_until = until
        self.shift += extra
        self._next_request = max(self._next_request + extra, until)
        self._next_token = max(self._next_token + extra, until)

    def _tell(self, board: Board, claim: ScopeClaim) -> None:
        """Tell the other processes (through the store), and hear what they told it."""
        with self._lock:
            self._merge(board.rate_scope(self.name, claim), claim.now)

    def _merge(self, row: ScopeRow, now: float) -> None:
        """Take in what other processes told the store: limits (if none known here yet),
        the burst, their cooldowns."""
        if not self.known and (row.rpm or row.tpm):
            self.rpm, self.tpm, self.known = row.rpm, row.tpm, True
            self._published = (row.rpm, row.tpm, row.burst_s)
            _wake(self._waiters)
            self._waiters = []
        if row.throttled and not self.throttled:
            self.throttled, self._burst_s = True, 0.0  # as for a 429 of our own
        elif not self.throttled and row.burst_s is not None and row.rpm == self.rpm:
            # one burst for the scope, as its first answer showed the bucket: a process
            # whose own first answer came after another's burst saw it drained, and its
            # sends would keep to the clock while the other's go ahead of it (the scope
            # then ends when the slower one's last send is due)
            self._burst_s = max(self._burst_s or 0.0, row.burst_s)
        if row.paused_until > now:
            self._pause(row.paused_until, now)


def _looser(old: float | None, new: float | None) -> bool:
    return old is not None and (new is None or new > old)


def _wake(waiters: Iterable[asyncio.Future[None]]) -> None:
    """Resolve each waiter in its own loop (jobs on other threads wait here too)."""
    for waiter in waiters:
        loop = waiter.get_loop()
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_resolve, waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Scopes:
    """The process's scopes, by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: dict[str, RateScope] = {}

    def get(self, name: str) -> RateScope:
        with self._lock:
            scope = self._scopes.get(name)
            if scope is None:
                scope = self._scopes[name] = RateScope(name)
            return scope


#: every scope of this process
scopes = _Scopes()
