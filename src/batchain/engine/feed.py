"""Feeding: items start from the job's inputs as places in the run's window free up.

The window bounds how many items run or wait at once, so memory stays flat however many
inputs there are. On the bulk path items start a chunk at a time, as rows.

In batch mode an item whose calls are all at a provider leaves the window (it is
*evicted*: its coroutine or row ends, and it stays pending in the store), so the next
inputs can reach their calls and every item's calls of a stage go to the provider at
once, whatever their number. :class:`Returns` keeps which provider batch each evicted item
waits for (its index, nothing more); when that batch ends, the item is fed again and its
chain replays from the store up to its next call.
"""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from typing import Any, Protocol

from batchain.engine.bulk import Wait
from batchain.engine.inputs import InputSource
from batchain.engine.lifecycle import RunControl

__all__ = ["Feeder", "ItemRows", "Returns", "Row", "RowSink", "Window"]

#: items the bulk path builds and parks at a time
_BULK_CHUNK = 1000


class Window:
    """Places for items that run or wait at once.

    While a round's batches are being created (uploaded), the round can *lend* the feeder
    more places, so the next items are built while the provider takes the upload; the loan
    ends when the round's items have left the window."""

    def __init__(self, size: int, control: RunControl, changed: asyncio.Event) -> None:
        self.size = size
        self.control = control
        self.changed = changed
        self._freed = asyncio.Event()
        self._waiting = False
        #: places lent beyond ``size`` (see :meth:`lend`)
        self.lent = 0
        #: places taken and not released
        self.in_use = 0
        #: items started in this run
        self.started = 0
        #: items started in a lent place (built while a round uploaded)
        self.borrowed = 0

    @property
    def full(self) -> bool:
        return self.in_use >= self.size + self.lent

    @property
    def blocked(self) -> bool:
        """The feeder waits for a place and none is free: the items in the window are all
        there will be. (A place released but not yet taken by the feeder is free.)"""
        return self._waiting and self.full

    def take_free(self) -> bool:
        """A place for the next item if one is free now and the run goes on; else False,
        and :meth:`take` decides (most items find a place free: no coroutine for those)."""
        if self.full or self.control.stopping:
            return False
        self._took()
        return True

    async def take(self, before_waiting: Callable[[], Awaitable[None]] | None = None) -> bool:
        """A place for the next item; False if the run is stopping."""
        if self.full:
            if before_waiting is not None:
                await before_waiting()
            self._waiting = True
            self.changed.set()
            try:
                while self.full and not self.control.stopping:
                    self._freed.clear()
                    await self._freed.wait()
            finally:
                self._waiting = False
        if self.control.stopping:
            return False
        self._took()
        return True

    def _took(self) -> None:
        if self.in_use >= self.size:
            self.borrowed += 1
        self.in_use += 1
        self.started += 1

    def release(self) -> None:
        self.in_use -= 1
        self._freed.set()

    def lend(self, n: int) -> None:
        """Let ``n`` more items in until :meth:`reclaim`."""
        self.lent = n
        self._freed.set()

    def reclaim(self) -> None:
        """End the loan: places free again only below ``size``."""
        self.lent = 0

    def wake(self) -> None:
        """Let a feeder waiting for a place see that the run is stopping."""
        self._freed.set()


