"""Batch bookkeeping both providers share, written once; providers supply the wire format.

A provider's batch store subclasses :class:`BatchStoreBase` and keeps only what is
its own: its status machine (``_advance``), its result lines and how they are sealed
into results, and its not-found error.  Everything else is here:

* the store: every batch by id, the active ones advanced by ``step(now, budget)``
  (the :class:`~batchain.sandbox.state.BatchStore` protocol), lookups that advance
  the batch to now, and newest-first paging;
* processing: items become due on a :class:`~batchain.sandbox.progress.Schedule`
  (cut at ``batch_expire_after_fraction``); each due item is evaluated and billed
  like a realtime call, with the per-batch seeded faults (``batch_drop_rate``,
  ``batch_item_error_rate``) and ``[[flaky:N]]``; an internal bug fails that item,
  never the batch;
* ending: never-run items become ``expired`` / ``cancelled`` lines, lines are
  shuffled when ``shuffle_results`` is on (unless the provider promises input
  order), then sealed.

Sans-I/O: the store is advanced with explicit timestamps.  A request dropped by
``batch_drop_rate`` counts as succeeded but has no result line.
"""

from __future__ import annotations

import abc
import random
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from batchain.sandbox.calls import Evaluated, ProviderSpec, bill, evaluate, logger
from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.errors import ApiError
from batchain.sandbox.progress import Schedule

if TYPE_CHECKING:
    from batchain.sandbox.state import SandboxState

__all__ = ["WINDOW_S", "Batch", "BatchItem", "BatchStoreBase", "Ended", "Unrun"]

WINDOW_S = 24 * 3600  # both providers' completion window

Unrun = Literal["expired", "cancelled"]
"""Why an item never ran: the batch expired, or was cancelled, first."""


@dataclass(slots=True)
class BatchItem:
    """One request of a batch: its ``custom_id`` and the request body."""

    custom_id: str
    body: dict[str, Any]


@dataclass(slots=True)
class Ended:
    """Processing is over: when it ended, and whether by expiry (items left unrun)."""

    at: float
    expired: bool


@dataclass(slots=True, kw_only=True)
class Batch:
    """What every batch tracks while it is processed; providers add their wire fields."""

    id: str
    config: SandboxConfig
    created: float
    rng: random.Random = field(default_factory=random.Random)
    items: list[BatchItem] = field(default_factory=list)  # dropped once ended, to free memory
    total: int = 0
    processed: int = 0
    stop_count: int = 0  # processing stops here (expiry after the configured fraction)
    schedule: Schedule | None = None
    succeeded: int = 0  # dropped items included
    errored: int = 0
    expired: int = 0
    cancelled: int = 0
    lines: list[bytes] = field(default_factory=list)  # result lines, until sealed
    error_lines: list[bytes] = field(default_factory=list)  # ... kept apart when the wire does

    def begin(self, items: list[BatchItem], start: float) -> None:
        """Start processing ``items`` at ``start`` over ``batch_processing_s``."""
        cfg = self.config
        total = len(items)
        fraction = cfg.batch_expire_after_fraction
        self.items = items
        self.total = total
        self.stop_count = total if fraction is None else int(total * fraction)
        self.schedule = Schedule(start, cfg.batch_processing_s, total)

    @abc.abstractmethod
    def is_final(self) -> bool:
        """True once the batch reached a terminal status (nothing left to advance)."""


B = TypeVar("B", bound=Batch)


