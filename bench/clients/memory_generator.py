"""Peak RSS of batchain running N items from a generator through a trivial chain."""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from langchain_core.runnables import RunnableLambda


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args()

    import batchain

    def inputs() -> Iterator[dict[str, object]]:
        for i in range(args.n):
            yield {"i": i, "text": f"row {i} " + "x" * 64}

    chain = RunnableLambda(lambda row: {"i": row["i"], "len": len(row["text"])})
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        job = batchain.run(chain, inputs(), store=Path(tmp) / "m.sqlite", progress=False)
        wall = time.perf_counter() - t0
        ok = job.counts["succeeded"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"n": args.n, "ok": ok, "wall_s": wall, "peak_rss_mb": peak, "rss_before_run_mb": base_rss}
        )
    )


if __name__ == "__main__":
    main()