class Returns:
    """Evicted items: which provider batch each waits for, until it ends; then ready to be
    fed again. An item costs 8 bytes here (its index), nothing else in memory."""

    def __init__(self, live: Collection[str], changed: asyncio.Event) -> None:
        #: the run's live provider batches (uids): an item evicted on a batch that already
        #: ended is ready at once
        self._live = live
        self._changed = changed
        self._by_batch: dict[str, array[int]] = {}
        self._ready: deque[int] = deque()
        self._wake = asyncio.Event()
        #: items waiting on a provider batch, out of the window
        self.waiting = 0
        #: times an item left the window, and was fed again
        self.left = 0
        self.fed_again = 0

    def evicted(self, idx: int, batch: str) -> None:
        """Item ``idx`` left the window until provider batch ``batch`` ends."""
        self.left += 1
        self.keep(idx, batch)

    def parked(self, batch: str, idxs: array[int]) -> None:
        """Items ``idxs`` of a resumed run, never in its window, wait for live provider
        batch ``batch`` (see :meth:`BulkItems.park_resumed`)."""
        self.left += len(idxs)
        self._by_batch.setdefault(batch, array("q")).extend(idxs)
        self.waiting += len(idxs)

    def keep(self, idx: int, batch: str) -> None:
        """Item ``idx``, out of the window, waits for provider batch ``batch``."""
        if batch not in self._live:
            self._ready.append(idx)
            self._wake.set()
            return
        idxs = self._by_batch.get(batch)
        if idxs is None:  # not setdefault: that would make an array for every item
            idxs = self._by_batch[batch] = array("q")
        idxs.append(idx)
        self.waiting += 1

    def ended(self, batch: str) -> None:
        """Provider batch ``batch`` ended (collected, lost, refused, abandoned): its items
        go on."""
        idxs = self._by_batch.pop(batch, None)
        if idxs:
            self.waiting -= len(idxs)
            self._ready.extend(idxs)
            self._wake.set()
            self._changed.set()

    def claim(self, batch: str) -> array[int]:
        """The items evicted on live batch ``batch``, taken out: the claimer finishes them,
        or hands them back with :meth:`keep`."""
        idxs = self._by_batch.pop(batch, None)
        if idxs is None:
            return array("q")
        self.waiting -= len(idxs)
        return idxs

    @property
    def ready(self) -> int:
        return len(self._ready)

    def take(self, n: int) -> list[int]:
        """Up to ``n`` ready items, in the order they became ready."""
        out: list[int] = []
        ready = self._ready
        while ready and len(out) < n:
            out.append(ready.popleft())
        if not ready:
            self._wake.clear()
        self.fed_again += len(out)
        return out

    async def wait(self) -> None:
        """Until an item is ready."""
        await self._wake.wait()

    @property
    def pending(self) -> bool:
        """Does any evicted item wait, or wait to be fed again?"""
        return self.waiting > 0 or bool(self._ready)


#: starts an item's coroutine: (idx, value)
StartItem = Callable[[int, Any], None]

#: an item as the feeder hands it on: ``(idx, value, wait)`` (see :meth:`ItemRows.items`)
Row = tuple[int, Any, Wait | None]


class ItemRows(Protocol):
    """Where the feeder reads items (:class:`~batchain.engine.inputs.Inputs`)."""

    def items(
        self,
        inputs: InputSource | None,
        *,
        waits: bool = False,
        skip_batches: Collection[str] = (),
        skipped: int = 0,
    ) -> AsyncIterator[Row]:
        """Stored items without a result, then new inputs; with ``waits``, each with the
        call an earlier run noted it waits for; the ``skipped`` items parked on a batch of
        ``skip_batches`` left out."""
        ...

    def returned(self, idxs: list[int], *, waits: bool = False) -> Iterator[Row]:
        """Evicted items fed again, read back from the store."""
        ...


class RowSink(Protocol):
    """Where the bulk path's rows go (:class:`~batchain.engine.bulk.BulkItems`)."""

    async def park_resumed(self) -> tuple[set[str], int]:
        """A resumed run's items waiting on live provider batches, left there unread: the
        batches taken, and how many items wait on them."""
        ...

    async def add(self, rows: list[Row]) -> None:
        """Start a chunk of rows."""
        ...


