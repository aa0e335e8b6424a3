"""Jobs sharing one rate-limit quota: one timed run against a sandbox enforcing an RPM limit,
with no client limit given.

--jobs 1 or 2: that many jobs at once in this process (2: asyncio.gather of two arun), on
--store. With --barrier, waits until every process of the run has touched
``<barrier>.<i>`` (i < --processes), so processes start together. Prints one JSON line:
wall-clock start and end of the run, items succeeded, 429s batchain saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

import batchain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--n", type=int, required=True, help="items per job")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--me", default="0", help="this process's name in the inputs and barrier")
    ap.add_argument("--barrier", default="")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()

    # batchain imports its engine on first use: done before the clock starts, as it is for
    # the other runs of a program (the import, not the sharing, would be timed)
    arun = batchain.arun
    model = ChatOpenAI(model="gpt-4o-mini", api_key="sk-bench-scope", base_url=args.base_url)
    chain = ChatPromptTemplate.from_template("Answer briefly: question {i}?") | model | StrOutputParser()
    if args.barrier:
        Path(f"{args.barrier}.{args.me}").touch()
        while not all(Path(f"{args.barrier}.{p}").exists() for p in range(args.processes)):
            time.sleep(0.005)

    async def run() -> list[batchain.Job]:
        return list(
            await asyncio.gather(
                *(
                    arun(
                        chain,
                        [{"i": f"{args.me}-{j}-{i}"} for i in range(args.n)],
                        store=args.store,
                        max_concurrency=args.concurrency,
                        progress=False,
                    )
                    for j in range(args.jobs)
                )
            )
        )

    start = time.time()
    jobs = asyncio.run(run())
    end = time.time()
    print(
        json.dumps(
            {
                "start": start,
                "end": end,
                "ok": sum(j.counts["succeeded"] for j in jobs),
                "client_429": sum(j.stats["rate_limited"] for j in jobs),
            }
        )
    )


if __name__ == "__main__":
    main()
