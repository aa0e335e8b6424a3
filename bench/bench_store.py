"""The store at 10,000,000 calls: is every hot-path operation still fast?

python bench/bench_store.py                  # 10,000,000 calls (builds a ~10 GB store under /tmp)
python bench/bench_store.py --calls 500000   # a quick check

Builds a store of finished batch jobs (50,000 calls each: items, answered calls with
their responses, the links between them, each item's wait, one provider batch per job),
written directly with ``executemany`` in key order, then times what a running job and the
CLI do, through the store's own methods: admit lookups by key, parking 50,000 calls,
recording and submitting their batch, reading the batch's calls, marking them succeeded,
finishing the items, item counts, ``batchain jobs``, ``batchain status`` and compacting a
job. Each timed operation on fresh data (a new 50,000-item job each repetition); medians.
Then what the previous schema did (a batch's calls by a scan, counting a job's items),
what ``calls_by_batch`` costs its writes, and what migrating a store of this size takes.
Writes bench/results/store.json (``--no-save``: print only); ``--reuse`` times the steps
again on the store a previous run built.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from batchain.states import ItemStatus, JobStatus, LinkSource
from batchain.store import JobRecord, SQLiteStore, Usage
from harness import fmt, median, save

PER_JOB = 50_000
MODEL = "gpt-4o-mini"
ENDPOINT = "/v1/chat/completions"
#: an OpenAI chat completion as a batch returns it (about 500 bytes, like the sandbox's)
RESPONSE = (
    '{{"id":"chatcmpl-{n:012x}","object":"chat.completion","created":1767000000,'
    '"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant",'
    '"content":"A short answer about item {n}, as a model would give it: two sentences of '
    'plain text.","refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],'
    '"usage":{{"prompt_tokens":24,"completion_tokens":31,"total_tokens":55,'
    '"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},'
    '"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,'
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},'
    '"service_tier":"default","system_fingerprint":"fp_0123456789"}}'
)
#: secondary indexes built after the bulk load (faster than keeping them up to date)
_LATE_INDEXES = ("items_by_status", "calls_sent", "calls_failed", "calls_by_batch")


def key_of(n: int) -> str:
    """A call key: 64 hex digits like a sha256, in ``n``'s order (so the build appends)."""
    return f"{n:012x}" + hashlib.sha256(str(n).encode()).hexdigest()[:52]


