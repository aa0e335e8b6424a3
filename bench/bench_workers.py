"""Issue 16 benchmark: the PostgreSQL store and workers.

1. The store's cost: one realtime job (``prompt | model | parser``, a sandbox at 20 ms with
   limits far above the load) run by ``batchain worker --until-idle`` on a SQLite file and
   on a PostgreSQL database on this machine: wall, and the worker's CPU per call.
2. Workers sharing a store's jobs: 4 realtime jobs queued (``batchain.submit(...,
   mode="realtime")``) on PostgreSQL, run by 1, 2 and 4 ``batchain worker`` processes started
   together: wall until all are done, the workers' CPU per call, and the speed-up over one.
3. One job, 1 and 4 workers: a job runs in one worker at a time (its lease), so more
   workers do not speed one job up yet (items shared among workers are the next step).

Medians of ``--reps`` runs. The PostgreSQL server is started from the machine's binaries
(Debian's ``postgresql`` package), as the tests start it, or ``$BATCHAIN_TEST_PG``.

python bench/bench_workers.py            # about 5 minutes
python bench/bench_workers.py --quick    # smaller, for a smoke check
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, fmt, median, sandbox, save, show

sys.path.insert(0, str(ROOT.parent))  # tests/pgserver.py: the tests' own server
from tests.pgserver import drop_schema, fresh_schema_url

import batchain

CHAIN = f"{ROOT / 'clients' / 'worker_chain.py'}:chain"
WORKER = [sys.executable, "-m", "batchain.cli", "worker", "--until-idle", "--poll-interval", "0.2"]


def _queue(store: str, jobs: int, n: int) -> list[str]:
    ids = []
    for k in range(jobs):
        inputs = [{"n": i, "job": f"{k}-{time.time_ns()}"} for i in range(n)]
        ids.append(batchain.submit(CHAIN, inputs, store=store, mode="realtime").id)
    return ids


def _workers(store: str, count: int, env: dict[str, str]) -> tuple[float, float]:
    """Start ``count`` workers together; (wall until the last exits, their CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*WORKER, "--store", store], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(count)
    ]
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"worker failed: {err.decode()[-2000:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _done(store: str, ids: list[str], n: int) -> None:
    for job_id in ids:
        counts = batchain.Job.open(job_id, store=store).counts
        assert counts["succeeded"] == n, (job_id, counts)


def _one_run(base_url: str, backend: str, jobs: int, n: int, workers: int) -> dict[str, float]:
    env = dict(os.environ, BENCH_OPENAI_BASE_URL=base_url, PYTHONPATH=str(ROOT.parent / "src"))
    os.environ["BENCH_OPENAI_BASE_URL"] = base_url
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "s.sqlite") if backend == "sqlite" else fresh_schema_url()
        try:
            ids = _queue(store, jobs, n)
            wall, cpu = _workers(store, workers, env)
            _done(store, ids, n)
        finally:
            if backend == "postgresql":
                drop_schema(store)
    # a worker process's start-up (imports) is in its CPU: counted, as a user pays it
    return {"wall_s": wall, "cpu_s": cpu, "cpu_ms_per_call": cpu / (jobs * n) * 1000}


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: median([r[k] for r in runs]) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000, help="items per job")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    reps, n = (1, 300) if args.quick else (args.reps, args.n)
    results: dict[str, dict[str, float]] = {}
    with sandbox(latency_ms=20) as sb:  # no rate limits: the load is the only limit
        cases = [("sqlite", 1, 1), ("postgresql", 1, 1)]
        cases += [("postgresql", 4, w) for w in (1, 2, 4)]
        cases += [("postgresql", 1, 4)]
        for backend, jobs, workers in cases:
            runs = []
            for _ in range(reps):
                runs.append(_one_run(sb.openai_base_url, backend, jobs, n, workers))
                sb.reset()
            results[f"{backend} {jobs} {workers}"] = _medians(runs)
            print(backend, jobs, workers, results[f"{backend} {jobs} {workers}"], flush=True)

    def row(key: str, label: str, base: str | None = None) -> list[str]:
        r = results[key]
        vs = fmt(results[base]["wall_s"] / r["wall_s"]) + "x" if base else "-"
        return [label, fmt(r["wall_s"]), fmt(r["cpu_ms_per_call"], 3), vs]

    head = ["run", "wall s", "worker CPU ms / call", "speed-up (wall)"]
    tables = [
        {
            "title": f"The store's cost: one realtime job of {n:,} items, one worker (medians of {reps})",
            "columns": head,
            "rows": [
                row("sqlite 1 1", "SQLite file"),
                row("postgresql 1 1", "PostgreSQL (local server)", "sqlite 1 1"),
            ],
        },
        {
            "title": f"Workers sharing a PostgreSQL store's jobs: 4 realtime jobs of {n:,} items "
            f"(medians of {reps})",
            "columns": head,
            "rows": [
                row("postgresql 4 1", "1 worker"),
                row("postgresql 4 2", "2 workers", "postgresql 4 1"),
                row("postgresql 4 4", "4 workers", "postgresql 4 1"),
            ],
        },
        {
            "title": f"One job of {n:,} items: 1 and 4 workers (a job runs in one worker at a time)",
            "columns": head,
            "rows": [
                row("postgresql 1 1", "1 worker"),
                row("postgresql 1 4", "4 workers", "postgresql 1 1"),
            ],
        },
    ]
    notes = [
        "Sandbox: 20 ms a request, no rate limits; chain prompt | gpt-4o-mini | StrOutputParser, queued with "
        "batchain.submit(..., mode='realtime') and run by `batchain worker --until-idle` processes started "
        "together; wall from their start to the last one's exit; CPU of the worker processes (start-up and "
        "imports included) per call.",
        "More workers do not run more jobs at once faster here, for two reasons: the machine has 2 cores, "
        "which the workers share with the sandbox and the PostgreSQL server; and a PostgreSQL store takes "
        "one writer at a time (a write transaction holds the store's advisory lock for one event-loop "
        "iteration, as SQLite's write lock does), so workers writing at once take turns. Row locks instead "
        "of the store-wide lock are the next step for scaling, with items of one job shared among workers.",
        "One job with 4 workers: the job runs in one worker (its lease); the other three only look for jobs, "
        "which is what costs the extra CPU and wall here.",
    ]
    path = save(
        "workers",
        "PostgreSQL store and workers (issue 16)",
        "python bench/bench_workers.py",
        tables,
        notes,
        results,
    )
    show(tables, path)


if __name__ == "__main__":
    main()
