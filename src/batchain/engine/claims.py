"""The chunks of a job's items a run holds, so several processes can share one job's items.

A realtime job's items are taken a chunk at a time (:data:`CHUNK` items) from the store,
whichever process runs them: the one holding the job's lease (which also reads the inputs,
and ends the job), and any number of helpers (``batchain worker`` on other machines, or
:meth:`batchain.Job.assist`). A chunk is the run's while its seat among the job's runners
holds (:class:`~batchain.engine.lifecycle.Seat`), and is given back once every item it
took from it has a result written; a chunk whose runner died is free again, and its items
without a result are run by the next process that takes it. See
:mod:`batchain.store.claims` for the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from batchain.engine.lifecycle import Lease, RunControl
from batchain.store.base import Store

__all__ = ["CHUNK", "Claims"]

#: items per chunk: small enough that a few workers share a 1,000-item job evenly, large
#: enough that claiming costs one write per hundred items
CHUNK = 100
#: how often the lease holder looks again for chunks a dead helper left, while the live
#: helpers finish theirs
LOOK_AGAIN_S = 1.0


class Claims:
    """The chunks of items this run holds; items are fed from them, and each chunk is given
    back once its items are done."""

    def __init__(
        self, store: Store, job_id: str, lease: Lease, control: RunControl, flush: Callable[[], None]
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.lease = lease
        self.control = control
        #: writes the results recorded so far, before a chunk is given back
        self.flush = flush
        #: items fed and not yet settled, by chunk
        self._open: dict[int, int] = {}
        #: chunks still being fed (not given back even when their items so far are done)
        self._feeding: set[int] = set()
        #: the chunk the inputs being read now fall in, and whether this run holds it
        self._reading: tuple[int, bool] | None = None
        self._wake = asyncio.Event()
        control.on_stop.append(self._wake.set)
        #: chunks taken by this run
        self.taken = 0

    @property
    def runner(self) -> str:
        assert self.lease.runner is not None, "the run claims its lease or seat first"
        return self.lease.runner

    async def stored(self) -> AsyncIterator[tuple[int, str]]:
        """``(idx, input JSON)`` of the stored items without a result, a free chunk at a
        time, until no free chunk is left."""
        while not self.control.stopping:
            chunk = self.store.claim_chunk(self.job_id, self.runner, CHUNK)
            if chunk is None:
                return
            self.taken += 1
            self._feeding.add(chunk)
            self._open.setdefault(chunk, 0)
            try:
                for idx, text in self.store.pending_in(self.job_id, chunk * CHUNK, (chunk + 1) * CHUNK):
                    if self.control.stopping:
                        return
                    self._open[chunk] += 1
                    yield idx, text
            finally:
                self._fed(chunk)

    def reading(self, idx: int) -> bool:
        """Input ``idx`` is read from the inputs now (by the lease holder): does this run
        hold its chunk, and so run it? (Else a helper holds it, from an earlier run that
        stopped in the middle of the chunk: the helper's next claim runs it.)"""
        chunk = idx // CHUNK
        if self._reading is None or self._reading[0] != chunk:
            self.inputs_read()
            held = self.store.take_chunk(self.job_id, chunk, self.runner)
            self._reading = (chunk, held)
            if held:
                self._feeding.add(chunk)
                self._open.setdefault(chunk, 0)
        if not self._reading[1]:
            return False
        self._open[chunk] += 1
        return True

    def inputs_read(self) -> None:
        """No more inputs are read (for now)."""
        if self._reading is not None:
            chunk, held = self._reading
            self._reading = None
            if held:
                self._fed(chunk)

    async def rest(self) -> AsyncIterator[tuple[int, str]]:
        """The lease holder, once every input is read: the free chunks, and then, while
        other runners hold items without a result, the chunks they leave when they die."""
        while not self.control.stopping:
            async for row in self.stored():
                yield row
            if self.control.stopping:
                return
            if self.store.pending_elsewhere(self.job_id, self.runner, CHUNK) == 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), LOOK_AGAIN_S)

    def settled(self, idx: int) -> None:
        """Item ``idx`` (fed from a chunk of this run) has its result recorded, or ended."""
        chunk = idx // CHUNK
        n = self._open.get(chunk)
        if n is None:
            return
        self._open[chunk] = n - 1
        if n == 1 and chunk not in self._feeding:
            self._give_back(chunk)

    def _fed(self, chunk: int) -> None:
        self._feeding.discard(chunk)
        if self._open.get(chunk) == 0:
            self._give_back(chunk)

    def _give_back(self, chunk: int) -> None:
        del self._open[chunk]
        if self.control.stopping:
            return  # its items may be pending still: the run's end frees its chunks
        self.flush()  # the results first: a chunk given back has none of its items running
        self.store.release_chunk(self.job_id, chunk, self.runner)
        self.store.commit_soon()
