"""Several processes on one job: the job's *runners* and the chunks of items each holds.

One process holds a job's lease (:mod:`batchain.engine.lifecycle`): it reads the inputs,
runs the job's provider batches and ends the job. Other processes (workers on other
machines) may help with a realtime job's items. Every process running the job's items has
a *seat*: a row in ``job_runners``, renewed like a lease, gone when it lapses. Items are
taken a chunk at a time (``item_claims``: chunk ``k`` is items ``k*size .. k*size+size-1``);
a chunk is held while its runner's seat is, and its row goes once its items are done. A
chunk whose runner died is free again, and its items without a result are taken by the
next process that looks.

Every claim is made in the store's write transaction, which holds the store's write lock
(SQLite's file lock, PostgreSQL's advisory lock: :mod:`batchain.store.postgres`), so two
processes never take the same chunk; a runner's writes are conditional on its seat
(:meth:`batchain.store.sql.SQLStore.fence_runner`), so one that stalled past it writes
nothing more once another took its chunks.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from batchain.states import ItemStatus, JobStatus
from batchain.store.connection import Cursor
from batchain.store.records import RunnerRecord

__all__ = ["ClaimQueries", "is_lease_holder", "runner_alive"]

_PENDING = ItemStatus.PENDING.value
_RUNNING = JobStatus.RUNNING.value


def is_lease_holder(runner: str) -> bool:
    """Is ``runner`` the seat of a job's lease holder (``host:pid#epoch``), not a helper's
    (``host:pid#h...``)?"""
    return runner.rpartition("#")[2].isdigit()


def runner_alive(runner: str) -> bool:
    """False only when the runner (``host:pid``, a lease's owner, or ``host:pid#tag``, a
    seat) is a process on this host that is gone."""
    host, _, pid = runner.partition("#")[0].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ClaimQueries:
    """The store's queries on runners and item claims (a part of
    :class:`~batchain.store.sql.SQLStore`)."""

    _lock: threading.RLock

    def _begin(self) -> None:
        raise NotImplementedError

    def _write(self, sql: str, params: Iterable[Any] = ()) -> Cursor:
        raise NotImplementedError

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def join_job(self, job_id: str, runner: str, ttl: float) -> None:
        """Give ``runner`` a seat among the job's runners, for ``ttl`` seconds. The seat of a
        lease holder (``host:pid#epoch``) frees those of the holders before it: they lost
        the lease, so they write nothing more (a run of this very process that failed on
        its store, say, whose seat would otherwise hold its chunks until it lapsed)."""
        with self._lock:
            if is_lease_holder(runner):
                self._begin()
                for (other,) in self._read("SELECT runner FROM job_runners WHERE job_id=?", (job_id,)):
                    if other != runner and is_lease_holder(other):
                        self._free(job_id, other)
            self._write(
                "INSERT OR REPLACE INTO job_runners (job_id, runner, until) VALUES (?, ?, ?)",
                (job_id, runner, time.time() + ttl),
            )
            self.commit()

    def renew_seat(self, job_id: str, runner: str, ttl: float) -> bool:
        """Extend ``runner``'s seat; False if it lapsed and another process freed it."""
        with self._lock:
            changed = self._write(
                "UPDATE job_runners SET until=? WHERE job_id=? AND runner=?",
                (time.time() + ttl, job_id, runner),
            ).rowcount
            self.commit()
        return changed == 1

    def leave_job(self, job_id: str, runner: str) -> None:
        """``runner`` ends: its seat and the chunks it holds are free."""
        self._write("DELETE FROM item_claims WHERE job_id=? AND runner=?", (job_id, runner))
        self._write("DELETE FROM job_runners WHERE job_id=? AND runner=?", (job_id, runner))
        self.commit()

    def job_runners(self, job_id: str) -> list[RunnerRecord]:
        """The processes running the job's items now, with the chunks each holds."""
        rows = self._read(
            "SELECT r.runner, r.until, COUNT(c.chunk) AS chunks FROM job_runners r"
            " LEFT JOIN item_claims c ON c.job_id = r.job_id AND c.runner = r.runner"
            " WHERE r.job_id=? GROUP BY r.runner, r.until ORDER BY r.runner",
            (job_id,),
        )
        now = time.time()
        return [
            RunnerRecord(r["runner"], float(r["until"]), int(r["chunks"]))
            for r in rows
            if float(r["until"]) > now and runner_alive(r["runner"])
        ]

    def claim_chunk(self, job_id: str, runner: str, size: int) -> int | None:
        """Take the first chunk of a running job with an item that has no result and that no
        live runner holds; None if there is none."""
        with self._lock:
            self._reap(job_id, runner)  # begins the write transaction: the rest is in it
            rows = self._read(
                "SELECT i.idx FROM items i WHERE i.job_id=? AND i.status=?"
                " AND NOT EXISTS (SELECT 1 FROM item_claims c JOIN job_runners r"
                " ON r.job_id = c.job_id AND r.runner = c.runner"
                " WHERE c.job_id = i.job_id AND c.chunk = i.idx / ?)"
                " AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = i.job_id AND j.status=?)"
                " ORDER BY i.idx LIMIT 1",
                (job_id, _PENDING, size, _RUNNING),
            )
            if not rows:
                return None
            chunk = int(rows[0][0]) // size
            self._write(
                "INSERT OR REPLACE INTO item_claims (job_id, chunk, runner) VALUES (?, ?, ?)",
                (job_id, chunk, runner),
            )
            return chunk

    def take_chunk(self, job_id: str, chunk: int, runner: str) -> bool:
        """Hold chunk ``chunk`` (its items being read from the inputs now), unless another
        live runner holds it."""
        with self._lock:
            self._reap(job_id, runner)
            rows = self._read(
                "SELECT c.runner FROM item_claims c JOIN job_runners r"
                " ON r.job_id = c.job_id AND r.runner = c.runner WHERE c.job_id=? AND c.chunk=?",
                (job_id, chunk),
            )
            if rows and rows[0][0] != runner:
                return False
            self._write(
                "INSERT OR REPLACE INTO item_claims (job_id, chunk, runner) VALUES (?, ?, ?)",
                (job_id, chunk, runner),
            )
            return True

    def release_chunk(self, job_id: str, chunk: int, runner: str) -> None:
        """``runner`` is done with chunk ``chunk`` (its items' results are written)."""
        self._write(
            "DELETE FROM item_claims WHERE job_id=? AND chunk=? AND runner=?", (job_id, chunk, runner)
        )

    def pending_elsewhere(self, job_id: str, runner: str, size: int) -> int:
        """Items without a result in chunks other live runners hold."""
        rows = self._read(
            "SELECT c.chunk, r.runner, r.until FROM item_claims c JOIN job_runners r"
            " ON r.job_id = c.job_id AND r.runner = c.runner WHERE c.job_id=? AND c.runner<>?",
            (job_id, runner),
        )
        now = time.time()
        n = 0
        for chunk, other, until in rows:
            if float(until) <= now or not runner_alive(other):
                continue
            lo = int(chunk) * size
            n += int(
                self._read(
                    "SELECT COUNT(*) FROM items WHERE job_id=? AND status=? AND idx>=? AND idx<?",
                    (job_id, _PENDING, lo, lo + size),
                )[0][0]
            )
        return n

    def pending_in(self, job_id: str, lo: int, hi: int) -> list[tuple[int, str]]:
        """``(idx, input)`` of the items without a result in ``lo <= idx < hi``."""
        rows = self._read(
            "SELECT idx, input FROM items WHERE job_id=? AND status=? AND idx>=? AND idx<? ORDER BY idx",
            (job_id, _PENDING, lo, hi),
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    def _reap(self, job_id: str, runner: str) -> None:
        """Free the seats (and chunks) of the job's runners that lapsed or died on this host;
        never ``runner``'s own (it renews it)."""
        self._begin()
        now = time.time()
        dead = [
            r[0]
            for r in self._read("SELECT runner, until FROM job_runners WHERE job_id=?", (job_id,))
            if r[0] != runner and (float(r[1]) <= now or not runner_alive(r[0]))
        ]
        for other in dead:
            self._free(job_id, other)

    def _free(self, job_id: str, runner: str) -> None:
        self._write("DELETE FROM item_claims WHERE job_id=? AND runner=?", (job_id, runner))
        self._write("DELETE FROM job_runners WHERE job_id=? AND runner=?", (job_id, runner))
