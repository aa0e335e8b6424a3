"""A job's inputs: stored items without a result first, then new inputs after the stored
ones, each written to the store before its item starts (what makes a job resumable)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Iterator
from typing import Any

from batchain import serialize
from batchain.engine.bulk import Stored, Wait
from batchain.engine.claims import Claims
from batchain.engine.lifecycle import RunControl
from batchain.engine.results import error_json
from batchain.errors import InputError
from batchain.states import ItemStatus
from batchain.store.base import Store
from batchain.store.records import CallRecord, JobRecord

__all__ = ["InputSource", "Inputs", "aiter_inputs"]

#: inputs stored per transaction when a batch job reads its whole dataset up front
_INGEST_CHUNK = 2000

InputSource = Iterable[Any] | AsyncIterable[Any]


class Inputs:
    """Where a run's items come from.

    Batch and auto mode store every input before running any (``store_first``): a
    submitted job must be able to finish in another process that never sees the inputs.
    """

    def __init__(
        self,
        store: Store,
        job_id: str,
        control: RunControl,
        *,
        store_first: bool,
        claims: Claims | None = None,
        helping: bool = False,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.control = control
        self.store_first = store_first
        #: realtime items are taken a chunk at a time, so other processes can share them
        self.claims = claims
        #: a helper's run (Purpose.ASSIST): the stored items only, never the inputs
        self.helping = helping

    async def items(
        self,
        inputs: InputSource | None,
        *,
        waits: bool = False,
        skip_batches: Collection[str] = (),
        skipped: int = 0,
    ) -> AsyncIterator[tuple[int, Any, Wait | None]]:
        """``(idx, value, wait)``: stored items without a result first, then new
        inputs. With ``waits`` (the bulk path), a stored item's value is its
        :class:`~batchain.engine.bulk.Stored` text, and it comes with the call an earlier run noted it
        waits for (bulk path); the ``skipped`` items parked on a batch of ``skip_batches``
        are left out."""
        fresh: _Rows | None = None
        if self.store_first and inputs is not None:
            fresh = await self._ingest_all(inputs)
        if waits and fresh is not None:
            # a new job's items, all pending and waiting on nothing: as just stored
            for idx, text in fresh:
                if self.control.stopping:
                    return
                yield idx, Stored(text), None
        elif waits:
            if self._all_skipped(skipped):
                pending: Iterable[tuple[int, str, str | None, CallRecord | None]] = ()
            else:
                pending = self.store.iter_pending_waits(self.job_id, skip_batches=skip_batches)
            for idx, text, key, record in pending:
                if self.control.stopping:
                    return
                yield idx, Stored(text), (key, record) if key is not None else None
        elif self.claims is not None:
            async for idx, text in self.claims.stored():
                yield idx, serialize.loads(text), None
            if self.helping:
                return
        else:
            for item in self.store.iter_items(self.job_id, (ItemStatus.PENDING,)):
                if self.control.stopping:
                    return
                yield item.idx, serialize.loads(item.input), None
        async for row in self._read_on(inputs):
            yield row
        if self.claims is not None and not self.control.stopping:
            self.claims.inputs_read()
            async for idx, text in self.claims.rest():
                yield idx, serialize.loads(text), None

    async def _read_on(self, inputs: InputSource | None) -> AsyncIterator[tuple[int, Any, Wait | None]]:
        """The inputs after those stored by earlier runs, each stored as it is read."""
        job = self.store.get_job(self.job_id)
        assert job is not None
        missing = self._missing(job)
        if job.inputs_complete and not missing:
            return
        if inputs is None:
            raise self._inputs_needed(job, missing)
        idx = 0
        skip = job.n_items
        async for value in aiter_inputs(inputs):
            if job.inputs_complete and idx >= skip:
                break  # only the lost ones were wanted
            if idx < skip and idx not in missing:  # already stored by an earlier run
                idx += 1
                continue
            if self.control.stopping:
                return
            ours = self.claims is None or self.claims.reading(idx)  # before it is stored
            self._ingest(idx, value, read=max(idx + 1, skip))
            if ours:
                yield idx, value, None
            idx += 1
        self.store.update_job(self.job_id, n_items=max(idx, skip), inputs_complete=True)
        self.store.commit_soon()

    def returned(self, idxs: list[int], *, waits: bool = False) -> Iterator[tuple[int, Any, Wait | None]]:
        """Evicted items fed again (batch mode): ``(idx, value, wait)`` as :meth:`items`
        gives them, read back from the store; items no longer pending are skipped."""
        for idx, text, key, record in self.store.pending_waits_of(self.job_id, idxs):
            value = Stored(text) if waits else serialize.loads(text)
            yield idx, value, (key, record) if key is not None else None

    async def store_all(self, inputs: InputSource) -> None:
        """Store every input as a pending item, and nothing else (a job queued for a worker)."""
        await self._ingest_all(inputs, keep=False)

    def _missing(self, job: JobRecord) -> set[int]:
        """Inputs read by an earlier run with no stored item: none unless a store lost
        them (a build before writes were all-or-nothing); read again to repair."""
        if sum(self.store.item_counts(self.job_id).values()) >= job.n_items:
            return set()
        return set(self.store.missing_items(self.job_id, job.n_items))

    def _inputs_needed(self, job: JobRecord, missing: set[int]) -> Exception:
        if missing:
            return InputError(
                f"job {self.job_id}: {len(missing)} of the {job.n_items} inputs read are not in "
                "the store; pass the same inputs again to read them"
            )
        return RuntimeError(
            f"job {self.job_id} stopped before all of its inputs were read ({job.n_items} "
            "read); pass the same inputs again to continue it"
        )

    def _all_skipped(self, skipped: int) -> bool:
        """Are all pending items among the ``skipped``? (A resumed batch job whose items
        all wait on provider batches: nothing to read, instead of every item to skip.)"""
        return skipped > 0 and self.store.item_counts(self.job_id).get(ItemStatus.PENDING.value, 0) <= skipped

    async def _ingest_all(self, inputs: InputSource, *, keep: bool = True) -> _Rows | None:
        """Store every input not stored yet. For a job that had none, the stored items as
        ``(idx, input JSON)`` too, so the run feeds them without reading them back (up to
        ``_FRESH_BYTES`` of inputs; None beyond, if the job had items, or without ``keep``)."""
        job = self.store.get_job(self.job_id)
        assert job is not None
        missing = self._missing(job)
        if job.inputs_complete and not missing:
            return None
        fresh: _Rows | None = [] if job.n_items == 0 and keep else None
        held = 0
        idx = 0
        rows: _Rows = []
        failed: _Failed = []
        async for value in aiter_inputs(inputs):
            if job.inputs_complete and idx >= job.n_items:
                break  # only the lost ones were wanted
            if idx >= job.n_items or idx in missing:  # earlier runs stored the others
                _buffer(idx, value, rows, failed)
                if len(rows) + len(failed) >= _INGEST_CHUNK:
                    self._store_rows(rows, failed, max(idx + 1, job.n_items))
                    fresh, held = _keep(fresh, rows, held)
                    rows, failed = [], []
            idx += 1
        self._store_rows(rows, failed, max(idx, job.n_items), complete=True)
        fresh, held = _keep(fresh, rows, held)
        return fresh

    def _store_rows(self, rows: _Rows, failed: _Failed, n_items: int, *, complete: bool = False) -> None:
        """Items and how far the inputs were read, in one transaction: a write that fails
        undoes both, so the items are read again on resume."""
        self._write_rows(rows, failed)
        if complete:
            self.store.update_job(self.job_id, n_items=n_items, inputs_complete=True)
        else:
            self.store.update_job(self.job_id, n_items=n_items)
        self.store.commit()

    def _ingest(self, idx: int, value: Any, *, read: int) -> None:
        """Store one input as an item, and ``read`` (how far the inputs were read) with it."""
        rows: _Rows = []
        failed: _Failed = []
        _buffer(idx, value, rows, failed)
        self._write_rows(rows, failed)
        self.store.update_job(self.job_id, n_items=read)
        self.store.commit_soon()

    def _write_rows(self, rows: _Rows, failed: _Failed) -> None:
        if rows:
            self.store.add_items(self.job_id, rows)
        if failed:
            # an input that cannot be stored is an item that failed, with the reason
            self.store.add_items(self.job_id, [(idx, text) for idx, text, _ in failed])
            self.store.finish_items(self.job_id, [(idx, ItemStatus.FAILED, None, e) for idx, _, e in failed])


#: items to store: ``(idx, input_json)``
_Rows = list[tuple[int, str]]
#: inputs that cannot be stored: ``(idx, placeholder_json, error_json)``
_Failed = list[tuple[int, str, str]]


#: inputs a new batch job keeps as stored to feed them (beyond, it reads them back)
_FRESH_BYTES = 64 * 1024 * 1024


def _keep(fresh: _Rows | None, rows: _Rows, held: int) -> tuple[_Rows | None, int]:
    """``rows`` (just stored) added to ``fresh`` while it holds less than ``_FRESH_BYTES``."""
    if fresh is None:
        return None, held
    held += sum(len(text) for _, text in rows)
    if held > _FRESH_BYTES:
        return None, held
    fresh.extend(rows)
    return fresh, held


def _buffer(idx: int, value: Any, rows: _Rows, failed: _Failed) -> None:
    try:
        rows.append((idx, serialize.dumps(value)))
    except serialize.Unserializable as exc:
        failed.append((idx, json.dumps({"__unstorable__": repr(value)[:500]}), error_json(exc, "input")))


async def aiter_inputs(inputs: InputSource) -> AsyncIterator[Any]:
    if isinstance(inputs, AsyncIterable):
        async for value in inputs:
            yield value
    else:
        for n, value in enumerate(inputs):
            yield value
            if n % 64 == 63:
                await asyncio.sleep(0)  # a long synchronous generator must not starve the loop
