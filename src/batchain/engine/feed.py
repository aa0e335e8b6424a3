"""Feeding: items start from the job's inputs as places in the run's window free up.

The window bounds how many items run or wait at once, so memory stays flat however many
inputs there are. On the bulk path items start a chunk at a time, as rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from batchain.engine.bulk import BulkItems, Wait
from batchain.engine.inputs import Inputs, InputSource
from batchain.engine.lifecycle import RunControl

__all__ = ["Feeder", "Window"]

#: items the bulk path builds and parks at a time
_BULK_CHUNK = 1000


class Window:
    """Places for items that run or wait at once."""

    def __init__(self, size: int, control: RunControl, changed: asyncio.Event) -> None:
        self._slots = asyncio.Semaphore(size)
        self.control = control
        self.changed = changed
        #: the feeder waits for a place: the items in the window are all there will be
        self.blocked = False
        #: items started in this run
        self.started = 0

    async def take(self, before_waiting: Callable[[], Awaitable[None]] | None = None) -> bool:
        """A place for the next item; False if the run is stopping."""
        slots = self._slots
        if slots.locked():
            if before_waiting is not None:
                await before_waiting()
            self.blocked = True
            self.changed.set()
        await slots.acquire()
        self.blocked = False
        if self.control.stopping:
            slots.release()
            return False
        self.started += 1
        return True

    def release(self) -> None:
        self._slots.release()


#: starts an item's coroutine: (idx, value)
StartItem = Callable[[int, Any], None]


class Feeder:
    """Starts items from the inputs, one window place each."""

    def __init__(
        self,
        inputs: Inputs,
        window: Window,
        control: RunControl,
        changed: asyncio.Event,
        start: StartItem,
        bulk: BulkItems | None,
    ) -> None:
        self.inputs = inputs
        self.window = window
        self.control = control
        self.changed = changed
        self.start = start
        self.bulk = bulk

    async def feed(self, inputs: InputSource | None) -> None:
        if self.bulk is not None:
            await self._feed_bulk(self.bulk, inputs)
            return
        async for idx, value, _wait in self.inputs.items(inputs):
            if not await self.window.take():
                break
            self.start(idx, value)
        self.changed.set()

    async def _feed_bulk(self, bulk: BulkItems, inputs: InputSource | None) -> None:
        """The feeder of the bulk path: items start a chunk at a time, as rows."""
        rows: list[tuple[int, Any, Wait | None]] = []

        async def start_rows() -> None:
            if rows:
                await bulk.add(rows[:])
                rows.clear()

        async for idx, value, wait in self.inputs.items(inputs, waits=True):
            # rows read before the window fills are parked first, or the round could never end
            if not await self.window.take(before_waiting=start_rows):
                break
            rows.append((idx, value, wait))
            if len(rows) >= _BULK_CHUNK:
                await start_rows()
                self.changed.set()
        if not self.control.stopping:
            await start_rows()
        self.changed.set()
