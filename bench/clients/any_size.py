"""batchain in batch mode at scale, end to end in one process. Prints one JSON line.

    any_size.py --shape one   --n N --store S --openai-url U --anthropic-url V
    any_size.py --shape three --n N --store S --openai-url U --anthropic-url V [--window W]

``one``: prompt | ChatOpenAI(gpt-4o-mini) | StrOutputParser (the bulk path).
``three``: three stages on two providers and three models (gpt-4o-mini, claude-haiku-4-5,
gpt-4o), each ``prompt | model | parser``: the bulk path, rows replayed stage by stage.
``three_ordinary``: the same stages with a pass-through lambda after the first, which
takes the ordinary path (coroutines replayed from the store).

Inputs come from a generator: batch mode stores each before running any. Reports wall
time, CPU time, peak RSS, the store's size, and for each stage (model) when its first and
last provider batch were created and when the first and last ended (from the store).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_chains import API_KEY, Meter, emit

MODELS = {
    "one": ["gpt-4o-mini"],
    "three": ["gpt-4o-mini", "claude-haiku-4-5", "gpt-4o"],
    "three_ordinary": ["gpt-4o-mini", "claude-haiku-4-5", "gpt-4o"],
}


def chain(shape: str, openai_url: str, anthropic_url: str) -> Any:
    from langchain_anthropic import ChatAnthropic
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda
    from langchain_openai import ChatOpenAI

    def gpt(name: str) -> Any:
        return ChatOpenAI(model=name, api_key=API_KEY, base_url=openai_url, max_retries=0)  # type: ignore[arg-type]

    first = ChatPromptTemplate.from_template("Item {i}: write a one-line tagline.") | gpt("gpt-4o-mini")
    if shape == "one":
        return first | StrOutputParser()
    claude = ChatAnthropic(model="claude-haiku-4-5", api_key=API_KEY, base_url=anthropic_url, max_retries=0)  # type: ignore[call-arg,arg-type]
    # a one-variable prompt takes the previous stage's string as it is
    second = ChatPromptTemplate.from_template("{text}\n\nRewrite it for a younger audience.") | claude
    third = ChatPromptTemplate.from_template("{text}\n\nTranslate it into French.") | gpt("gpt-4o")
    text = StrOutputParser()
    if shape == "three_ordinary":
        return first | text | RunnableLambda(lambda s: s) | second | text | third | text
    return first | text | second | text | third | text


def inputs(n: int) -> Iterator[dict[str, int]]:
    return ({"i": i} for i in range(n))


def stages(store: str) -> list[dict[str, Any]]:
    """Per model: its batches, when the first and last were created and ended (epoch s)."""
    con = sqlite3.connect(store)
    rows = con.execute(
        "SELECT json_extract(info, '$.model'), COUNT(*), SUM(n_calls), MIN(created_at), MAX(created_at),"
        " MIN(updated_at), MAX(updated_at) FROM provider_batches WHERE status = 'collected' GROUP BY 1"
    ).fetchall()
    return [
        {
            "model": m,
            "batches": b,
            "calls": c,
            "first_created": fc,
            "last_created": lc,
            "first_ended": fe,
            "last_ended": le,
        }
        for m, b, c, fc, lc, fe, le in rows
    ]


def written_bytes() -> int:
    """Bytes this process caused to be written to storage so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def main_thread_ran_s() -> float:
    """Seconds the calling (main) thread has spent on a CPU so far (Linux schedstat)."""
    return int(Path("/proc/thread-self/schedstat").read_text().split()[0]) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=list(MODELS), required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--openai-url", required=True)
    ap.add_argument("--anthropic-url", required=True)
    ap.add_argument("--window", type=int, help="the run's window (default: batchain's)")
    args = ap.parse_args()

    import time

    from batchain import run

    c = chain(args.shape, args.openai_url, args.anthropic_url)
    meter = Meter()
    started = time.time()
    written0, ran0 = written_bytes(), main_thread_ran_s()
    with meter:
        job = run(
            c,
            inputs(args.n),
            mode="batch",
            store=args.store,
            progress=False,
            poll_min=1.0,
            poll_max=2.0,
            window=args.window,
        )
        counts = job.counts
    written, ran = written_bytes() - written0, main_thread_ran_s() - ran0
    ok = counts["succeeded"]
    size = sum(os.path.getsize(p) for p in Path(args.store).parent.glob(Path(args.store).name + "*"))
    emit(
        {
            "shape": args.shape,
            "n": args.n,
            "ok": ok,
            "counts": counts,
            "stats": job.stats,
            "started": started,
            "stages": stages(args.store),
            "store_mb": size / 2**20,
            # what the process wrote to disk (store, its WAL and checkpoints), and how long
            # its main thread (the event loop: everything but the SDK's worker threads) ran
            "written_mb": written / 2**20,
            "main_thread_ran_s": ran,
            **meter.as_dict(),
        }
    )


if __name__ == "__main__":
    main()
