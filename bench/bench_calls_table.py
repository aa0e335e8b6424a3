"""The ``calls`` table's layout: rowid (schema 3) against ``WITHOUT ROWID`` (schema 2).

python bench/bench_calls_table.py              # 50,000 calls, medians of 3
python bench/bench_calls_table.py --calls 200000

Writes what a batch job writes per call, with the store's own pragmas: each call's row as
its batch is recorded (key = a SHA-256 hex, random order, ~1 KB request, 1,000 per
transaction as ``batch_intent`` does), then its answer (~650 bytes, 10,000 per transaction
in key order, as ``calls_succeeded`` does). The table is the store's own schema text, with
or without ``WITHOUT ROWID``; nothing else runs.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import tempfile
import time
from pathlib import Path

from batchain.store import sqlite as store_sqlite
from harness import fmt, median, save


def calls_schema(without_rowid: bool) -> str:
    schema = store_sqlite._SCHEMA
    start = schema.index("CREATE TABLE IF NOT EXISTS calls")
    end = schema.index(";", start)
    table = schema[start:end].rstrip()
    return table + (" WITHOUT ROWID" if without_rowid else "")


def one(n: int, without_rowid: bool, folder: Path) -> dict[str, float]:
    path = folder / f"calls-{'wr' if without_rowid else 'rowid'}.sqlite"
    for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        f.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-16384"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute(calls_schema(without_rowid))
    conn.execute("CREATE INDEX calls_by_batch ON calls (batch_id) WHERE batch_id IS NOT NULL")
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    request = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + "x" * 900 + '"}]}'
    answer = '{"id":"chatcmpl","choices":["' + "y" * 600 + '"]}'
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        rows = sorted(
            (k, "openai", "gpt-4o-mini", "pending", "job", request, k, f"b{start // 10000}", 1.0)
            for k in keys[start : start + 1000]
        )
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO calls (key, provider, model, status, job_id, request, request_hash, batch_id,"
            " updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.execute("COMMIT")
    t1 = time.perf_counter()
    for start in range(0, n, 10000):
        conn.execute("BEGIN")
        conn.executemany(
            "UPDATE calls SET status='succeeded', response=?, request=NULL, updated_at=? WHERE key=?",
            [(answer, 2.0, k) for k in sorted(keys[start : start + 10000])],
        )
        conn.execute("COMMIT")
    t2 = time.perf_counter()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"insert_s": t1 - t0, "answer_s": t2 - t1, "size_mb": path.stat().st_size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"rowid": [], "without_rowid": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.reps):  # alternating, so drift in the machine's speed hits both
            runs["without_rowid"].append(one(args.calls, True, Path(tmp)))
            runs["rowid"].append(one(args.calls, False, Path(tmp)))
    rows = []
    for what, key, unit in (
        ("record the calls of a batch", "insert_s", "s"),
        ("write their answers", "answer_s", "s"),
        ("file size", "size_mb", "MB"),
    ):
        old = median([r[key] for r in runs["without_rowid"]])
        new = median([r[key] for r in runs["rowid"]])
        rows.append([what, f"{fmt(old)} {unit}", f"{fmt(new)} {unit}", fmt(old / new)])
    table = {
        "title": f"{args.calls:,} calls, medians of {args.reps}",
        "columns": ["what", "WITHOUT ROWID (schema 2)", "rowid (schema 3)", "schema 2 / schema 3"],
        "rows": rows,
    }
    path = save(
        "calls_table",
        "The calls table's layout (issue 13): rowid against WITHOUT ROWID",
        "python bench/bench_calls_table.py" + (f" --calls {args.calls}" if args.calls != 50_000 else ""),
        [table],
        notes=[
            "A call's row holds its request, then its answer (about a kilobyte). A WITHOUT ROWID"
            " table keeps whole rows in its key's B-tree, and keys are hashes, so every insert and"
            " every answer lands on a random page and splits it; a rowid table appends rows and only"
            " its key index is random.",
            "Stores of schema 2 are migrated on open (the calls are copied into the new table once).",
        ],
        raw=runs,
    )
    for row in rows:
        print(" | ".join(row))
    print(path)


if __name__ == "__main__":
    main()
