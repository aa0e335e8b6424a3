"""Batch mode at any size (issue 13): a job takes about (stages x one provider batch's time)
whatever its number of items, in bounded memory.

    python bench/bench_any_size.py                        # 1,000,000 x 1 stage, 200,000 x 3 stages
    python bench/bench_any_size.py --one 100000 --three 20000 --batch-s 10   # smaller

The sandbox runs in its own process with a fixed provider batch time (``--batch-s``, 30 s by
default: every batch ends that long after it is created, however large, unless the sandbox
itself cannot process it that fast, which the table shows). One client process runs
``batchain.run(chain, generator, mode="batch")`` end to end. For each stage (each model) the
store tells when its first and last provider batches were created and ended: a stage went
out as one round when its last batch was created before its first ended. The bound is
``stages x batch time + the client's own CPU time``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import fmt, run_client, sandbox, save

STAGES = {"one": 1, "three": 3}
TITLES = {
    "one": "prompt | gpt-4o-mini | parser (bulk path)",
    "three": "3 stages: gpt-4o-mini, claude-haiku-4-5, gpt-4o (ordinary path, replayed from the store)",
}


def one_run(shape: str, n: int, batch_s: float) -> dict[str, Any]:
    knobs = {
        "batch_validating_s": 0.5,
        "batch_processing_s": batch_s,
        "batch_finalizing_s": 0.5,
        "latency_ms": 0.0,
    }
    work = Path(tempfile.mkdtemp(prefix=f"bench-any-size-{shape}-"))
    try:
        with sandbox(**knobs) as sb:
            r = run_client(
                "any_size.py",
                "--shape",
                shape,
                "--n",
                str(n),
                "--store",
                str(work / "s.sqlite"),
                "--openai-url",
                sb.openai_base_url,
                "--anthropic-url",
                sb.anthropic_base_url,
                timeout=4 * 3600,
            )
            summary = sb.ledger_summary()
            twice = len(sb.duplicates())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    billed = sum(
        t.get("requests", 0) for models in summary.values() for m in models.values() for t in m.values()
    )
    r.update(billed=billed, billed_twice=twice, batch_s=batch_s)
    if r["ok"] != n or billed != n * STAGES[shape] or twice:
        raise RuntimeError(f"{shape}: {r['ok']}/{n} ok, {billed} billed, {twice} billed twice")
    return r


def rows_of(r: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    stages = STAGES[r["shape"]]
    bound = stages * (r["batch_s"] + 1.0) + r["cpu_s"]  # +1 s: the sandbox's validating and finalizing
    summary = [
        f"{r['n']:,}",
        TITLES[r["shape"]],
        fmt(r["wall_s"], 1),
        fmt(bound, 1),
        "yes" if r["wall_s"] <= bound else "no",
        fmt(r["cpu_s"], 1),
        fmt(r["peak_rss_mb"], 0),
        fmt(r["store_mb"], 0),
        str(r["billed"]),
        str(r["billed_twice"]),
    ]
    per_stage = []
    order = {"gpt-4o-mini": 0, "claude-haiku-4-5": 1, "gpt-4o": 2}
    for s in sorted(r["stages"], key=lambda s: order.get(s["model"], 9)):
        t0 = r["started"]
        per_stage.append(
            [
                f"{r['n']:,} x {stages}",
                s["model"],
                str(s["batches"]),
                f"{s['calls']:,}",
                fmt(s["first_created"] - t0, 1),
                fmt(s["last_created"] - t0, 1),
                fmt(s["first_ended"] - t0, 1),
                fmt(s["last_ended"] - t0, 1),
                "yes" if s["last_created"] < s["first_ended"] else "no",
            ]
        )
    return summary, per_stage


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", type=int, default=1_000_000, help="items of the single-stage run (0: skip)")
    ap.add_argument("--three", type=int, default=200_000, help="items of the 3-stage run (0: skip)")
    ap.add_argument("--batch-s", type=float, default=30.0, help="the sandbox's provider batch time")
    args = ap.parse_args()

    summaries, stages, raw = [], [], []
    for shape, n in (("one", args.one), ("three", args.three)):
        if not n:
            continue
        print(f"{shape}: {n:,} items, {args.batch_s:.0f} s batches", flush=True)
        r = one_run(shape, n, args.batch_s)
        print(
            f"  wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
            f"store {r['store_mb']:.0f} MB",
            flush=True,
        )
        s, p = rows_of(r)
        summaries.append(s)
        stages += p
        raw.append(r)
    command = "python bench/bench_any_size.py " + " ".join(sys.argv[1:])
    save(
        "any_size",
        f"Batch mode at any size (issue 13): wall time vs stages x a {args.batch_s:.0f} s provider batch",
        command.strip(),
        [
            {
                "title": "One run each; bound = stages x (batch time + 1 s of the sandbox's validating "
                "and finalizing) + the client's CPU time; goals: wall within the bound, peak RSS "
                "at most 600 MB",
                "columns": [
                    "items",
                    "chain",
                    "wall s",
                    "bound s",
                    "within",
                    "client CPU s",
                    "peak RSS MB",
                    "store MB",
                    "billed",
                    "billed twice",
                ],
                "rows": summaries,
            },
            {
                "title": "Each stage's provider batches, seconds from the start of the run "
                "(one round: the last batch was created before the first one ended)",
                "columns": [
                    "items x stages",
                    "stage model",
                    "batches",
                    "calls",
                    "first created",
                    "last created",
                    "first ended",
                    "last ended",
                    "one round",
                ],
                "rows": stages,
            },
        ],
        notes=[
            "Before this change batch mode took 50,000-item windows one after another: "
            "1,000,000 items took 20 provider turnarounds; a 3-stage chain 3 x 4.",
        ],
        raw=raw,
    )


if __name__ == "__main__":
    main()
