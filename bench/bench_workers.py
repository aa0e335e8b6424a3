"""Issue 16 benchmark: the PostgreSQL store, and workers sharing a store's jobs and one
job's items.

1. The store's cost: one realtime job (``prompt | model | parser``, a sandbox at 20 ms with
   limits far above the load) run by ``batchain worker --until-idle`` on a SQLite file and
   on a PostgreSQL database on this machine: wall, and the workers' CPU per call.
2. One realtime job's items shared by 1, 2 and 4 ``batchain worker`` processes (PostgreSQL):
   (a) CPU-bound: the sandbox at 20 ms, 64 calls in flight per worker; (b) latency-bound:
   the sandbox at 300 ms, 8 calls in flight per worker (the job's ``max_concurrency``),
   which is where more workers (more machines) pay off.
3. Four realtime jobs run by 1, 2 and 4 workers (each job in one worker or shared).
4. Batch mode: a 3-stage chain, 1 and 4 workers. A batch job's provider batches are one
   worker's (its lease holder's); the others only look: no slower than one.

Medians of ``--reps`` runs (the batch case: one run each). The PostgreSQL server is started
from the machine's binaries (Debian's ``postgresql`` package), as the tests start it, or
``$BATCHAIN_TEST_PG``.

python bench/bench_workers.py            # about 25 minutes
python bench/bench_workers.py --quick    # smaller, for a smoke check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import ROOT, fmt, median, sandbox, save, show

sys.path.insert(0, str(ROOT.parent))  # tests/pgserver.py: the tests' own server
from tests.pgserver import drop_schema, fresh_schema_url

import batchain
from batchain.sandbox import Sandbox

CHAIN = f"{ROOT / 'clients' / 'worker_chain.py'}:chain"
THREE = f"{ROOT / 'clients' / 'worker_chain.py'}:three"
WORKER = [sys.executable, "-m", "batchain.cli", "worker", "--until-idle", "--poll-interval", "0.2"]


def _queue(store: str, jobs: int, n: int, chain: str, **options: Any) -> list[str]:
    # the chain file reads the sandbox's URL when imported: import it afresh for this sandbox
    for name in [m for m in sys.modules if m.startswith("batchain_chain_")]:
        del sys.modules[name]
    ids = []
    for k in range(jobs):
        inputs = [{"n": i, "job": f"{k}-{time.time_ns()}"} for i in range(n)]
        ids.append(batchain.submit(chain, inputs, store=store, **options).id)
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
        _, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"worker failed: {err.decode()[-2000:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _done(store: str, ids: list[str], n: int) -> float:
    """Check every item succeeded; the share of the items run by the busiest worker."""
    shares = []
    for job_id in ids:
        job = batchain.Job.open(job_id, store=store)
        counts = job.counts
        assert counts["succeeded"] == n, (job_id, counts)
        runners = job.record.stats.get("runners", {})
        shares.append(max(runners.values(), default=n) / n)
    return max(shares)


def _one_run(sb: Sandbox, backend: str, jobs: int, n: int, workers: int, **options: Any) -> dict[str, float]:
    base_url = sb.openai_base_url
    env = dict(os.environ, BENCH_OPENAI_BASE_URL=base_url, PYTHONPATH=str(ROOT.parent / "src"))
    os.environ["BENCH_OPENAI_BASE_URL"] = base_url
    chain = options.pop("chain", CHAIN)
    options.setdefault("mode", "realtime")
    calls = 3 if chain == THREE else 1
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "s.sqlite") if backend == "sqlite" else fresh_schema_url()
        try:
            start = time.perf_counter()
            ids = _queue(store, jobs, n, chain, **options)
            submit = time.perf_counter() - start
            wall, cpu = _workers(store, workers, env)
            busiest = _done(store, ids, n)
        finally:
            if backend == "postgresql":
                drop_schema(store)
    ledger = sb.ledger()
    assert len(ledger) == jobs * n * calls and not sb.duplicates(), "a call billed twice or not at all"
    sb.reset()
    # a worker process's start-up (imports) is in its CPU: counted, as a user pays it
    return {
        "wall_s": wall,
        "submit_s": submit,
        "cpu_s": cpu,
        "cpu_ms_per_call": cpu / (jobs * n * calls) * 1000,
        "busiest_share": busiest,
    }


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: median([r[k] for r in runs]) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000, help="items per realtime job")
    ap.add_argument("--slow-n", type=int, default=1000, help="items of the latency-bound job")
    ap.add_argument("--batch-n", type=int, default=20000, help="items of the 3-stage batch job")
    ap.add_argument("--batch-s", type=float, default=10.0, help="the sandbox's provider batch time")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--only",
        choices=["realtime", "batch"],
        help="run these cases only; the others' results are kept from bench/results/workers.json",
    )
    args = ap.parse_args()
    reps, n, slow_n, batch_n = (
        (1, 300, 200, 600) if args.quick else (args.reps, args.n, args.slow_n, args.batch_n)
    )
    params = {"reps": reps, "n": n, "slow_n": slow_n, "batch_n": batch_n, "batch_s": args.batch_s}
    results: dict[str, dict[str, float]] = {}
    if args.only:
        kept = json.loads((ROOT / "results" / "workers.json").read_text())["raw"]
        results.update({k: v for k, v in kept.items() if k.startswith("batch") != (args.only == "batch")})
        for key in ("reps", "n", "slow_n") if args.only == "batch" else ("batch_n", "batch_s"):
            params[key] = kept["params"][key]
        reps, n, slow_n, batch_n = (int(params[k]) for k in ("reps", "n", "slow_n", "batch_n"))

    def case(
        sb: Sandbox, key: str, backend: str, jobs: int, items: int, workers: int, k: int, **opt: Any
    ) -> None:
        runs = [_one_run(sb, backend, jobs, items, workers, **opt) for _ in range(k)]
        results[key] = _medians(runs)
        print(key, results[key], flush=True)

    if args.only != "batch":
        with sandbox(latency_ms=20) as sb:  # no rate limits: the load is the only limit
            case(sb, "sqlite 1 1", "sqlite", 1, n, 1, reps)
            case(sb, "postgresql 1 1", "postgresql", 1, n, 1, reps)
            for w in (2, 4):
                case(sb, f"postgresql 1 {w}", "postgresql", 1, n, w, reps)
            for w in (1, 2, 4):
                case(sb, f"postgresql 4 {w}", "postgresql", 4, n, w, reps)
        with sandbox(latency_ms=300) as sb:
            for w in (1, 2, 4):
                case(sb, f"slow 1 {w}", "postgresql", 1, slow_n, w, reps, max_concurrency=8)
    knobs = {"batch_validating_s": 0.5, "batch_processing_s": params["batch_s"], "batch_finalizing_s": 0.5}
    with sandbox(**knobs) if args.only != "realtime" else contextlib.nullcontext() as sb:
        for w in (1, 4) if args.only != "realtime" else ():
            case(
                sb,
                f"batch 1 {w}",
                "postgresql",
                1,
                batch_n,
                w,
                1,
                chain=THREE,
                mode="batch",
                poll_min=1.0,
                poll_max=2.0,
            )

    def row(key: str, label: str, base: str | None = None, share: bool = False) -> list[str]:
        r = results[key]
        vs = fmt(results[base]["wall_s"] / r["wall_s"]) + "x" if base else "-"
        out = [label, fmt(r["wall_s"]), fmt(r["cpu_ms_per_call"], 3), vs]
        return [*out, f"{r['busiest_share']:.0%}"] if share else out

    def batch_row(key: str, label: str, base: str | None = None) -> list[str]:
        r = results[key]
        total = r["submit_s"] + r["wall_s"]
        vs = fmt((results[base]["submit_s"] + results[base]["wall_s"]) / total) + "x" if base else "-"
        return [label, fmt(r["submit_s"]), fmt(r["wall_s"]), fmt(total), vs]

    head = ["run", "wall s", "worker CPU ms / call", "speed-up (wall)"]
    shared = [*head, "items run by the busiest worker"]
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
            "title": f"One realtime job of {n:,} items shared by workers, CPU-bound: sandbox at 20 ms, "
            f"64 calls in flight per worker (PostgreSQL, medians of {reps})",
            "columns": shared,
            "rows": [
                row("postgresql 1 1", "1 worker", share=True),
                row("postgresql 1 2", "2 workers", "postgresql 1 1", share=True),
                row("postgresql 1 4", "4 workers", "postgresql 1 1", share=True),
            ],
        },
        {
            "title": f"One realtime job of {slow_n:,} items shared by workers, latency-bound: sandbox at "
            f"300 ms, 8 calls in flight per worker (PostgreSQL, medians of {reps})",
            "columns": shared,
            "rows": [
                row("slow 1 1", "1 worker", share=True),
                row("slow 1 2", "2 workers", "slow 1 1", share=True),
                row("slow 1 4", "4 workers", "slow 1 1", share=True),
            ],
        },
        {
            "title": f"Four realtime jobs of {n:,} items (PostgreSQL, medians of {reps})",
            "columns": shared,
            "rows": [
                row("postgresql 4 1", "1 worker", share=True),
                row("postgresql 4 2", "2 workers", "postgresql 4 1", share=True),
                row("postgresql 4 4", "4 workers", "postgresql 4 1", share=True),
            ],
        },
        {
            "title": f"Batch mode, one job of {batch_n:,} items x 3 stages, sandbox batches of "
            f"{params['batch_s']:g} s (PostgreSQL, one run each)",
            "columns": ["run", "submit s", "workers s", "wall s", "speed-up (wall)"],
            "rows": [
                batch_row("batch 1 1", "1 worker"),
                batch_row("batch 1 4", "4 workers", "batch 1 1"),
            ],
        },
    ]
    notes = [
        "Chain prompt | gpt-4o-mini | StrOutputParser (batch: three such stages), queued with "
        "batchain.submit(...) and run by `batchain worker --until-idle` processes started together;"
        " wall from their start to the last one's exit; CPU of the worker processes (start-up and "
        "imports included) per call. Every run checks the sandbox ledger: each call billed once.",
        "A realtime job's items are shared: each worker takes chunks of 100 items (the job's lease "
        "holder also reads the inputs and ends the job). 'Items run by the busiest worker' is the "
        "largest share of a job's items one worker ran (100% when one worker ran it all).",
        "CPU-bound: the machine has 2 cores, which the workers share with the sandbox and the "
        "PostgreSQL server, and a PostgreSQL store takes one writer at a time (a write transaction "
        "holds the store's advisory lock for one event-loop iteration, as SQLite's write lock "
        "does): more workers on one machine add start-up CPU and take turns at the store. Latency-"
        "bound (a model slower than the client, the usual case): each worker adds its own calls in "
        "flight, so more workers (on more machines) add throughput.",
        "Batch mode: a job's provider batches are submitted, polled and collected by one worker "
        "(its lease holder); the others take it over if it dies. Its items are not shared: the time"
        " is the provider's. 'submit s' is `batchain.submit(...)` in the benchmark's process (it "
        "returns once the first stage's calls are at the provider; with sandbox batches of seconds"
        " the first ones end while it is still building, and it goes on with them), 'workers s' "
        "the workers' run from their start to the last one's exit; the wall is both.",
    ]
    path = save(
        "workers",
        "PostgreSQL store and workers (issue 16)",
        "python bench/bench_workers.py",
        tables,
        notes,
        {**results, "params": params},
    )
    show(tables, path)


if __name__ == "__main__":
    main()
