"""Where batchain's client time goes in batch mode: the store's statements, and everything
else, next to the hand-written SDK script in the same run (issue 13's open goal: client
time at 50,000 items at most 5x the script's).

python bench/bench_client_split.py                 # 50,000 items, 3 runs of each client
python bench/bench_client_split.py --n 10000 --reps 1

Each run is bench/bench_batch.py's (``one_run``): the single-stage chain, submit in one
process, the sandbox's batches left to end, collect in another, the ledger checked.
batchain runs under bench/clients/store_timed.py, which times every statement of the SQLite store on the
thread that runs it. Writes bench/results/client_split.json (``--no-save``: print only).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench_batch import SANDBOX_CLIENT_TIME, SDK_GOAL_ITEMS, one_run
from harness import fmt, median, sandbox, save, show

PHASES = ("submit", "collect")


def _store_s(run: dict[str, Any], phase: str) -> float:
    return float(sum(t for t, _ in run[phase]["store"].values()))


def split_table(n: int, runs: list[dict[str, Any]], sdk: list[dict[str, Any]]) -> dict[str, Any]:
    rows: list[list[str]] = []
    sdk_e2e = median([r["e2e_cpu_s"] for r in sdk])
    ours = {p: median([r[p]["cpu_s"] for r in runs]) for p in PHASES}
    store = {p: median([_store_s(r, p) for r in runs]) for p in PHASES}
    e2e = median([r["submit"]["cpu_s"] + r["collect"]["cpu_s"] for r in runs])
    e2e_store = median([_store_s(r, "submit") + _store_s(r, "collect") for r in runs])
    sdk_phase = {p: median([r[p]["cpu_s"] for r in sdk]) for p in PHASES}
    per_item = 1e6 / n

    def row(what: str, sub: float, col: float, total: float) -> list[str]:
        return [what, fmt(sub), fmt(col), fmt(total), fmt(total * per_item, 1), f"{total / sdk_e2e:.2f}x"]

    rows.append(row("hand-written SDK script", sdk_phase["submit"], sdk_phase["collect"], sdk_e2e))
    rows.append(row("batchain", ours["submit"], ours["collect"], e2e))
    rows.append(row("  its store's statements", store["submit"], store["collect"], e2e_store))
    rest = {p: ours[p] - store[p] for p in PHASES}
    rows.append(row("  everything else", rest["submit"], rest["collect"], e2e - e2e_store))
    budget = 5 * sdk_e2e
    rows.append(["the goal: 5x the script", "", "", fmt(budget), fmt(budget * per_item, 1), "5.00x"])
    return {
        "title": f"Client CPU seconds at {n:,} items (medians of {len(runs)} runs of each client)",
        "columns": ["", "submit", "collect", "end to end", "µs per item", "/ the script"],
        "rows": rows,
    }


def statements_table(n: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows: list[tuple[float, list[str]]] = []
    for phase in PHASES:
        names = {name for r in runs for name in r[phase]["store"]}
        for name in names:
            secs = median([r[phase]["store"].get(name, [0.0, 0])[0] for r in runs])
            calls = median([r[phase]["store"].get(name, [0.0, 0])[1] for r in runs])
            if secs >= 0.005:
                rows.append((secs, [phase, name, f"{calls:.0f}", fmt(secs, 3), fmt(secs * 1e6 / n, 2)]))
    rows.sort(key=lambda r: (PHASES.index(r[1][0]), -r[0]))
    return {
        "title": f"The store's statements at {n:,} items, 5 ms or more (medians)",
        "columns": ["phase", "statement", "calls", "seconds", "µs per item"],
        "rows": [r for _, r in rows],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=SDK_GOAL_ITEMS)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    runs: list[dict[str, Any]] = []
    sdk: list[dict[str, Any]] = []
    with sandbox(**SANDBOX_CLIENT_TIME) as sb:
        for rep in range(args.reps):
            # alternate which client goes first: the machine's speed drifts within a run
            for impl in ("batchain", "sdk") if rep % 2 == 0 else ("sdk", "batchain"):
                run = one_run(sb, "batchain_timed" if impl == "batchain" else "sdk", sys.executable, args.n)
                if run["billed_twice"]:
                    raise RuntimeError(f"{impl}: {run['billed_twice']} requests billed twice")
                (runs if impl == "batchain" else sdk).append(run)
                print(impl, "run", rep + 1, "done", flush=True)
    tables = [split_table(args.n, runs, sdk), statements_table(args.n, runs)]
    notes = [
        "batchain runs under bench/clients/store_timed.py: each statement of its SQLite store "
        "(_write, _write_many, _read, commit) is timed with time.thread_time on the thread that "
        "runs it, so the store's checkpoint thread is in 'everything else' (it copies the "
        "write-ahead log into the store file). The timing wrapper adds a few microseconds per "
        "statement, not per row.",
        "Store statements outside the clients' timed sections (none in submit or collect "
        "but a few job reads after them) are counted too: a few milliseconds at most.",
    ]
    if args.no_save:
        for t in tables:
            print(t["title"])
            for row in t["rows"]:
                print("   ", " | ".join(row))
        return
    path = save(
        "client_split",
        "Where batchain's client time goes in batch mode (issue 13)",
        "python bench/bench_client_split.py" + ("" if args.n == SDK_GOAL_ITEMS else f" --n {args.n}"),
        tables,
        notes,
        raw={"batchain": runs, "sdk": sdk},
    )
    show(tables, path)


if __name__ == "__main__":
    main()
