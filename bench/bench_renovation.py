"""The engine renovation changed no speed: the same clients, before and after, in one run.

    python bench/bench_renovation.py --base f76f226        # the commit before the renovation
    python bench/bench_renovation.py --base f76f226 --after HEAD   # a commit, not the work tree

Each measurement runs the committed ``src/`` of ``--base`` (a ``git archive`` snapshot) and
of the work tree in turn, A B A B..., so drift on a noisy machine hits both alike; the
report gives medians and the ratio after/before (1.00 = unchanged):
- batch mode client time, end to end (submit + collect), ``prompt | model | parser``;
- realtime overhead: wall and CPU of ``batchain.run`` over N items at 50 ms latency;
- memory: peak RSS of N items from a generator.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bench_batch import one_run, snapshot
from harness import fmt, median, run_client, sandbox, save

REPO = Path(__file__).resolve().parent.parent


def with_src(src: Path) -> None:
    os.environ["PYTHONPATH"] = str(src)


def batch_time(src: Path, n: int) -> dict[str, Any]:
    with_src(src)
    with sandbox(batch_validating_s=0.05, batch_processing_s=0.5, batch_finalizing_s=0.05) as sb:
        r = one_run(sb, "batchain", sys.executable, n)
    return {
        "e2e_cpu_s": r["e2e_cpu_s"],
        "e2e_wall_s": r["e2e_wall_s"],
        "peak_mb": r["collect"]["peak_rss_mb"],
    }


def realtime(src: Path, n: int, base_url: str) -> dict[str, Any]:
    with_src(src)
    args = ["--impl", "batchain", "--base-url", base_url, "--n", str(n), "--concurrency", "100"]
    return run_client("realtime_overhead.py", *args)


def memory(src: Path, n: int) -> dict[str, Any]:
    with_src(src)
    return run_client("memory_generator.py", "--n", str(n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the commit to compare the work tree with")
    ap.add_argument("--after", help="a commit to measure instead of the work tree")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-n", type=int, default=10_000)
    ap.add_argument("--realtime-n", type=int, default=2_000)
    ap.add_argument("--memory-n", type=int, default=100_000)
    args = ap.parse_args()
    trees = {"before": snapshot(args.base), "after": snapshot(args.after) if args.after else REPO / "src"}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        k: {t: [] for t in trees} for k in ("batch", "rt", "mem")
    }
    with sandbox(latency_ms=50) as sb:
        for rep in range(args.reps):
            order = list(trees) if rep % 2 == 0 else list(reversed(trees))
            for tree in order:
                src = trees[tree]
                runs["batch"][tree].append(batch_time(src, args.batch_n))
                runs["rt"][tree].append(realtime(src, args.realtime_n, sb.openai_base_url))
                runs["mem"][tree].append(memory(src, args.memory_n))
                print(f"rep {rep} {tree} done", file=sys.stderr)
    rows = []
    for label, kind, key, unit in (
        (f"batch client CPU, {args.batch_n:,} items (submit + collect)", "batch", "e2e_cpu_s", "s"),
        (f"batch client wall, {args.batch_n:,} items", "batch", "e2e_wall_s", "s"),
        (f"batch collect peak RSS, {args.batch_n:,} items", "batch", "peak_mb", "MB"),
        (f"realtime wall, {args.realtime_n:,} items at 50 ms", "rt", "wall_s", "s"),
        (f"realtime CPU, {args.realtime_n:,} items", "rt", "cpu_s", "s"),
        (f"peak RSS, {args.memory_n:,} items from a generator", "mem", "peak_rss_mb", "MB"),
    ):
        before = median([r[key] for r in runs[kind]["before"]])
        after = median([r[key] for r in runs[kind]["after"]])
        rows.append([label, f"{fmt(before)} {unit}", f"{fmt(after)} {unit}", fmt(after / before)])
    table = {
        "title": f"Before ({args.base}) and after ({args.after or 'work tree'}) the renovation,"
        f" medians of {args.reps}",
        "columns": ["what", "before", "after", "after / before"],
        "rows": rows,
    }
    path = save(
        "renovation",
        "Engine renovation: no regression",
        f"python bench/bench_renovation.py --base {args.base} --reps {args.reps}"
        + (f" --after {args.after}" if args.after else ""),
        [table],
        notes=["Both trees run the same clients against the same sandbox, alternating A B A B."],
        raw=runs,
    )
    for row in rows:
        print(" | ".join(row))
    print(path)


if __name__ == "__main__":
    main()
