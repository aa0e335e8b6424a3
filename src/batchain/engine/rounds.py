"""Batch mode's rounds: when every live item waits on a parked call, the parked calls go to
the provider as batches; then batches are polled until answers let items move on.

A round is not bounded by the run's window: once its calls are at the provider, the items
waiting on them leave the window (:meth:`BatchCoordinator.evict`), the next inputs reach
their calls, and those go out too. So every call of a stage is at the provider at once,
and a job takes about (stages x one batch's time) whatever its number of items. Items come
back, replaying from the store, as their batches end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from batchain.engine.batching import BatchCoordinator
from batchain.engine.budget import BudgetExhausted
from batchain.engine.calls import CallManager
from batchain.engine.feed import Feeder, Window
from batchain.engine.lifecycle import Purpose, RunControl

__all__ = ["Rounds"]

log = logging.getLogger("batchain.engine.rounds")

#: how long nothing may move before a batch round counts as complete
_SETTLE_S = 0.02


class Rounds:
    """The batch-mode loop of one run."""

    def __init__(
        self,
        *,
        batch: BatchCoordinator,
        calls: CallManager,
        control: RunControl,
        window: Window,
        changed: asyncio.Event,
        tasks: Callable[[], int],
        live: Callable[[], bool],
        deadline: float | None,
        deadline_margin: float,
        threads: int,
        feeder: Feeder,
    ) -> None:
        #: who starts items: it may be blocked (the window is full), idle (waiting for an
        #: evicted item's batch to end) or done
        self.feeder = feeder
        #: items whose calls are at a provider leave the window (batch mode)
        self.evicting = feeder.returns is not None
        #: threads for sync steps: when every one waits on a model call, no more item can
        #: reach its call until the round is flushed
        self.threads = threads
        self.batch = batch
        self.calls = calls
        self.control = control
        self.window = window
        self.changed = changed
        #: item coroutines running, and whether any item still runs or waits
        self.tasks = tasks
        self.live = live
        self.deadline = deadline
        self.deadline_margin = deadline_margin
        #: batch mode's bulk path: a round's batches are created while the next items build
        self.overlap = self.evicting and feeder.bulk is not None
        #: the flush creating a round's batches, when one runs behind the feeder
        self._flushing: asyncio.Task[int] | None = None
        #: batches the last flush created
        self._created = 1

    def switch_in(self) -> float | None:
        """Seconds until auto mode's deadline margin, when there is a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.deadline_margin - time.time())

    def _deadline_near(self) -> bool:
        left = self.switch_in()
        return left is not None and left <= 0

    async def _make_room(self) -> bool:
        """More items wait for a place: batches that ended (a resumed job's, say) answer
        their items in place; else the items whose calls are out leave. True if either
        happened."""
        return bool(await self.batch.poll_due()) or self.batch.evict() > 0

    async def run(self, feeding: asyncio.Task[None]) -> None:
        """Flush when every live item waits on a parked call; poll; repeat."""
        try:
            await self._loop(feeding)
        except asyncio.CancelledError:
            if self._flushing is not None:
                self._flushing.cancel()  # its batch intents are recorded: a resume verifies them
            raise
        if self._flushing is not None and not await self._flushed():
            return

    async def _flushed(self) -> bool:
        """The round being created is at the provider (or failed); False if the budget
        paused the run."""
        task, self._flushing = self._flushing, None
        self.window.reclaim()
        if task is None:
            return True
        try:
            self._created = await task
        except BudgetExhausted as exc:
            self.control.pause(str(exc))
            return False
        return True

    def _flush_behind(self) -> None:
        """Create the round's batches while the feeder builds the next items: uploading a
        batch takes the provider seconds to minutes, which the client spends building, not
        waiting. (The bulk path only: a row is small, so lending a window's worth of places
        costs little memory; an item coroutine does not.)"""
        self.batch.evict()  # the last round's items: their calls are out
        self._flushing = asyncio.create_task(self.batch.flush())
        self._flushing.add_done_callback(lambda _: self.changed.set())
        self.window.lend(self.window.size)

    async def _loop(self, feeding: asyncio.Task[None]) -> None:
        batch, control = self.batch, self.control
        polled = False
        cancel_sent = False
        while not control.stopping:
            if self._flushing is not None and self._flushing.done() and not await self._flushed():
                return
            fed = feeding.done() or self.window.blocked or self.feeder.idle
            if (feeding.done() or self.feeder.finished) and not self.live():
                # every item ended: batches left at an endpoint the job no longer uses end too
                batch.lose_unreachable(self.calls.lanes)
                return
            changed = self.changed.is_set()
            self.changed.clear()
            # with no item coroutines (the bulk path) nothing can still be on its way to a
            # parked call: a change is acted on at once instead of after a settle
            quiet = changed and not self.tasks() and fed
            if not quiet:
                with contextlib.suppress(TimeoutError):
                    # settle: something still moving means the round is not complete yet
                    await asyncio.wait_for(self.changed.wait(), _SETTLE_S)
                    continue
            if self._deadline_near() and not batch.switched:
                await batch.switch_to_realtime()
                continue
            # items whose level runs realtime never wait on a batch: they do not hold a round
            blocking = self.tasks() - len(self.calls.realtime_items)
            saturated = self.calls.sync_calls >= self.threads
            everyone = len(self.calls.waiting) >= blocking or saturated
            all_waiting = everyone and fed
            if saturated and all_waiting and batch.unsubmitted:
                log.info(
                    "all %d threads for sync steps wait on model calls: flushing the round", self.threads
                )
            if not all_waiting:
                continue
            if self._flushing is not None:
                # a round's batches are being created: nothing settles before they are out
                await batch.poll_due()
                await asyncio.wait({self._flushing}, timeout=batch.next_poll_in())
                continue
            if control.cancelling and not cancel_sent:
                await batch.cancel_all()
                cancel_sent = True
                continue
            # behind the feeder only while it has inputs to build and rounds go out whole
            # (a round held back by the budget or the provider's capacity waits in line)
            if batch.unsubmitted and self.overlap and self._created and not self.feeder.exhausted:
                self._flush_behind()
                continue
            if batch.unsubmitted:
                try:
                    created = self._created = await batch.flush()
                except BudgetExhausted as exc:
                    control.pause(str(exc))
                    return
                if created or not batch.live:
                    continue
                # the budget holds the rest back until live batches settle: poll them
            if not batch.live:
                continue
            if self.evicting and self.window.blocked and not control.cancelling and await self._make_room():
                continue
            if control.purpose is Purpose.SUBMIT:
                control.stop()  # all that can go to a provider now is there: leave it there
                return
            if control.purpose is Purpose.POLL and polled:
                control.stop()
                return
            if control.purpose is Purpose.POLL:
                await batch.poll_due(force=True)
                polled = True
                continue
            # cancelling polls like waiting does: until the provider confirms, or the batch
            # is gone, or it could not be reached for lost_after
            delay = batch.next_poll_in() or 0.0
            switch_in = self.switch_in()
            if switch_in is not None:
                delay = min(delay, switch_in)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), delay)
            await batch.poll_due()
