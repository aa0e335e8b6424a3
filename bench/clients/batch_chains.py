"""The chains and inputs of bench/bench_batch.py, shared by the batchain and langasync clients.

Only langchain-core and langchain-openai are imported, so this module loads in both venvs
(the project's and langasync's). Both clients therefore send byte-identical prompts.
"""

from __future__ import annotations

import json
import resource
import time
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI

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


def model(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, api_key=API_KEY, base_url=base_url, max_retries=0)  # type: ignore[arg-type]


def inputs(n: int) -> list[dict[str, Any]]:
    return [{"i": i} for i in range(n)]


def stage(k: int, base_url: str) -> Runnable[Any, str]:
    """One ``prompt | ChatOpenAI(gpt-4o-mini) | StrOutputParser`` stage (k = 0, 1, 2).

    Stages 1 and 2 take the previous stage's string: a one-variable prompt accepts it as-is.
    """
    return ChatPromptTemplate.from_template(STAGE_PROMPTS[k]) | model(base_url) | StrOutputParser()


def single_stage(base_url: str) -> Runnable[Any, str]:
    """The throughput chain: ``ChatPromptTemplate | ChatOpenAI(gpt-4o-mini) | StrOutputParser``."""
    return stage(0, base_url)


def three_stage(base_url: str) -> Runnable[Any, str]:
    """``stage0 | stage1 | stage2``: one flat LCEL sequence with three top-level models."""
    return stage(0, base_url) | stage(1, base_url) | stage(2, base_url)


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
