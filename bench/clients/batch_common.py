"""What every bench/bench_batch.py client shares that needs no LangChain: the model, the
prompts, the inputs and the meter. The hand-written SDK client imports only this module
(and ``openai``), so LangChain never loads in its process; bench/clients/batch_chains.py
re-exports all of it for the LangChain clients.
"""

from __future__ import annotations

import json
import resource
import time
from typing import Any

MODEL = "gpt-4o-mini"
API_KEY = "sk-bench"

# The sandbox replies "Sandbox reply (<model>): <first 12 words of the prompt>", so every
# stage puts the previous text first: each item's id survives all three stages and every
# request is distinct (no item can share another's call through batchain's request cache).
STAGE_PROMPTS = (
    "Item {i}: write a one-line tagline for this product.",
    "{text}\n\nRewrite the tagline above for a younger audience.",
    "{text}\n\nTranslate the tagline above into French.",
)


def inputs(n: int) -> list[dict[str, Any]]:
    return [{"i": i} for i in range(n)]


class Meter:
    """Wall and CPU time of one timed section; peak RSS of the whole process."""

    def __init__(self) -> None:
        self.rss_before_mb = peak_rss_mb()

    def __enter__(self) -> Meter:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self.wall0
        self.cpu_s = time.process_time() - self.cpu0

    def as_dict(self) -> dict[str, float]:
        return {
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": self.rss_before_mb,
        }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)
