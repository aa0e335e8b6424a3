"""RPM/TPM rate limiting per (provider, model), quantized like real providers.

Each limit is a token bucket whose capacity is one second's worth of the per-minute
limit (``limit / 60``, at least one request) refilling continuously at ``limit / 60``
per second, starting FULL.  So ``rpm=1200`` admits a burst of 20 requests, then 20/s.

A request is admitted when every configured bucket holds at least
``min(cost, capacity)``; it then debits its full cost (a bucket may go negative, so
large requests are admitted but pay back their debt before the next one).  The
request cost is 1 for RPM; for TPM it is the request's prompt tokens plus the tokens
of its (deterministic) completion.  A request costing more tokens than the whole
per-minute limit is rejected as "too large" and is not retryable.

The sandbox reports, for a configured limit: ``limit`` (per minute),
``remaining = floor(floor(level) / capacity * limit)``: only whole units in the bucket
count, so a refused request always sees 0 (``limit`` when the bucket is full)
and ``reset`` = time until the bucket is full again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BucketView", "Decision", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class BucketView:
    """A limit's state as reported in rate-limit headers."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0
    exceeded: str | None = None  # "requests" or "tokens"
    too_large: bool = False
    cost: int = 0
    requests: BucketView | None = None
    tokens: BucketView | None = None


_UNLIMITED = Decision(allowed=True)


class _Bucket:
    __slots__ = ("capacity", "level", "limit", "rate", "stamp")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.rate = limit / 60.0
        self.capacity = max(self.rate, 1.0)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.level = min(self.capacity, self.level + elapsed * self.rate)
            self.stamp = now

    def wait_for(self, cost: float) -> float:
        need = min(cost, self.capacity)
        # tolerance: a client that waited exactly retry-after must get in
        return 0.0 if self.level + 1e-6 >= need else (need - self.level) / self.rate

    def view(self) -> BucketView:
        # whole units only: a bucket holding a fraction of a request admits none
        remaining = math.floor(math.floor(max(self.level, 0.0)) / self.capacity * self.limit)
        reset = (self.capacity - self.level) / self.rate if self.level < self.capacity else 0.0
        return BucketView(self.limit, min(remaining, self.limit), reset)


class RateLimiter:
    """Not thread-safe by design: only the server's event loop calls it."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._rpm = rpm
        self._tpm = tpm
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self._rpm is not None or self._tpm is not None

    def configure(self, rpm: int | None, tpm: int | None) -> None:
        if (rpm, tpm) != (self._rpm, self._tpm):
            self._rpm, self._tpm = rpm, tpm
            self._buckets.clear()

    def reset(self) -> None:
        self._buckets.clear()

    def _bucket(self, kind: str, provider: str, model: str, limit: int, now: float) -> _Bucket:
        key = (kind, provider, model)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(limit, now)
        else:
            bucket.refill(now)
        return bucket

    def admit(self, provider: str, model: str, tokens: int) -> Decision:
        """Admit (and debit) one request of ``tokens`` tokens, or say how long to wait."""
        if self._rpm is None and self._tpm is None:
            return _UNLIMITED
        now = self._clock()
        req = self._bucket("r", provider, model, self._rpm, now) if self._rpm else None
        tok = self._bucket("t", provider, model, self._tpm, now) if self._tpm else None
        if tok is not None and tokens > tok.limit:
            return Decision(False, 0.0, "tokens", True, tokens, _view(req), tok.view())
        wait_req = req.wait_for(1) if req is not None else 0.0
        wait_tok = tok.wait_for(tokens) if tok is not None else 0.0
        if wait_req > 0 or wait_tok > 0:
            exceeded = "requests" if wait_req >= wait_tok else "tokens"
            wait = max(wait_req, wait_tok)
            return Decision(False, wait, exceeded, False, tokens, _view(req), _view(tok))
        if req is not None:
            req.level -= 1
        if tok is not None:
            tok.level -= tokens
        return Decision(True, 0.0, None, False, tokens, _view(req), _view(tok))


def _view(bucket: _Bucket | None) -> BucketView | None:
    return bucket.view() if bucket is not None else None
