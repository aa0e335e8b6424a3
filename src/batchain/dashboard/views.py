"""What the dashboard shows, as plain JSON-ready values read from a store (no HTTP here).

Reads stay cheap whatever the store holds: the jobs list reads each job's item counters,
never its items; a job's page reads its counters, provider batches, recorded progress
samples and at most :data:`_ERRORS_READ` failed items. The one expensive read, a job's cost
report (a walk over its calls), is computed off the request path by :class:`Reports` and
served from memory: the page shows the last report while a newer one is computed.
"""

from __future__ import annotations

import io
import itertools
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from batchain.engine.forecast import batch_label, job_progress
from batchain.providers.base import redact
from batchain.states import ItemStatus, JobStatus
from batchain.store.base import Store
from batchain.store.records import JobRecord, ProgressSample

__all__ = ["Reports", "Views"]

#: failed items read to find a job's commonest errors (the first ones, by index)
_ERRORS_READ = 10_000
#: errors listed, and example items per error
_TOP_ERRORS = 10
_EXAMPLES = 5
#: progress samples sent for a chart (a longer history is thinned evenly)
_MAX_POINTS = 1000
#: seconds of recorded progress whose pace foresees a running job's finish
_PACE_OVER = 600.0
#: a running job's report is recomputed at most every max(this, 20 x its cost) seconds
_REPORT_EVERY = 5.0
_FINISHED = (JobStatus.COMPLETED, JobStatus.CANCELLED)
#: jobs whose finish can be foreseen (a waiting job's items are at a provider)
_UNDER_WAY = (JobStatus.RUNNING, JobStatus.WAITING)


@dataclass(slots=True)
class _Report:
    #: the job's ``updated_at`` and the wall time when it was computed
    stamp: float
    at: float
    took: float
    value: dict[str, Any]


class Reports:
    """Jobs' cost reports and call counts, computed by one background thread and kept in
    memory. :meth:`get` never waits: it returns the last report computed (``None`` before
    the first) and asks for a newer one when the job moved on since."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._done: dict[str, _Report] = {}
        self._asked: set[str] = set()
        self._queue: queue.Queue[tuple[str, float]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="batchain-dashboard-reports", daemon=True)
        self._thread.start()

    def get(self, rec: JobRecord) -> tuple[dict[str, Any] | None, float | None]:
        """The job's last report and when it was computed (``None`` while none is)."""
        with self._lock:
            report = self._done.get(rec.id)
            if self._stale(rec, report) and rec.id not in self._asked:
                self._asked.add(rec.id)
                self._queue.put((rec.id, rec.updated_at))
        if report is None:
            return None, None
        return report.value, report.at

    @staticmethod
    def _stale(rec: JobRecord, report: _Report | None) -> bool:
        if report is None:
            return True
        if rec.status in _FINISHED:
            return report.stamp != rec.updated_at
        return time.time() - report.at >= max(_REPORT_EVERY, 20 * report.took)

    def _work(self) -> None:
        while True:
            job_id, stamp = self._queue.get()
            started = time.perf_counter()
            try:
                value = self._compute(job_id)
            except Exception as exc:
                value = {"error": redact(f"{type(exc).__name__}: {exc}")}
            took = time.perf_counter() - started
            with self._lock:
                self._done[job_id] = _Report(stamp, time.time(), took, value)
                self._asked.discard(job_id)

    def _compute(self, job_id: str) -> dict[str, Any]:
        from batchain.cost.render import to_json
        from batchain.job import Job

        job = Job.open(job_id, store=self.store)
        report = job.report()
        return {"cost": to_json(report), "calls": job.call_stats}


