"""The chains and inputs of bench/bench_batch.py, shared by the batchain and langasync clients.

Only langchain-core and langchain-openai are imported, so this module loads in both venvs
(the project's and langasync's). Both clients therefore send byte-identical prompts. The
LangChain-free parts live in batch_common.py (shared with the hand-written SDK client).
"""

from __future__ import annotations

from typing import Any

from batch_common import API_KEY, MODEL, STAGE_PROMPTS, Meter, emit, inputs, peak_rss_mb
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI

__all__ = ["API_KEY", "MODEL", "STAGE_PROMPTS", "Meter", "emit", "inputs", "peak_rss_mb"]


def model(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, api_key=API_KEY, base_url=base_url, max_retries=0)  # type: ignore[arg-type]


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
