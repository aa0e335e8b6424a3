"""What replays cost on the ordinary (coroutine) path: client CPU per item and stage of a
3-stage batch-mode job, when its items fit in the window and when they leave it.

    python bench/bench_replays.py                 # 3,000 items; window 3,000 and 500; 3 runs each
    python bench/bench_replays.py --n 6000 --small 1000 --reps 2

An item whose calls are all at a provider leaves the window; when its batch ends it comes
back and its chain runs again up to its next call, its earlier stages answered from the
store (see the README's rounds). Each run is ``bench/clients/any_size.py --shape three``
(gpt-4o-mini, claude-haiku-4-5, gpt-4o) in a fresh process against the sandbox in its own
process, with 2 s provider batches; the two windows alternate run by run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness import fmt, median, run_client, sandbox, save, show

KNOBS = {"batch_validating_s": 0.2, "batch_processing_s": 2.0, "batch_finalizing_s": 0.2, "latency_ms": 0.0}
STAGES = 3


def one_run(n: int, window: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-replays-"))
    try:
        with sandbox(**KNOBS) as sb:
            r = run_client(
                "any_size.py",
                *("--shape", "three", "--n", str(n), "--store", str(work / "s.sqlite")),
                *("--openai-url", sb.openai_base_url, "--anthropic-url", sb.anthropic_base_url),
                *("--window", str(window)),
                timeout=3600,
            )
            billed, twice = len(sb.ledger()), len(sb.duplicates())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    paid = r["stats"]["paid"]
    if r["ok"] != n or twice or paid != n * STAGES or billed != paid:
        raise RuntimeError(f"window {window}: {r['ok']}/{n} ok, {paid} paid, {billed} billed, {twice} twice")
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000, help="items (the large window holds them all)")
    ap.add_argument("--small", type=int, default=500, help="the small window")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    windows = [args.n, args.small]
    runs: dict[int, list[dict[str, Any]]] = {w: [] for w in windows}
    for rep in range(args.reps):
        for w in windows if rep % 2 == 0 else reversed(windows):
            r = one_run(args.n, w)
            runs[w].append(r)
            left = r["stats"].get("items_left_window", 0)
            print(f"window {w:,}: CPU {r['cpu_s']:.1f} s, left the window {left}", flush=True)
    rows = []
    per: dict[int, float] = {}
    for w in windows:
        rs = runs[w]
        cpu = median([r["cpu_s"] for r in rs])
        per[w] = 1000 * cpu / (args.n * STAGES)
        rows.append(
            [
                f"{w:,}",
                str(int(median([r["stats"].get("rounds", 0) for r in rs]))),
                str(int(median([r["stats"].get("items_left_window", 0) for r in rs]))),
                fmt(cpu, 1),
                fmt(per[w], 2),
                fmt(per[w] / per[args.n], 2) + "x",
                fmt(median([r["peak_rss_mb"] for r in rs]), 0),
            ]
        )
    tables = [
        {
            "title": f"{args.n:,} items of a 3-stage chain in batch mode, by window (medians of "
            f"{args.reps} runs each)",
            "columns": [
                "window",
                "rounds",
                "items left the window",
                "client CPU s",
                "CPU ms per item and stage",
                "vs all in the window",
                "peak RSS MB",
            ],
            "rows": rows,
        }
    ]
    notes = [
        "An item that leaves the window runs its chain again when it comes back: a 3-stage item "
        "that leaves at every stage runs 1 + 2 + 3 stages of replay beside its 3 calls, each "
        "answered stage going through LangChain's runnable machinery again (config, callbacks), "
        "and the store read and written per replayed call. A larger window= saves it, in memory.",
        "Sandbox: provider batches of 2 s; in every run the sandbox ledger billed each call once, "
        "and exactly the calls batchain counted as paid (checked).",
    ]
    cmd = f"python bench/bench_replays.py --n {args.n} --small {args.small} --reps {args.reps}"
    path = save(
        "replays",
        "What replays cost on the ordinary path (issue 13): client CPU by window",
        cmd,
        tables,
        notes,
        raw=runs,
    )
    show(tables, path)


if __name__ == "__main__":
    main()
