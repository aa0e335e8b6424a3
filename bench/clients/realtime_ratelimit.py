"""One timed run against a sandbox that enforces an RPM limit.

--impl batchain with --rpm (the limit we tell batchain, or 0 for none), or
--impl langchain: InMemoryRateLimiter at the true limit + chain.abatch (the SDK's own
retries handle any 429). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_openai import ChatOpenAI


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["batchain", "langchain"], required=True)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--rpm", type=float, default=0.0, help="limit given to the client; 0 = none")
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()

    prompt = ChatPromptTemplate.from_template("Answer briefly: question {i}?")
    inputs = [{"i": i} for i in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.impl == "batchain":
            import batchain

            model = ChatOpenAI(model="gpt-4o-mini", api_key="sk-bench", base_url=args.base_url)
            job = batchain.run(
                prompt | model | StrOutputParser(),
                inputs,
                store=Path(tmp) / "b.sqlite",
                max_concurrency=args.concurrency,
                rpm=args.rpm or None,
                progress=False,
            )
            ok = job.counts["succeeded"]
            client_429 = job.stats["rate_limited"]
        else:
            limiter = InMemoryRateLimiter(
                requests_per_second=args.rpm / 60.0, check_every_n_seconds=0.01, max_bucket_size=1
            )
            model = ChatOpenAI(
                model="gpt-4o-mini", api_key="sk-bench", base_url=args.base_url, rate_limiter=limiter
            )
            outs = asyncio.run(
                (prompt | model | StrOutputParser()).abatch(
                    inputs, config={"max_concurrency": args.concurrency}, return_exceptions=True
                )
            )
            ok = sum(isinstance(o, str) for o in outs)
            client_429 = None
        wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "impl": args.impl,
                "rpm_given": args.rpm,
                "n": args.n,
                "ok": ok,
                "wall_s": wall,
                "client_429": client_429,
            }
        )
    )


if __name__ == "__main__":
    main()
