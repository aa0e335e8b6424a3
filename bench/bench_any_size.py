"""Batch mode at any size (issue 13): a job takes about (stages x one provider batch's time)
whatever its number of items, in bounded memory.

    python bench/bench_any_size.py                        # 1,000,000 x 1 stage, 50,000 x 3 stages
    python bench/bench_any_size.py --one 0 --three 200000 # the issue's 3-stage size
    python bench/bench_any_size.py --one 0 --three 0 --three-ordinary 200000 --add
                                               # the same through the ordinary path (25 min)
    python bench/bench_any_size.py --one 100000 --three 20000 --batch-s 10   # smaller

The sandbox runs in its own process with a fixed provider batch time (``--batch-s``, 30 s by
default: every batch ends that long after it is created, however large, unless the sandbox
itself cannot process it that fast, which the table shows). One client process runs
``batchain.run(chain, generator, mode="batch")`` end to end. The bound is ``stages x (batch
time + the sandbox's 1 s of validating and finalizing + one poll interval) + the client's
own CPU time``: what a job costs when no stage waits for a window of another. For each
stage (each model) the store tells when its first and last provider batches were created
and ended.

    python bench/bench_any_size.py --render    # the tables again from bench/results/any_size.json
    python bench/bench_any_size.py --one 0 --three 200000 --add
                                               # one run, the other shape's last run kept
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import batchain
from harness import RESULTS, fmt, run_client, sandbox, save

STAGES = {"one": 1, "three": 3, "three_ordinary": 3}
TITLES = {
    "one": "prompt, gpt-4o-mini, parser (bulk path)",
    "three": "3 stages: gpt-4o-mini, claude-haiku-4-5, gpt-4o, each prompt, model, parser (bulk path)",
    "three_ordinary": (
        "the same 3 stages with a lambda after the first (ordinary path, coroutines replayed from the store)"
    ),
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
    r.update(billed=billed, billed_twice=twice, batch_s=batch_s, commit=_commit())
    if r["ok"] != n or billed != n * STAGES[shape] or twice:
        raise RuntimeError(f"{shape}: {r['ok']}/{n} ok, {billed} billed, {twice} billed twice")
    return r


def _commit() -> str:
    """The commit of the batchain measured (its source checkout), marked when it has edits."""
    src = Path(batchain.__file__).resolve().parent
    git = ["git", "-C", str(src)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "."], capture_output=True, text=True
    ).stdout.strip()
    return (head or "unknown") + (" with edits" if dirty else "")


#: the client's poll interval at most (bench/clients/any_size.py: poll_max)
POLL_MAX_S = 2.0


def rows_of(r: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    stages = STAGES[r["shape"]]
    bound = stages * (r["batch_s"] + 1.0 + POLL_MAX_S) + r["cpu_s"]
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
                f"{r['n']:,} x {stages}" + (" (ordinary path)" if r["shape"] == "three_ordinary" else ""),
                s["model"],
                str(s["batches"]),
                f"{s['calls']:,}",
                fmt(s["first_created"] - t0, 1),
                fmt(s["last_created"] - t0, 1),
                fmt(s["first_ended"] - t0, 1),
                fmt(s["last_ended"] - t0, 1),
            ]
        )
    return summary, per_stage


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", type=int, default=1_000_000, help="items of the single-stage run (0: skip)")
    ap.add_argument("--three", type=int, default=50_000, help="items of the 3-stage run (0: skip)")
    ap.add_argument(
        "--three-ordinary",
        type=int,
        default=0,
        help="items of the 3-stage run on the ordinary path (0: skip)",
    )
    ap.add_argument("--batch-s", type=float, default=30.0, help="the sandbox's provider batch time")
    ap.add_argument("--render", action="store_true", help="only rebuild the tables from the last results")
    ap.add_argument(
        "--add", action="store_true", help="keep the last results' runs of the shapes this one skips"
    )
    args = ap.parse_args()

    if args.render:
        last = json.loads((RESULTS / "any_size.json").read_text())
        write(last["raw"], last["command"], last["raw"][0]["batch_s"])
        return
    raw = []
    if args.add and (RESULTS / "any_size.json").exists():
        kept = json.loads((RESULTS / "any_size.json").read_text())["raw"]
        sizes = {"one": args.one, "three": args.three, "three_ordinary": args.three_ordinary}
        raw = [r for r in kept if not sizes[r["shape"]]]
    for shape, n in (("one", args.one), ("three", args.three), ("three_ordinary", args.three_ordinary)):
        if not n:
            continue
        print(f"{shape}: {n:,} items, {args.batch_s:.0f} s batches", flush=True)
        r = one_run(shape, n, args.batch_s)
        print(
            f"  wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
            f"store {r['store_mb']:.0f} MB",
            flush=True,
        )
        raw.append(r)
        # saved after each run: the runs are long
        write(raw, ("python bench/bench_any_size.py " + " ".join(sys.argv[1:])).strip(), args.batch_s)


def _io_note(r: dict[str, Any]) -> str:
    """What the client wrote to disk and how long its main thread slept (runs that recorded it)."""
    if "written_mb" not in r:
        return ""
    asleep = r["wall_s"] - r["main_thread_ran_s"]
    return (
        f"; the client process wrote {r['written_mb'] / 1024:.1f} GB to disk for a "
        f"{r['store_mb'] / 1024:.1f} GB store, and its main thread (the event loop) was off the "
        f"CPU for {asleep:.0f} s of the wall"
    )


def _paths_note(raw: list[dict[str, Any]]) -> list[str]:
    """The 3-stage chain on the bulk path against the same stages on the ordinary path."""
    by = {r["shape"]: r for r in raw}
    bulk, ordinary = by.get("three"), by.get("three_ordinary")
    if bulk is None or ordinary is None or bulk["n"] != ordinary["n"]:
        return []
    return [
        f"{bulk['n']:,} items x 3 stages: the bulk path (rows, each stage from its request template) "
        f"took {ordinary['cpu_s'] / bulk['cpu_s']:.1f}x less client CPU than the ordinary path "
        f"(coroutines replaying the chain through LangChain): {bulk['cpu_s']:.0f} s against "
        f"{ordinary['cpu_s']:.0f} s; wall {bulk['wall_s']:.0f} s against {ordinary['wall_s']:.0f} s; "
        f"peak RSS {bulk['peak_rss_mb']:.0f} MB against {ordinary['peak_rss_mb']:.0f} MB "
        f"(batchain {bulk.get('commit', '?')} against {ordinary.get('commit', '?')})."
    ]


def write(raw: list[dict[str, Any]], command: str, batch_s: float) -> None:
    summaries, stages, tails = [], [], []
    for r in raw:
        s, p = rows_of(r)
        summaries.append(s)
        stages += p
        last = max(st["last_created"] for st in r["stages"]) - r["started"]
        tails.append(
            f"{r['n']:,} x {STAGES[r['shape']]} (batchain {r.get('commit', 'commit not recorded')}): "
            f"the client created its last batch at {last:.0f} s "
            f"and the run ended {r['wall_s'] - last:.0f} s later; wall minus CPU is "
            f"{r['wall_s'] - r['cpu_s']:.0f} s (waiting for the provider, for the store's disk, "
            "and for the sandbox's share of the 2 cores)" + _io_note(r)
        )
    save(
        "any_size",
        f"Batch mode at any size (issue 13): wall time vs stages x a {batch_s:.0f} s provider batch",
        command,
        [
            {
                "title": "One run each; bound = stages x (batch time + 1 s of the sandbox's validating "
                f"and finalizing + a {POLL_MAX_S:.0f} s poll interval) + the client's CPU time; goals: "
                "wall within the bound, peak RSS at most 600 MB",
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
                "title": "Each stage's provider batches, seconds from the start of the run",
                "columns": [
                    "items x stages",
                    "stage model",
                    "batches",
                    "calls",
                    "first created",
                    "last created",
                    "first ended",
                    "last ended",
                ],
                "rows": stages,
            },
        ],
        notes=[
            "Before this change batch mode took 50,000-item windows one after another, each "
            "waiting for the provider: 1,000,000 items took 20 provider turnarounds, and the "
            "wall time grew with them (at a real provider, 20 x minutes to hours).",
            "With 30 s sandbox batches the client's own time to build and collect a stage "
            "exceeds a batch's time, so a stage's creates and collects interleave (batches "
            "created late in the stage end after early ones are collected). Nothing waits "
            "for a window: at a real provider, where a batch takes minutes to hours, every "
            "batch of a stage is out long before the first ends.",
            *tails,
            *_paths_note(raw),
        ],
        raw=raw,
    )


if __name__ == "__main__":
    main()
