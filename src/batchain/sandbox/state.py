"""Everything a running sandbox remembers, owned by the server's event loop.

Only the ledger is read from other threads (it has its own lock); everything else
is touched by the loop alone, so it needs no locking.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.ledger import Ledger
from batchain.sandbox.limits import RateLimiter

__all__ = ["BatchStore", "SandboxState"]

logger = logging.getLogger("batchain.sandbox")

_TICK_S = 0.01
_WORK_PER_TICK = 2000  # batch items processed before yielding to realtime traffic


class BatchStore(Protocol):
    """A provider's batches, advanced in the background by :meth:`SandboxState.run_ticker`."""

    def active(self) -> bool: ...

    def step(self, now: float, budget: int) -> int:
        """Advance batches to ``now`` doing at most ~``budget`` items; returns items done."""
        ...

    def clear(self) -> None: ...

    def forget(self, batch_ids: Collection[str] | None = None) -> list[str]:
        """Forget batches (all when None), as a provider that no longer knows them."""
        ...


class SandboxState:
    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.ledger = Ledger()
        self.limiter = RateLimiter(self.config.rpm, self.config.tpm)
        self.rng = random.Random(self.config.seed)
        self.flaky_seen: dict[str, int] = {}
        self.prompt_cache: set[str] = set()
        #: prompt caches written by batch requests: prefix key -> (the batch that wrote
        #: it, when it expires); batches read only these (see anthropic.messages)
        self.batch_prompt_cache: dict[str, tuple[str, float]] = {}
        self.batch_create_429_left = self.config.batch_create_429
        self.stores: list[BatchStore] = []
        self.started = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None  # set once serving
        self._wakeup: asyncio.Event | None = None

    # -- knobs -------------------------------------------------------------------------

    def configure(self, changes: Mapping[str, Any]) -> SandboxConfig:
        new = self.config.merged(changes)
        if new.seed != self.config.seed:
            self.rng = random.Random(new.seed)
        if "batch_create_429" in changes:
            self.batch_create_429_left = new.batch_create_429
        self.config = new
        self.limiter.configure(new.rpm, new.tpm)
        return new

    def reset(self) -> None:
        """Clear ledger, batches, files, limiter, caches and fault counters (keep knobs)."""
        self.ledger.clear()
        self.limiter.reset()
        self.rng = random.Random(self.config.seed)
        self.flaky_seen.clear()
        self.prompt_cache.clear()
        self.batch_prompt_cache.clear()
        self.batch_create_429_left = self.config.batch_create_429
        for store in self.stores:
            store.clear()

    def forget_batches(self, batch_ids: Collection[str] | None = None) -> list[str]:
        """Forget batches of every provider (all when None): from now on they are unknown
        (404), like batches a provider no longer knows. The ledger is kept."""
        self.advance()  # items due by now have run (and been billed) before they are forgotten
        return [batch_id for store in self.stores for batch_id in store.forget(batch_ids)]

    # -- fault helpers -----------------------------------------------------------------

    def roll(self, rate: float) -> bool:
        """True with probability ``rate`` (seeded; no RNG draw when the rate is 0)."""
        return rate > 0 and self.rng.random() < rate

    def flaky_fails(self, digest: str, times: int) -> bool:
        """Count one sighting of ``digest``; True while it was seen at most ``times`` times."""
        seen = self.flaky_seen.get(digest, 0) + 1
        self.flaky_seen[digest] = seen
        return seen <= times

    def take_batch_create_429(self) -> bool:
        if self.batch_create_429_left > 0:
            self.batch_create_429_left -= 1
            return True
        return False

    # -- background batch processing -------------------------------------------------

    def register(self, store: BatchStore) -> None:
        self.stores.append(store)

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def advance(self, budget: int | None = None) -> int:
        """Advance every batch to now (unbounded work unless ``budget`` is given)."""
        now = time.time()
        done = 0
        for store in self.stores:
            done += store.step(now, budget if budget is not None else 1 << 62)
        return done

    async def run_ticker(self) -> None:
        """Advance batches progressively so that results exist even if nobody polls."""
        self._wakeup = asyncio.Event()
        while True:
            if not any(store.active() for store in self.stores):
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                done = self.advance(_WORK_PER_TICK)
            except Exception:  # keep the ticker alive; the failing batch is logged
                logger.exception("sandbox: batch processing step failed")
                done = 0
            # a backlog keeps the loop busy, but realtime requests still interleave
            await asyncio.sleep(0 if done >= _WORK_PER_TICK else _TICK_S)
