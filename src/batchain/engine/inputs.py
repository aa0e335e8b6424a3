"""A job's inputs: stored items without a result first, then new inputs after the stored
ones, each written to the store before its item starts (what makes a job resumable)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from batchain import serialize
from batchain.engine.bulk import Wait
from batchain.engine.lifecycle import RunControl
from batchain.engine.results import error_json
from batchain.states import ItemStatus
from batchain.store.base import Store

__all__ = ["InputSource", "Inputs", "aiter_inputs"]

#: inputs stored per transaction when a batch job reads its whole dataset up front
_INGEST_CHUNK = 2000

InputSource = Iterable[Any] | AsyncIterable[Any]


class Inputs:
    """Where a run's items come from.

    Batch and auto mode store every input before running any (``store_first``): a
    submitted job must be able to finish in another process that never sees the inputs.
    """

    def __init__(self, store: Store, job_id: str, control: RunControl, *, store_first: bool) -> None:
        self.store = store
        self.job_id = job_id
        self.control = control
        self.store_first = store_first

    async def items(
        self, inputs: InputSource | None, *, waits: bool = False
    ) -> AsyncIterator[tuple[int, Any, Wait | None]]:
        """``(idx, value, wait)``: stored items without a result first, then new
        inputs. With ``waits``, a stored item comes with the call an earlier run noted it
        waits for (bulk path)."""
        if self.store_first and inputs is not None:
            await self._ingest_all(inputs)
        if waits:
            for idx, text, key, record in self.store.iter_pending_waits(self.job_id):
                if self.control.stopping:
                    return
                yield idx, serialize.loads(text), (key, record) if key is not None else None
        else:
            for item in self.store.iter_items(self.job_id, (ItemStatus.PENDING,)):
                if self.control.stopping:
                    return
                yield item.idx, serialize.loads(item.input), None
        job = self.store.get_job(self.job_id)
        assert job is not None
        if job.inputs_complete:
            return
        if inputs is None:
            raise RuntimeError(
                f"job {self.job_id} stopped before all of its inputs were read ({job.n_items} "
                "read); pass the same inputs again to continue it"
            )
        idx = 0
        skip = job.n_items
        async for value in aiter_inputs(inputs):
            if idx < skip:  # already stored by an earlier run
                idx += 1
                continue
            if self.control.stopping:
                return
            self._ingest(idx, value)
            yield idx, value, None
            idx += 1
        self.store.update_job(self.job_id, n_items=idx, inputs_complete=True)
        self.store.commit_soon()

    async def _ingest_all(self, inputs: InputSource) -> None:
        job = self.store.get_job(self.job_id)
        assert job is not None
        if job.inputs_complete:
            return
        idx, rows = 0, []
        async for value in aiter_inputs(inputs):
            if idx >= job.n_items:  # earlier runs stored the ones before
                try:
                    rows.append((idx, serialize.dumps(value)))
                except serialize.Unserializable:
                    self._ingest(idx, value)  # stored as a failed item, with the reason
                if len(rows) >= _INGEST_CHUNK:
                    self._store_rows(rows, idx + 1)
                    rows = []
            idx += 1
        self._store_rows(rows, idx)
        self.store.update_job(self.job_id, n_items=idx, inputs_complete=True)
        self.store.commit()

    def _store_rows(self, rows: list[tuple[int, str]], n_items: int) -> None:
        if rows:
            self.store.add_items(self.job_id, rows)
        self.store.update_job(self.job_id, n_items=n_items)
        self.store.commit()

    def _ingest(self, idx: int, value: Any) -> None:
        try:
            text = serialize.dumps(value)
        except serialize.Unserializable as exc:
            text = json.dumps({"__unstorable__": repr(value)[:500]})
            self.store.add_items(self.job_id, [(idx, text)])
            self.store.finish_item(self.job_id, idx, ItemStatus.FAILED, error=error_json(exc, "input"))
        else:
            self.store.add_items(self.job_id, [(idx, text)])
        self.store.update_job(self.job_id, n_items=idx + 1)
        self.store.commit_soon()


async def aiter_inputs(inputs: InputSource) -> AsyncIterator[Any]:
    if isinstance(inputs, AsyncIterable):
        async for value in inputs:
            yield value
    else:
        for n, value in enumerate(inputs):
            yield value
            if n % 64 == 63:
                await asyncio.sleep(0)  # a long synchronous generator must not starve the loop