class Feeder:
    """Starts items from the inputs, one window place each."""

    def __init__(
        self,
        inputs: ItemRows,
        window: Window,
        control: RunControl,
        changed: asyncio.Event,
        start: StartItem,
        bulk: RowSink | None,
        returns: Returns | None = None,
    ) -> None:
        self.inputs = inputs
        self.window = window
        self.control = control
        self.changed = changed
        self.start = start
        self.bulk = bulk
        #: batch mode: evicted items, fed again as their provider batches end
        self.returns = returns
        #: every input is fed (evicted items may still come back)
        self.exhausted = False
        #: bulk path: rows holding a window place, not yet parked (one list for new and
        #: returning items: whichever waits for a place parks them all first)
        self._rows: list[Row] = []
        #: items taken back from ``returns``, or taken out of ``_rows`` to be admitted, and
        #: not yet started: neither waiting nor live, they keep the run from ending
        self._in_hand = 0

    @property
    def _holding(self) -> bool:
        return self._in_hand > 0 or bool(self._rows)

    @contextlib.contextmanager
    def _hold(self, n: int) -> Iterator[None]:
        """``n`` items in hand (see ``_in_hand``) while the block runs."""
        self._in_hand += n
        try:
            yield
        finally:
            self._in_hand -= n

    @property
    def idle(self) -> bool:
        """Every input is fed and no evicted item is ready: the items in the window are all
        there will be until a provider batch ends."""
        return self.exhausted and not self._holding and (self.returns is None or not self.returns.ready)

    @property
    def finished(self) -> bool:
        """Nothing more will be fed: every input is, and no evicted item waits. (An item
        told it is evicted but still ending is a live item of the run, counted there.)"""
        return self.exhausted and not self._holding and (self.returns is None or not self.returns.pending)

    async def feed(self, inputs: InputSource | None) -> None:
        # a resumed run's items whose calls are at a provider wait there without being read
        parked, n_parked = await self.bulk.park_resumed() if self.bulk is not None else (set(), 0)
        rows = self.inputs.items(inputs, waits=self.bulk is not None, skip_batches=parked, skipped=n_parked)
        returns = self.returns
        async for row in rows:
            # items back from ended batches go first; a stopping run stops there (asked only
            # then, not with a coroutine for every item)
            if (
                returns is not None
                and (returns.ready or self.control.stopping)
                and not await self._feed_returned()
            ):
                break
            if not await self._put(row):
                break
        else:
            await self._flush_rows()
            self.exhausted = True
            self.changed.set()
            # evicted items come back as their batches end, until the run ends (it decides
            # when: see finished) or stops
            while self.returns is not None and not self.control.stopping:
                await self.returns.wait()
                if not await self._feed_returned():
                    break
        if not self.control.stopping:
            await self._flush_rows()
        self.changed.set()

    async def _feed_returned(self) -> bool:
        """Feed the evicted items that are ready (before new inputs: they finish items).
        False if the run is stopping."""
        returns = self.returns
        if returns is None:
            return True
        while returns.ready and not self.control.stopping:
            taken = returns.take(_BULK_CHUNK)
            # held until every one is put: any wait is inside a put, with the rest unput
            with self._hold(len(taken)):
                for row in self.inputs.returned(taken, waits=self.bulk is not None):
                    if not await self._put(row):
                        return False
            await self._flush_rows()
            self.changed.set()
        return not self.control.stopping

    async def _put(self, row: Row) -> bool:
        """Start one item in a window place: at once, or (bulk path) with the next chunk of
        rows. False if the run is stopping."""
        # rows holding places are parked before waiting for one, or the round could never end
        if not self.window.take_free() and not await self.window.take(before_waiting=self._flush_rows):
            return False
        if self.bulk is None:
            self.start(row[0], row[1])
            return True
        self._rows.append(row)
        if len(self._rows) >= _BULK_CHUNK:
            await self._flush_rows()
            self.changed.set()
        return True

    async def _flush_rows(self) -> None:
        if self._rows and self.bulk is not None:
            chunk, self._rows = self._rows, []
            with self._hold(len(chunk)):
                await self.bulk.add(chunk)
            # a chunk's admission need not wait for anything, and a window of chunks
            # replaying their stages is seconds of work: between chunks the store commits
            # (a shared store's write lock goes to the other processes in turn), the lease
            # is renewed and batches are polled
            await asyncio.sleep(0)