def fresh_key(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


# -- building ------------------------------------------------------------------------------------


def build(path: Path, calls: int, per_job: int) -> dict[str, Any]:
    """A store of finished jobs holding ``calls`` calls in all; returns what was built."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")
    SQLiteStore(path).close()  # the schema, exactly as batchain makes it
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1000000")
    sqls = {r[0]: r[1] for r in con.execute("SELECT name, sql FROM sqlite_master WHERE type='index'")}
    for name in _LATE_INDEXES:
        con.execute(f"DROP INDEX {name}")
    t0 = time.perf_counter()
    jobs = (calls + per_job - 1) // per_job
    n = 0
    for j in range(jobs):
        size = min(per_job, calls - n)
        _build_job(con, j, n, size)
        n += size
        if j % 10 == 9 or j == jobs - 1:
            print(f"  built {n:,} calls ({j + 1} jobs) in {time.perf_counter() - t0:.0f} s", flush=True)
    loaded = time.perf_counter() - t0
    for name in _LATE_INDEXES:
        con.execute(sqls[name])
    built = {"calls": n, "jobs": jobs, "load_s": loaded, "total_s": time.perf_counter() - t0}
    con.execute("INSERT INTO meta (key, value) VALUES ('bench_build', ?)", (json.dumps(built),))
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return built


def _build_job(con: sqlite3.Connection, j: int, first: int, size: int) -> None:
    job_id = f"job-bench-{j:05d}"
    now = 1_767_000_000.0 + j * 3600
    uid = "bc_" + hashlib.sha256(job_id.encode()).hexdigest()[:16]
    keys = [key_of(first + i) for i in range(size)]
    con.execute("BEGIN")
    con.execute(
        "INSERT INTO jobs (id, status, mode, created_at, updated_at, options, n_items, inputs_complete,"
        " stats) VALUES (?, 'completed', 'batch', ?, ?, '{}', ?, 1, '{}')",
        (job_id, now, now + 3000, size),
    )
    con.execute(
        "INSERT INTO provider_batches (id, job_id, provider, lane, status, provider_batch_id, n_calls,"
        " created_at, updated_at, info, provider_status, done, total, seen_at)"
        " VALUES (?,?,'openai',?,'collected',?,?,?,?,?,'completed',?,?,?)",
        (
            uid,
            job_id,
            f"openai|https://api.openai.com/v1|{MODEL}",
            f"batch_{uid[3:]}",
            size,
            now,
            now + 3000,
            json.dumps({"model": MODEL, "endpoint": ENDPOINT, "round": 1, "nonce": uid}),
            size,
            size,
            now + 2990,
        ),
    )
    con.executemany(
        "INSERT INTO calls (key, provider, model, endpoint, status, attempts, tier, job_id, response,"
        " input_tokens, output_tokens, cost, request_hash, batch_id, updated_at)"
        " VALUES (?, 'openai', ?, ?, 'succeeded', 1, 'batch', ?, ?, 24, 31, ?, ?, ?, ?)",
        (
            (k, MODEL, ENDPOINT, job_id, RESPONSE.format(n=first + i), "0.00001110", k[::-1], uid, now + 3000)
            for i, k in enumerate(keys)
        ),
    )
    con.executemany(
        "INSERT INTO items (job_id, idx, status, input, output, attempts) VALUES (?,?,'succeeded',?,?,1)",
        (
            (job_id, i, json.dumps({"text": f"input row {first + i}"}), json.dumps(f"answer {first + i}"))
            for i in range(size)
        ),
    )
    con.executemany(
        "INSERT INTO job_calls (job_id, key, item_idx, source) VALUES (?,?,?,'paid')",
        ((job_id, k, i) for i, k in enumerate(keys)),
    )
    con.executemany(
        "INSERT INTO waits (job_id, idx, key) VALUES (?,?,?)", ((job_id, i, k) for i, k in enumerate(keys))
    )
    con.execute("INSERT INTO job_item_counts (job_id, status, n) VALUES (?, 'succeeded', ?)", (job_id, size))
    con.execute("COMMIT")


# -- timing --------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def run_live_job(store: SQLiteStore, rep: int, per_job: int, rng: random.Random) -> dict[str, float]:
    """One batch job's store work at ``per_job`` items, step by step, as the engine does it."""
    job_id = f"job-live-{rep}-{time.time_ns():x}"
    uid = f"bc_live{rep}{rng.getrandbits(32):08x}"
    now = time.time()
    store.create_job(JobRecord(job_id, JobStatus.CREATED, "batch", now, now))
    store.set_job_status(job_id, JobStatus.RUNNING)
    keys = [fresh_key(rng) for _ in range(per_job)]
    t: dict[str, float] = {}

    def items() -> None:
        store.add_items(job_id, [(i, json.dumps({"text": f"live {i}"})) for i in range(per_job)])
        store.commit()

    def park() -> None:  # the admission of every item's call: look it up, then record it pending
        for start in range(0, per_job, 500):
            store.get_calls(keys[start : start + 500])
        store.begin_calls([(k, "openai", MODEL, ENDPOINT, k[::-1]) for k in keys], job_id)
        store.set_waits(job_id, list(enumerate(keys)))
        store.commit()

    t["add 50k items"] = timed(items)
    t["admit and park 50k calls"] = timed(park)
    t["record the batch (intent)"] = timed(
        lambda: store.batch_intent(uid, job_id, "openai", "openai|u|m", keys, {"round": 1, "nonce": uid})
    )
    t["batch submitted"] = timed(lambda: store.batch_submitted(uid, f"batch_{uid}"))
    found: list[str] = []
    t["batch_keys of the 50k batch"] = timed(lambda: found.extend(store.batch_keys(uid)))
    assert len(found) == per_job
    answers = [
        (k, RESPONSE.format(n=i), Usage(24, 31, requests=1), "batch", Decimal("0.0000111"))
        for i, k in enumerate(keys)
    ]

    def succeed() -> None:
        store.calls_succeeded(answers)
        store.link_calls([(job_id, k, i, LinkSource.PAID) for i, k in enumerate(keys)])
        store.commit()

    t["mark 50k calls succeeded"] = timed(succeed)

    def finish() -> None:
        store.finish_items(job_id, [(i, ItemStatus.SUCCEEDED, '"ok"', None) for i in range(per_job)])
        store.commit()

    t["finish 50k items"] = timed(finish)
    store.batch_ended(uid)
    store.batch_collected(uid)
    store.set_job_status(job_id, JobStatus.COMPLETED)
    return t


def index_cost(store: SQLiteStore, reps: int, rng: random.Random) -> tuple[float, float, float]:
    """What calls_by_batch costs: recording a 50k-call batch without it (median), and
    building it over the whole store (as a migration does), with the migration's recount."""
    conn = store._conn
    conn.execute("DROP INDEX calls_by_batch")
    times = []
    for rep in range(reps):
        job_id, uid = f"job-noindex-{rep}", f"bc_noindex{rep}{time.time_ns():x}"
        keys = [fresh_key(rng) for _ in range(PER_JOB)]
        store.begin_calls([(k, "openai", MODEL, ENDPOINT, k[::-1]) for k in keys], job_id)
        store.commit()
        times.append(
            timed(functools.partial(store.batch_intent, uid, job_id, "openai", "openai|u|m", keys, {}))
        )
    build = timed(
        lambda: conn.execute("CREATE INDEX calls_by_batch ON calls (batch_id) WHERE batch_id IS NOT NULL")
    )
    recount = timed(
        lambda: conn.execute("SELECT job_id, status, COUNT(*) FROM items GROUP BY 1, 2").fetchall()
    )
    return median(times), build, recount


def index_note(indexed: float, unindexed: float, per_call: float, scan: float) -> str:
    return (
        f"calls_by_batch costs {ms(indexed - unindexed)} ms per 50,000-call batch recorded "
        f"({indexed:.2f} s with it, {unindexed:.2f} s without) and {per_call:.0f} bytes a call on disk; "
        "without it every batch scanned every call at least twice (submitting it, collecting it): "
        f"{scan:.1f} s each here."
    )


def cli_in_process(*args: str) -> float:
    from batchain.cli import run_cli

    with quiet():
        start = time.perf_counter()
        code = run_cli(list(args))
        elapsed = time.perf_counter() - start
    assert code in (0, 1), (args, code)
    return elapsed


def cli_process(*args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "batchain.cli", *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return elapsed


def table_sizes(path: Path) -> dict[str, int]:
    con = sqlite3.connect(path)
    rows = con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    con.close()
    return {name: int(size) for name, size in rows}


def ms(seconds: float) -> str:
    return fmt(seconds * 1000, 2 if seconds < 0.01 else 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10_000_000, help="calls in the store (default 10,000,000)")
    ap.add_argument("--db", type=Path, default=Path("/tmp/batchain-bench-store/store.sqlite"))
    ap.add_argument("--reuse", action="store_true", help="use the store at --db as it is (no build)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(time.time_ns())

    built: dict[str, Any] = {}
    if args.reuse:  # what the build recorded
        con = sqlite3.connect(args.db)
        row = con.execute("SELECT value FROM meta WHERE key='bench_build'").fetchone()
        con.close()
        built = {**(json.loads(row[0]) if row else {}), "reused": True}
    else:
        print(f"building {args.calls:,} calls in {args.db} ...", flush=True)
        built = build(args.db, args.calls, PER_JOB)
        print(f"  built in {built['total_s']:.0f} s", flush=True)
    size_before = sum(p.stat().st_size for p in (args.db, Path(f"{args.db}-wal")) if p.exists())

    store = SQLiteStore(args.db)
    # the built calls are the built jobs' items (key_of(0), key_of(1), ...)
    built_calls = store._read("SELECT SUM(n) FROM job_item_counts WHERE job_id LIKE 'job-bench-%'")[0][0]
    stored = [key_of(rng.randrange(built_calls)) for _ in range(2000)]

    # admit lookups: one call by its key (answered, or unknown)
    def lookups(keys: list[str]) -> float:
        return median([timed(lambda k=k: store.get_call(k)) for k in keys])

    one_hit = lookups(stored)
    one_miss = lookups([fresh_key(rng) for _ in range(2000)])

    live = [run_live_job(store, rep, PER_JOB, rng) for rep in range(args.reps)]
    steps = {name: median([t[name] for t in live]) for name in live[0]}
    job_id = store.list_jobs(1)[0].id  # the last live job: 50,000 calls, finished

    counters = median([timed(lambda: store.item_counts(job_id)) for _ in range(1000)])
    walked = median(
        [
            timed(
                lambda: store._read(
                    "SELECT status, COUNT(*) FROM items WHERE job_id=? GROUP BY status", (job_id,)
                )
            )
            for _ in range(args.reps)
        ]
    )
    uid = store.job_batches(job_id)[0].id
    # the previous schema's query, kept off calls_by_batch (on the primary key: the table)
    old_keys = "SELECT key FROM calls INDEXED BY sqlite_autoindex_calls_1 WHERE batch_id=?"
    assert store._read("EXPLAIN QUERY PLAN " + old_keys, (uid,))[0][3] == "SCAN calls"
    scan = timed(lambda: store._read(old_keys, (uid,)))
    n_jobs = len(store.list_jobs(None))
    n_calls = store._read("SELECT SUM(n) FROM job_item_counts")[0][0]
    unindexed, index_build, recount = index_cost(store, args.reps, rng)
    store.close()

    jobs_cli = median([cli_in_process("jobs", "--store", str(args.db)) for _ in range(args.reps)])
    cli_in_process("status", "job-bench-00001", "--store", str(args.db))  # imports, price catalog
    # the first look at the finished job computes its report aggregates (as for a running
    # job, whose aggregates are never kept); later looks read them from job_memo
    status_first = cli_in_process("status", job_id, "--store", str(args.db))
    status_cli = median([cli_in_process("status", job_id, "--store", str(args.db)) for _ in range(args.reps)])
    jobs_proc = median([cli_process("jobs", "--store", str(args.db)) for _ in range(3)])
    status_proc = median([cli_process("status", job_id, "--store", str(args.db)) for _ in range(3)])
    compact = cli_in_process("compact", "job-bench-00000", "--store", str(args.db))

    sizes = table_sizes(args.db)
    size_after = sum(p.stat().st_size for p in (args.db, Path(f"{args.db}-wal")) if p.exists())
    gb = 1e9
    results = {
        "calls": n_calls,
        "jobs": n_jobs,
        "one lookup hit": one_hit,
        "one lookup miss": one_miss,
        **steps,
        "item_counts (counters)": counters,
        "item_counts walking the job's items (before)": walked,
        "batch_keys by a full scan (before)": scan,
        "record the batch (intent) without calls_by_batch": unindexed,
        "building calls_by_batch (migration)": index_build,
        "counting every job's items (migration)": recount,
        "batchain jobs (in process)": jobs_cli,
        "batchain status, aggregates computed (in process)": status_first,
        "batchain status, aggregates kept (in process)": status_cli,
        "batchain jobs (new process)": jobs_proc,
        "batchain status (new process)": status_proc,
        "batchain compact of a 50k-call job": compact,
    }
    print(json.dumps(results, indent=1))
    rows = [
        ["get_call by key (admit), an answered call", f"{one_hit * 1e6:.0f} µs", "PRIMARY KEY"],
        ["get_call by key (admit), an unknown call", f"{one_miss * 1e6:.0f} µs", "PRIMARY KEY"],
    ]
    how = {
        "add 50k items": "PRIMARY KEY; items_by_status; counters once per call",
        "admit and park 50k calls": "get_calls by 500 keys, begin_calls, set_waits",
        "record the batch (intent)": "calls by key; calls_by_batch gets its 50k entries",
        "batch submitted": "calls_by_batch (was: a scan of every call)",
        "batch_keys of the 50k batch": "covering calls_by_batch (was: a scan of every call)",
        "mark 50k calls succeeded": "PRIMARY KEY; no index touched (status is in none but partial ones)",
        "finish 50k items": "PRIMARY KEY; items_by_status; counters once per call",
    }
    rows += [[f"{name} (50,000)", f"{ms(v)} ms", how[name]] for name, v in steps.items()]
    rows += [
        ["item_counts of a 50k-item job", f"{counters * 1e6:.0f} µs", "job_item_counts (counters)"],
        ["  before: counting the job's items", f"{ms(walked)} ms", "items_by_status, every item of the job"],
        ["batch_keys, before: a full scan of calls", f"{ms(scan)} ms", "(the query of the previous schema)"],
        [
            "record the batch (intent) without calls_by_batch (50,000)",
            f"{ms(unindexed)} ms",
            "what the index costs its writes",
        ],
        ["batchain jobs (in process)", f"{ms(jobs_cli)} ms", "jobs_by_created, counters"],
        [
            "batchain status of a 50k-call job, aggregates computed (in process)",
            f"{ms(status_first)} ms",
            "the job's links and calls by index (a running job; a finished one's first look)",
        ],
        [
            "batchain status of a finished 50k-call job (in process)",
            f"{ms(status_cli)} ms",
            "its aggregates kept in job_memo",
        ],
        ["batchain jobs (new process)", f"{ms(jobs_proc)} ms", "with Python start-up and imports"],
        [
            "batchain status, finished job (new process)",
            f"{ms(status_proc)} ms",
            "with Python start-up and imports",
        ],
        ["batchain compact of a 50k-call job", f"{ms(compact)} ms", "waits by job; request bodies by link"],
    ]
    rows += [
        [
            "migrating a version-1 store: building calls_by_batch",
            f"{index_build:.1f} s",
            "once, on first open",
        ],
        ["migrating a version-1 store: item counters", f"{recount:.1f} s", "once, on first open"],
    ]
    size_rows = [["whole store (file and WAL)", f"{size_after / gb:.2f} GB", ""]]
    for name in ("calls", "calls_by_batch", "items", "items_by_status", "job_calls", "waits"):
        size_rows.append(
            [
                name,
                f"{sizes.get(name, 0) / gb:.2f} GB",
                f"{sizes.get(name, 0) / max(n_calls, 1):.0f} B per call",
            ]
        )
    notes = [
        f"Store: {n_calls:,} calls in {n_jobs:,} jobs (50,000 calls each, one provider batch each), "
        "every call answered (a ~500-byte OpenAI chat completion), with its item, its link and its wait; "
        "built directly with executemany in key order "
        + (f"in {built['total_s']:.0f} s" if "total_s" in built else "(an existing store)")
        + ". Keys are 64 hex digits like real ones but increasing, so the build appends: a store grown "
        "by real jobs inserts keys at random places and is larger for the same rows until VACUUM "
        "(`batchain compact --vacuum`) packs it.",
        f"Each timed step is the median of {args.reps} runs, each on a new 50,000-item job added to the "
        "full store, through the store's own methods (commit included); lookups are medians of 2,000.",
        "Before this change `batch_keys`, `batch_submitted`, `batch_lost` and `batch_abandoned` found "
        "a batch's calls by scanning every call (`calls.batch_id` had no index), and item counts walked "
        "the job's items; both rows marked 'before' run the old query on the same store.",
        index_note(
            steps["record the batch (intent)"],
            unindexed,
            sizes.get("calls_by_batch", 0) / max(n_calls, 1),
            scan,
        ),
        "Marking answered calls is the slowest step, as it was before this change (no index holds a "
        "call's status): 50,000 new calls with hashed keys sit on as many pages of the calls table, "
        "each read and rewritten with its ~1 KB response. A 64 MiB SQLite page cache (tried) did not "
        "change it at this size.",
        f"Store size before the timed steps {size_before / gb:.2f} GB; the sizes below are after."
        + (
            " This run timed the steps on a store an earlier run had built (`--reuse`), holding the"
            " jobs that run added too."
            if built.get("reused")
            else ""
        ),
    ]
    tables = [
        {
            "title": f"Store operations at {n_calls:,} calls (medians)",
            "columns": ["operation", "time", "how"],
            "rows": rows,
        },
        {
            "title": "Store size (dbstat)",
            "columns": ["table or index", "size", "per call"],
            "rows": size_rows,
        },
    ]
    if not args.no_save:
        path = save(
            "store",
            "The store at 10,000,000 calls (issue 13)",
            "python bench/bench_store.py" + (f" --calls {args.calls}" if args.calls != 10_000_000 else ""),
            tables,
            notes=notes,
            raw={"results": results, "sizes": sizes, "built": built},
        )
        print("wrote", path)
    for t in tables:
        print(t["title"])
        for row in t["rows"]:
            print("   ", " | ".join(str(c) for c in row))


if __name__ == "__main__":
    main()