class Views:
    """The dashboard's data, from one (read-only) store."""

    def __init__(self, store: Store, report_store: Store | None = None) -> None:
        """``report_store``: the store the cost reports read, best on a connection of its
        own (their long reads then hold up no request); default ``store``."""
        self.store = store
        self.reports = Reports(report_store or store)

    def jobs(self, limit: int = 1000) -> dict[str, Any]:
        """Every job (newest first, at most ``limit``), with counts, cost and finish."""
        now = time.time()
        rows = [self._job_row(rec, now) for rec in self.store.list_jobs(limit)]
        return {"store": self.store.name, "now": now, "jobs": rows}

    def job(self, job_id: str) -> dict[str, Any] | None:
        """One job's page: its row, progress over time, batches, cost, errors."""
        rec = self.store.get_job(job_id)
        if rec is None:
            return None
        now = time.time()
        history = self.store.progress_history(job_id)
        report, report_at = self.reports.get(rec)
        return {
            "now": now,
            "job": self._job_row(rec, now, history, report),
            "history": _points(history),
            "batches": self._batches(job_id),
            "report": report,
            "report_at": report_at,
            "errors": self._errors(job_id),
            "last_run": _plain_stats(rec.stats),
        }

    def results(self, job_id: str, fmt: str) -> Iterator[bytes]:
        """The job's results as a JSONL or CSV file, in chunks (any number of items)."""
        from batchain.cli.datafiles import ResultWriter
        from batchain.job import Job

        job = Job.open(job_id, store=self.store)
        buf = io.StringIO()
        with ResultWriter("-", fmt=fmt, stdout=buf) as writer:
            for result in job.iter_results():
                writer.write(result)
                if buf.tell() >= 1 << 16:
                    yield buf.getvalue().encode()
                    buf.seek(0)
                    buf.truncate()
        yield buf.getvalue().encode()

    # -- parts -------------------------------------------------------------------------------

    def _job_row(
        self,
        rec: JobRecord,
        now: float,
        history: list[ProgressSample] | None = None,
        report: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        raw = self.store.item_counts(rec.id)
        counts = {s.value: raw.get(s.value, 0) for s in ItemStatus}
        counts["total"] = sum(raw.values())
        if report is None:
            report, _ = self.reports.get(rec)
        cost = report.get("cost") if report else None
        finished = rec.status in _FINISHED
        budget = rec.options.get("budget")
        return {
            "id": rec.id,
            "status": rec.status.value,
            "mode": rec.mode,
            "chain": rec.chain_ref,
            "note": redact(rec.note) if rec.note else None,
            "created_at": rec.created_at,
            "updated_at": rec.updated_at,
            "finished_at": rec.updated_at if finished else None,
            "inputs_complete": rec.inputs_complete,
            "counts": counts,
            "paid": cost.get("paid") if isinstance(cost, dict) else None,
            "list_price": cost.get("list_price") if isinstance(cost, dict) else None,
            "savings": cost.get("savings") if isinstance(cost, dict) else None,
            "cost_complete": cost.get("complete") if isinstance(cost, dict) else None,
            "cost_state": "computing" if report is None else "failed" if "error" in report else "ready",
            "budget": float(budget) if isinstance(budget, int | float) else None,
            "eta": None if finished else self._eta(rec, counts, now, history),
        }

    def _eta(
        self, rec: JobRecord, counts: dict[str, int], now: float, history: list[ProgressSample] | None
    ) -> float | None:
        """When a running job should end: the provider's forecast for its batches, else the
        pace of its recorded progress."""
        if rec.status not in _UNDER_WAY:
            return None
        forecast = job_progress(self.store, rec.id, now).expected_finish
        if forecast is not None:
            return forecast
        since = now - _PACE_OVER
        if history is None:
            samples = self.store.progress_history(rec.id, since=since)
        else:
            samples = [s for s in history if s.t > since]
        if len(samples) < 2 or not rec.inputs_complete:
            return None
        first, last = samples[0], samples[-1]
        pace = (last.items_done - first.items_done) / max(1e-9, last.t - first.t)
        left = counts["pending"]
        if pace <= 0:
            return None
        return last.t + left / pace

    def _batches(self, job_id: str) -> list[dict[str, Any]]:
        return [
            {
                "id": b.id,
                "provider": b.provider,
                "provider_batch_id": b.provider_batch_id,
                "status": b.status,
                "label": batch_label(b),
                "round": b.info.get("round"),
                "calls": b.n_calls,
                "done": b.done,
                "total": b.total,
                "created_at": b.created_at,
                "updated_at": b.updated_at,
            }
            for b in self.store.job_batches(job_id)
        ]

    def _errors(self, job_id: str) -> list[dict[str, Any]]:
        errors: Counter[str] = Counter()
        examples: dict[str, list[int]] = {}
        for item in itertools.islice(self.store.iter_items(job_id, (ItemStatus.FAILED,)), _ERRORS_READ):
            message = _error_message(item.error)
            errors[message] += 1
            seen = examples.setdefault(message, [])
            if len(seen) < _EXAMPLES:
                seen.append(item.idx)
        return [{"error": m, "count": n, "examples": examples[m]} for m, n in errors.most_common(_TOP_ERRORS)]


def _error_message(stored: str | None) -> str:
    """An item's stored error as one line (it is JSON: type and message), secrets scrubbed."""
    if not stored:
        return "unknown error"
    try:
        data = json.loads(stored)
    except ValueError:
        return redact(stored.splitlines()[0] if stored else stored)[:500]
    if isinstance(data, dict):
        kind, message = data.get("type"), data.get("message")
        text = f"{kind}: {message}" if kind and message else str(message or kind or stored)
    else:
        text = str(data)
    return redact(" ".join(text.split()))[:500]


def _points(history: list[ProgressSample]) -> list[list[Any]]:
    """Samples as ``[t, done, failed, total, calls_paid, cost]`` rows, at most
    :data:`_MAX_POINTS` (evenly thinned; the last is always kept)."""
    step = max(1, -(-len(history) // _MAX_POINTS))
    kept = history[::step]
    if history and kept[-1] is not history[-1]:
        kept.append(history[-1])
    return [[s.t, s.items_done, s.items_failed, s.items_total, s.calls_paid, _float(s.cost)] for s in kept]


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _plain_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The last run's counters that are numbers (the rest are for reports)."""
    return {k: v for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)}
