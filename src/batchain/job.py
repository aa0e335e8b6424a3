"""Jobs as users see them: status, counts, results, usage, resume and retry."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from langchain_core.runnables import Runnable

from batchain import serialize
from batchain.chains.ref import resolve_chain
from batchain.cost.report import JobCost
from batchain.engine.forecast import JobProgress, job_progress
from batchain.engine.lifecycle import Purpose
from batchain.engine.session import execute, expected_total, resolve_options
from batchain.options import Mode
from batchain.states import ItemStatus, JobStatus, LinkSource
from batchain.store import StoreArg, close_with, open_store, share
from batchain.store.base import Store, lease_owner
from batchain.store.records import Compaction, JobRecord, Usage

__all__ = ["ItemResult", "Job", "new_job_id"]


def new_job_id() -> str:
    """Sortable and short: ``job-20261121-142233-3f9a1c``."""
    return time.strftime("job-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


@dataclass(frozen=True, slots=True)
class ItemResult:
    index: int
    status: ItemStatus
    input: Any
    output: Any
    error: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.status == ItemStatus.SUCCEEDED

    @property
    def error_message(self) -> str | None:
        return None if self.error is None else f"{self.error['type']}: {self.error['message']}"


class Job:
    """A handle on one job in a store. Cheap to create; every property reads the store."""

    def __init__(
        self, job_id: str, store: Store, chain: Runnable[Any, Any] | None = None, *, owns_store: bool = False
    ):
        """A handle on job ``job_id`` in ``store``; ``owns_store``: batchain opened the store
        for this handle (from a path or URL), and closes it once this handle, and every
        handle given the same store since, is dropped."""
        self.id = job_id
        self.store = store
        self._chain = chain
        if owns_store:
            close_with(self, store)
        else:
            share(self, store)

    def __repr__(self) -> str:
        return f"Job({self.id!r}, status={self.status.value!r}, counts={self.counts})"

    @classmethod
    def open(
        cls,
        job_id: str,
        *,
        store: StoreArg = None,
        chain: Runnable[Any, Any] | str | None = None,
    ) -> Job:
        st = open_store(store)
        owned = st is not store
        try:
            if st.get_job(job_id) is None:
                raise KeyError(f"no job {job_id!r} in store {st.name}")
            runnable = resolve_chain(chain) if chain is not None else None
        except BaseException:
            if owned:
                st.close()
            raise
        return cls(job_id, st, runnable, owns_store=owned)

    # -- state -------------------------------------------------------------------------

    @property
    def record(self) -> JobRecord:
        rec = self.store.get_job(self.id)
        if rec is None:
            raise KeyError(self.id)
        return rec

    @property
    def status(self) -> JobStatus:
        return self.record.status

    @property
    def counts(self) -> dict[str, int]:
        raw = self.store.item_counts(self.id)
        counts = {s.value: raw.get(s.value, 0) for s in ItemStatus}
        counts["total"] = sum(raw.values())
        return counts

    def progress(self) -> JobProgress:
        """Items done of all, provider batches by status, and when the batches at the
        provider should end (see :mod:`batchain.engine.forecast`). Reads no item."""
        return job_progress(self.store, self.id)

    @property
    def usage(self) -> Usage:
        """Tokens of the model calls this job paid for (cache hits and shared calls excluded)."""
        return self.store.job_usage(self.id, (LinkSource.PAID,))

    @property
    def call_stats(self) -> dict[str, int]:
        """Distinct calls by how this job got them: paid, cache, replay, shared."""
        return self.store.job_call_stats(self.id)

    def report(self, *, per_item: bool = False, prices: Any = None) -> JobCost:
        """Tokens, cost and savings by model, mode and round; cache hits; failures.

        ``prices``: overrides (a dict or a file), else those the job ran with, else the
        catalog. Render it with ``rich.print(report.table())`` or ``report.to_json()``.
        """
        from batchain.cost.prices import PriceBook, default_pricebook
        from batchain.cost.report import job_cost

        overrides = prices if prices is not None else self.record.options.get("prices")
        book = PriceBook(overrides) if overrides else default_pricebook()
        return job_cost(self.store, self.id, book, per_item=per_item)

    @property
    def cost(self) -> Decimal | None:
        """What this job paid, in USD (None if some model has no known price)."""
        report = self.report()
        return report.paid if report.complete else None

    @property
    def stats(self) -> dict[str, Any]:
        """Counters of the last run: calls sent, retries, 429s, peak calls in flight."""
        return dict(self.record.stats)

    @property
    def chain(self) -> Runnable[Any, Any]:
        if self._chain is None:
            ref = self.record.chain_ref
            if not ref:
                raise ValueError(f"job {self.id} has no recorded chain reference; pass chain= to Job.open")
            self._chain = resolve_chain(ref)
        return self._chain

    # -- results -----------------------------------------------------------------------

    def iter_results(self, statuses: tuple[ItemStatus, ...] | None = None) -> Iterator[ItemResult]:
        """Results in input order, streamed from the store."""
        for item in self.store.iter_items(self.id, statuses):
            yield ItemResult(
                index=item.idx,
                status=item.status,
                input=serialize.loads(item.input),
                output=serialize.loads(item.output),
                error=json.loads(item.error) if item.error else None,
            )

    def results(self) -> list[ItemResult]:
        return list(self.iter_results())

    def outputs(self) -> list[Any]:
        """Outputs in input order; ``None`` where an item failed or has not run."""
        return [serialize.loads(text) for _, text in self.store.iter_outputs(self.id)]

    def errors(self) -> list[ItemResult]:
        return list(self.iter_results((ItemStatus.FAILED,)))

    # -- running again -------------------------------------------------------------------

    def resume(self, inputs: Iterable[Any] | None = None, **options: Any) -> Job:
        """Run the items that have no result yet (and read on from ``inputs`` if given)."""
        from batchain._sync import run_sync

        return run_sync(self.aresume(inputs, **options))

    async def aresume(self, inputs: Iterable[Any] | AsyncIterable[Any] | None = None, **options: Any) -> Job:
        await self._run(inputs, options, Purpose.FINISH)
        return self

    def assist(self, **options: Any) -> int:
        """Help the process that runs this (realtime) job: run free chunks of its items
        here, until none is left. Returns how many items this process ran. The job's
        status stays its runner's to change. See :mod:`batchain.engine.claims`."""
        from batchain._sync import run_sync

        return run_sync(self.aassist(**options))

    async def aassist(self, **options: Any) -> int:
        options.setdefault("progress", False)
        before = self._ran_here()
        await self._run(None, options, Purpose.ASSIST)
        return self._ran_here() - before

    def _ran_here(self) -> int:
        record = self.store.get_job(self.id)
        runners = record.stats.get("runners", {}) if record is not None else {}
        return int(runners.get(lease_owner(), 0))

    # -- batch mode ----------------------------------------------------------------------

    def poll(self, **options: Any) -> JobStatus:
        """Advance a batch job once without waiting: collect ended provider batches, let
        items continue, submit the next round. Returns the new status."""
        from batchain._sync import run_sync

        return run_sync(self.apoll(**options))

    async def apoll(self, inputs: Iterable[Any] | None = None, **options: Any) -> JobStatus:
        options.setdefault("progress", False)
        return await self._run(inputs, options, Purpose.POLL)

    def wait(self, **options: Any) -> Job:
        """Run a (batch) job to the end, polling its provider batches."""
        return self.resume(**options)

    async def await_(self, **options: Any) -> Job:
        return await self.aresume(**options)

    def cancel(self, **options: Any) -> Job:
        """Cancel the job's provider batches; finished results are kept, the rest of its
        items end as cancelled."""
        from batchain._sync import run_sync

        return run_sync(self.acancel(**options))

    async def acancel(self, **options: Any) -> Job:
        options.setdefault("progress", False)
        if self.record.mode != Mode.BATCH:
            # nothing waits at a provider: cancelling is marking what has not run
            self.store.cancel_pending_items(self.id)
            if self.status != JobStatus.CANCELLED:
                self.store.set_job_status(self.id, JobStatus.CANCELLED, "cancelled")
            return self
        if not self.record.inputs_complete:
            self.store.update_job(self.id, inputs_complete=True)  # nothing more will be read
        await self._run(None, options, Purpose.CANCEL)
        return self

    async def _run(self, inputs: Any, overrides: dict[str, Any], purpose: Purpose) -> JobStatus:
        """Run this job once for ``purpose``, with its stored options and ``overrides``."""
        options = resolve_options(self.record.options, overrides)
        total = expected_total(inputs, self.record)
        return await execute(self.store, self.id, self.chain, inputs, options, total=total, purpose=purpose)

    def retry(self, **options: Any) -> Job:
        """Run the failed items again."""
        self.store.reset_items(self.id, (ItemStatus.FAILED, ItemStatus.CANCELLED))
        return self.resume(**options)

    async def aretry(self, **options: Any) -> Job:
        self.store.reset_items(self.id, (ItemStatus.FAILED, ItemStatus.CANCELLED))
        return await self.aresume(**options)

    def compact(self) -> Compaction:
        """Drop what only a running job reads (a finished job only: completed or cancelled);
        results, outputs, errors, the cost report and the cache stay as they are. See
        :meth:`batchain.store.sqlite.SQLiteStore.compact_job`."""
        return self.store.compact_job(self.id)

    @property
    def store_path(self) -> Path:
        """The file of the job's store (a SQLite store's; see :attr:`Store.name` for any)."""
        from batchain.store import SQLiteStore

        if not isinstance(self.store, SQLiteStore):
            raise TypeError(f"store {self.store.name} is not a file")
        return self.store.path
