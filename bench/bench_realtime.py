"""Issue 3 benchmarks: realtime overhead vs bare abatch, rate-limit adaptation, memory.

python bench/bench_realtime.py            # full run (several minutes)
python bench/bench_realtime.py --quick    # smaller, for a smoke check
"""

from __future__ import annotations

import argparse
from typing import Any

from harness import fmt, median, run_client, sandbox, save, show


def overhead(reps: int, n: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"batchain": [], "abatch": []}
    with sandbox(latency_ms=50) as sb:
        for rep in range(reps):
            order = ["abatch", "batchain"] if rep % 2 == 0 else ["batchain", "abatch"]
            for impl in order:
                r = run_client(
                    "realtime_overhead.py",
                    "--impl",
                    impl,
                    "--base-url",
                    sb.openai_base_url,
                    "--n",
                    str(n),
                    "--concurrency",
                    "100",
                )
                assert r["ok"] == n, r
                runs[impl].append(r)
    med = {
        impl: {k: median([r[k] for r in rs]) for k in ("wall_s", "cpu_s", "peak_rss_mb")}
        for impl, rs in runs.items()
    }
    rows = [[impl, fmt(m["wall_s"]), fmt(m["cpu_s"]), fmt(m["peak_rss_mb"], 0)] for impl, m in med.items()]
    ratio_wall = med["batchain"]["wall_s"] / med["abatch"]["wall_s"]
    ratio_cpu = med["batchain"]["cpu_s"] / med["abatch"]["cpu_s"]
    rows.append(["ratio batchain / abatch", fmt(ratio_wall), fmt(ratio_cpu), ""])
    return {
        "title": f"Overhead: {n} items, prompt | ChatOpenAI | StrOutputParser, 50 ms latency, "
        f"concurrency 100 (median of {reps}; goal: ratios <= 1.10)",
        "columns": ["client", "wall s", "CPU s", "peak RSS MB"],
        "rows": rows,
        "ratios": {"wall": ratio_wall, "cpu": ratio_cpu},
        "runs": runs,
    }


def rate_limits(reps: int, n: int, rpm: int) -> dict[str, Any]:
    ideal = n / rpm * 60
    scenarios = [
        ("batchain, limit given", "batchain", rpm),
        ("batchain, limit 5x too high", "batchain", rpm * 5),
        ("batchain, no limit given", "batchain", 0),
        ("LangChain InMemoryRateLimiter + abatch", "langchain", rpm),
    ]
    rows = []
    raw = {}
    with sandbox(rpm=rpm) as sb:
        for label, impl, given in scenarios:
            walls, sandbox_429s, oks = [], [], []
            for _ in range(reps):
                sb.reset()
                r = run_client(
                    "realtime_ratelimit.py",
                    "--impl",
                    impl,
                    "--base-url",
                    sb.openai_base_url,
                    "--n",
                    str(n),
                    "--rpm",
                    str(given),
                )
                summary = sb.ledger_summary()
                walls.append(r["wall_s"])
                oks.append(r["ok"])
                sandbox_429s.append(_count_429(summary))
            raw[label] = {"walls": walls, "429s": sandbox_429s, "ok": oks}
            w = median(walls)
            rows.append([label, f"{min(oks)}/{n}", fmt(w), fmt(w / ideal), fmt(median(sandbox_429s), 0)])
    return {
        "title": f"Rate limits: sandbox enforcing {rpm} RPM, {n} items, ideal {ideal:.1f} s "
        f"(median of {reps}; goal: <= 1.05x ideal, every item succeeds)",
        "columns": ["client", "succeeded", "wall s", "x ideal", "429s"],
        "rows": rows,
        "runs": raw,
    }


def _count_429(summary: Any) -> int:
    """Sum every ``rate_limited`` counter in the sandbox's ledger summary."""
    if isinstance(summary, dict):
        return sum(
            (v if k == "rate_limited" and isinstance(v, int) else _count_429(v)) for k, v in summary.items()
        )
    return 0


def memory(n: int) -> dict[str, Any]:
    r = run_client("memory_generator.py", "--n", str(n))
    assert r["ok"] == n, r
    return {
        "title": f"Memory: {n:,} items from a generator through a trivial chain (goal: peak RSS < 400 MB)",
        "columns": ["items", "wall s", "peak RSS MB", "RSS before the run MB"],
        "rows": [[f"{n:,}", fmt(r["wall_s"]), fmt(r["peak_rss_mb"], 0), fmt(r["rss_before_run_mb"], 0)]],
        "runs": [r],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    reps = 2 if args.quick else 5
    tables = [
        overhead(reps, 1000 if args.quick else 5000),
        rate_limits(1 if args.quick else 3, 120 if args.quick else 600, 1200),
        memory(10_000 if args.quick else 100_000),
    ]
    path = save(
        "realtime",
        "Realtime engine (issue 3)",
        "python bench/bench_realtime.py" + (" --quick" if args.quick else ""),
        tables,
        notes=[
            "The sandbox runs in its own process on the same 2-core machine; CPU is the client's "
            "process CPU time during the run.",
            "429s are counted by the sandbox (requests it rejected).",
        ],
    )
    show(tables, path)


if __name__ == "__main__":
    main()
