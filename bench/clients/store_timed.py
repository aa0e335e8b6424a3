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

import contextlib
import io
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


def _timed(method: Callable[..., Any], kind: Callable[..., str]) -> Callable[..., Any]:
    """``method`` of the store, its time added to the statement ``kind(*args)`` names."""

    def run(self: SQLStore, *args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            return method(self, *args, **kwargs)
        finally:
            slot = TIMES.setdefault(kind(*args), [0.0, 0])
            slot[0] += time.thread_time() - t0
            slot[1] += 1

    return run


def main() -> None:
    statement: Callable[..., str] = lambda sql, *_: _name(sql)  # noqa: E731
    kinds = {"_write": statement, "_write_many": statement, "_read": statement, "commit": lambda: "COMMIT"}
    for name, kind in kinds.items():
        setattr(SQLStore, name, _timed(getattr(SQLStore, name), kind))
    script = Path(__file__).resolve().parent / "batch_batchain.py"
    sys.argv = [str(script), *sys.argv[1:]]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        runpy.run_path(str(script), run_name="__main__")
    line = [ln for ln in printed.getvalue().splitlines() if ln.startswith("{")][-1]
    result = json.loads(line)
    result["store"] = TIMES
    print(json.dumps(result))


if __name__ == "__main__":
    main()
