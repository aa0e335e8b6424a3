"""A store's WAL copied back into its file from a thread of its own.

SQLite in WAL mode appends every commit to the ``-wal`` file; a checkpoint copies those
pages into the store file and syncs both to disk. Left to SQLite, the connection that
commits runs the checkpoint itself, every 1,000 pages: in batchain that is the event
loop's thread, which then waits for the disk (two fsyncs a checkpoint, a thousand
checkpoints over a million-item job) instead of building and collecting batches.
Here a thread of the process checkpoints (``PASSIVE``: it never waits for the writer, and
the writer never waits for it), every :data:`EVERY_S` seconds; the writer's own
checkpoint stays only as a backstop, at :data:`BACKSTOP_PAGES`, should this thread fall
behind. Measured on a 1,000,000-item batch job (``bench/bench_any_size.py``): 289 s of wall
before, 266 s after, for the same client CPU.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

__all__ = ["BACKSTOP_PAGES", "EVERY_S", "Checkpointer"]

#: seconds between two checkpoints of the thread
EVERY_S = 0.5
#: WAL pages after which the writing connection checkpoints itself (SQLite's default:
#: 1,000): only if the thread fell that far behind
BACKSTOP_PAGES = 16_384


class Checkpointer:
    """Checkpoints the store at ``path`` every ``every`` seconds until :meth:`stop`."""

    def __init__(self, path: Path, every: float = EVERY_S) -> None:
        self.path = path
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"batchain-checkpoint:{path.resolve()}", daemon=True
        )
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop; with ``wait``, once a checkpoint in progress has ended (the store closes
        next, and SQLite's last checkpoint removes the WAL only if no other connection
        holds it)."""
        self._stop.set()
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        except sqlite3.Error:
            return  # the writer's own checkpoints remain
        try:
            while not self._stop.wait(self.every):
                self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        # a failure (busy: another process checkpoints; a full disk: the writer learns it
        # from its own writes) is left to the next round
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