class BatchStoreBase(abc.ABC, Generic[B]):
    """All batches of one provider in one sandbox; advanced by :meth:`step`."""

    internal_error: str  # message of an item failed by an injected or internal error
    errors_apart: bool  # error and never-run lines go to ``error_lines``, not ``lines``
    ordered_results: bool = False  # the wire promises input order: ``shuffle_results`` ignored

    def __init__(self, state: SandboxState, spec: ProviderSpec) -> None:
        self._state = state
        self._spec = spec
        self._batches: dict[str, B] = {}
        self._active: dict[str, B] = {}

    # -- the provider's part -------------------------------------------------------------

    @abc.abstractmethod
    def _advance(self, batch: B, now: float, budget: int) -> int:
        """Move ``batch`` along its status machine up to ``now``; returns items done."""

    @abc.abstractmethod
    def _not_found(self, batch_id: str) -> ApiError: ...

    @abc.abstractmethod
    def _success_line(self, batch: B, custom_id: str, payload: dict[str, Any]) -> bytes: ...

    @abc.abstractmethod
    def _error_line(self, custom_id: str, error: ApiError) -> bytes: ...

    @abc.abstractmethod
    def _unrun_line(self, custom_id: str, reason: Unrun) -> bytes: ...

    @abc.abstractmethod
    def _seal(self, batch: B) -> None:
        """Freeze the final (possibly shuffled) ``lines`` / ``error_lines`` into results."""

    # -- store protocol ----------------------------------------------------------------

    def clear(self) -> None:
        self._batches.clear()
        self._active.clear()

    def forget(self, batch_ids: Collection[str] | None = None) -> list[str]:
        """Forget batches (all when ``batch_ids`` is None), as a provider that no longer
        knows them: lookups and cancels answer 404, and their items not yet run never run
        (items already run stay billed). Returns the ids forgotten."""
        gone = [b for b in self._batches if batch_ids is None or b in batch_ids]
        for batch_id in gone:
            del self._batches[batch_id]
            self._active.pop(batch_id, None)
        return gone

    def active(self) -> bool:
        return bool(self._active)

    def step(self, now: float, budget: int) -> int:
        work = 0
        for batch in list(self._active.values()):
            if work >= budget:
                break
            work += self._advance(batch, now, budget - work)
            if batch.is_final():
                self._active.pop(batch.id, None)
        return work

    # -- lookups -------------------------------------------------------------------------

    def _add(self, batch: B) -> B:
        """Store a new batch, seed its RNG, and wake the ticker to process it."""
        batch.rng = random.Random(f"{batch.config.seed}:{batch.id}")
        self._batches[batch.id] = batch
        self._active[batch.id] = batch
        self._state.wake()
        return batch

    def get(self, batch_id: str, now: float | None = None) -> B:
        """The batch, advanced to ``now`` (default: the current time)."""
        batch = self._batches.get(batch_id)
        if batch is None:
            raise self._not_found(batch_id)
        if batch.id in self._active:
            self._advance(batch, time.time() if now is None else now, 1 << 62)
            if batch.is_final():
                self._active.pop(batch.id, None)
        return batch

    def list(self, after: str | None, limit: int, before: str | None = None) -> tuple[list[B], bool]:
        """A page of batches, newest first, after ``after`` (or the newest before ``before``)."""
        self._state.advance()
        newest_first = list(reversed(self._batches.values()))
        if before is not None:
            position = next((i for i, b in enumerate(newest_first) if b.id == before), None)
            newer = newest_first[:position] if position is not None else []
            return newer[-limit:], len(newer) > limit
        if after is not None:
            position = next((i for i, b in enumerate(newest_first) if b.id == after), None)
            newest_first = newest_first[position + 1 :] if position is not None else []
        return newest_first[:limit], len(newest_first) > limit

    # -- processing ----------------------------------------------------------------------

    def _process(self, batch: B, now: float, budget: int) -> tuple[int, Ended | None]:
        """Run the items due by ``now`` (at most ``budget``): (items done, end of processing).

        Processing is over once every item ran and the schedule ended, or once the
        items up to ``stop_count`` ran (expiry); otherwise more items are due later.
        """
        schedule = batch.schedule
        assert schedule is not None
        due = min(schedule.due(now), batch.stop_count)
        count = min(due - batch.processed, budget)
        work = 0
        if count > 0:
            self._run(batch, count)
            work = count
        if batch.processed < due:
            return work, None  # out of budget, continue next tick
        if batch.processed == batch.total:
            return work, Ended(schedule.end, expired=False) if now >= schedule.end else None
        if batch.processed == batch.stop_count:
            return work, Ended(schedule.time_of(batch.stop_count), expired=True)
        return work, None

    def spec_for(self, batch: B) -> ProviderSpec:
        """The wire format ``batch``'s requests are read and answered in (one per store,
        unless the provider's batches name an endpoint)."""
        del batch
        return self._spec

    def _run(self, batch: B, count: int) -> None:
        state, spec, cfg, rng = self._state, self.spec_for(batch), batch.config, batch.rng
        failed = batch.error_lines if self.errors_apart else batch.lines
        start = batch.processed
        for item in batch.items[start : start + count]:
            dropped = cfg.batch_drop_rate > 0 and rng.random() < cfg.batch_drop_rate
            injected = cfg.batch_item_error_rate > 0 and rng.random() < cfg.batch_item_error_rate
            try:
                ev = self._evaluate_safely(item.body, spec)
                flaky = ev.directives.flaky
                if flaky is not None and state.flaky_fails(ev.digest, flaky):
                    raise ApiError(500, f"Sandbox directive [[flaky:{flaky}]] failed this attempt.")
                if injected:
                    raise ApiError(500, self.internal_error)
                if dropped:
                    batch.succeeded += 1  # the server thinks it answered; the line is lost
                    continue
                payload = bill(state, spec, ev, "batch", batch.id, item.custom_id)
            except ApiError as error:
                batch.errored += 1
                failed.append(self._error_line(item.custom_id, error))
                continue
            batch.succeeded += 1
            batch.lines.append(self._success_line(batch, item.custom_id, payload))
        batch.processed = start + count

    def _evaluate_safely(self, body: dict[str, Any], spec: ProviderSpec) -> Evaluated:
        """Evaluate one item; an internal bug fails that item (500), never the whole batch."""
        try:
            return evaluate(spec, body, batch=True)
        except ApiError:
            raise
        except Exception:
            logger.exception("sandbox: unexpected error evaluating a batch item")
            raise ApiError(500, self.internal_error) from None

    def _finish(self, batch: B, reason: Unrun) -> None:
        """Write never-run items as ``reason`` lines, then seal the results."""
        unrun = batch.error_lines if self.errors_apart else batch.lines
        for item in batch.items[batch.processed :]:
            unrun.append(self._unrun_line(item.custom_id, reason))
        left = batch.total - batch.processed
        if reason == "expired":
            batch.expired += left
        else:
            batch.cancelled += left
        batch.processed = batch.total
        batch.items = []
        if batch.config.shuffle_results and not self.ordered_results:
            batch.rng.shuffle(batch.lines)
            batch.rng.shuffle(batch.error_lines)
        self._seal(batch)
        batch.lines = []
        batch.error_lines = []
