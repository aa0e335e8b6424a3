"""Run ``batch_batchain.py`` with the SQLite store's statements timed. Prints the client's
JSON line with a ``store`` field added: ``{statement: [seconds, calls]}``.

    python store_timed.py submit|collect <batch_batchain.py's arguments>

Each statement (the first words of its SQL, and ``COMMIT`` for commits) is timed on the
thread that runs it (``time.thread_time``: the store's checkpoint thread is not counted
in it), around the store's own ``_write``, ``_write_many``, ``_read`` and ``commit``, so
everything sqlite3 does for a statement (binding, stepping, fetching) is in its time and
nothing of the engine's is. For bench/bench_client_split.py.
"""

from __future__ import annotations

import json
import re
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchain.store.sql import SQLStore

TIMES: dict[str, list[float]] = {}


def _name(sql: str) -> str:
    """A statement's kind: its first words up to the table it touches."""
    words = re.sub(r"\s+", " ", sql).strip()
    m = re.match(r"((?:INSERT(?: OR \w+)? INTO|UPDATE|DELETE FROM|SELECT .*? FROM) \w+)", words)
    return (m.group(1) if m else words[:40])[:80]


def _timed(method: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: SQLStore, sql: str, *args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return method(self, sql, *args, **kwargs)
        finally:
            slot = TIMES.setdefault(_name(sql), [0.0, 0])
            slot[0] += time.thread_time() - t0
            slot[1] += 1

    return run


def _timed_commit(method: Callable[[SQLStore], None]) -> Callable[[SQLStore], None]:
    def run(self: SQLStore) -> None:
        t0 = time.thread_time()
        try:
            method(self)
        finally:
            slot = TIMES.setdefault("COMMIT", [0.0, 0])
            slot[0] += time.thread_time() - t0
            slot[1] += 1

    return run


def main() -> None:
    for name in ("_write", "_write_many", "_read"):
        setattr(SQLStore, name, _timed(getattr(SQLStore, name)))
    SQLStore.commit = _timed_commit(SQLStore.commit)  # type: ignore[method-assign]
    script = Path(__file__).resolve().parent / "batch_batchain.py"
    sys.argv = [str(script), *sys.argv[1:]]
    printed: list[str] = []
    write = sys.stdout.write

    def capture(text: str) -> int:
        printed.append(text)
        return len(text)

    sys.stdout.write = capture  # type: ignore[method-assign]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.stdout.write = write  # type: ignore[method-assign]
    line = [ln for ln in "".join(printed).splitlines() if ln.startswith("{")][-1]
    result = json.loads(line)
    result["store"] = TIMES
    print(json.dumps(result))


if __name__ == "__main__":
    main()
