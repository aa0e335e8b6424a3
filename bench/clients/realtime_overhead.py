"""One timed run of `prompt | ChatOpenAI | StrOutputParser` over N items.

--impl batchain: batchain.run (fresh store); --impl abatch: bare chain.abatch with the same
max_concurrency. Prints one JSON line: wall and CPU seconds of the run itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["batchain", "abatch"], required=True)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=100)
    args = ap.parse_args()

    model = ChatOpenAI(model="gpt-4o-mini", api_key="sk-bench", base_url=args.base_url, max_retries=0)
    chain = ChatPromptTemplate.from_template("Write a tagline for product #{i}.") | model | StrOutputParser()
    inputs = [{"i": i} for i in range(args.n)]

    with tempfile.TemporaryDirectory() as tmp:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if args.impl == "batchain":
            import batchain

            job = batchain.run(
                chain,
                inputs,
                store=Path(tmp) / "bench.sqlite",
                max_concurrency=args.concurrency,
                progress=False,
            )
            ok = job.counts["succeeded"]
        else:
            outs = asyncio.run(
                chain.abatch(inputs, config={"max_concurrency": args.concurrency}, return_exceptions=True)
            )
            ok = sum(isinstance(o, str) for o in outs)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"impl": args.impl, "n": args.n, "ok": ok, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss}
        )
    )


if __name__ == "__main__":
    main()
