"""Gemini (``ChatGoogleGenerativeAI``) in every mode, against the sandbox's Gemini API with
the official google-genai SDK underneath; and seed 003's three-model parallel chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_google_genai")

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel
from langchain_google_genai import ChatGoogleGenerativeAI
from pydantic import BaseModel

import batchain
from batchain.providers import gemini as gemini_provider
from batchain.sandbox import Sandbox
from tests.conftest import TEST_KEY
from tests.engine.conftest import accounted, billed, make_anthropic, make_openai, run_direct

PROMPT = ChatPromptTemplate.from_messages([("system", "answer in one line"), ("human", "{question}")])
ITEMS = [{"question": f"what is item {i}?"} for i in range(6)]


class Fact(BaseModel):
    subject: str
    detail: str


def make_gemini(sb: Sandbox, **kw: Any) -> ChatGoogleGenerativeAI:
    return ChatGoogleGenerativeAI(
        model="gemini-2.5-flash", api_key=TEST_KEY, base_url=sb.gemini_base_url, **kw
    )


FIELDS = ("provider", "model", "tier")


def run(chain: Any, store: Path, mode: str, **kw: Any) -> batchain.Job:
    return batchain.run(chain, ITEMS, mode=mode, store=store, progress=False, poll_min=0.02, **kw)


@pytest.mark.parametrize("mode", ["realtime", "batch"])
@pytest.mark.parametrize("shape", ["text", "structured", "tools"])
def test_gemini_matches_a_direct_call_and_is_billed_once(
    fast: Sandbox, store_path: Path, mode: str, shape: str
) -> None:
    model = make_gemini(fast)
    if shape == "text":
        chain: Any = PROMPT | model | StrOutputParser()
    elif shape == "structured":
        chain = PROMPT | model.with_structured_output(Fact)
    else:
        chain = (
            PROMPT
            | model.bind_tools([Fact], tool_choice="any")
            | (lambda m: [[c["name"], c["args"]] for c in m.tool_calls])  # stored as JSON
        )
    expected = run_direct(chain.abatch(ITEMS))
    fast.reset()
    job = run(chain, store_path, mode)
    assert job.counts["succeeded"] == len(ITEMS), job.errors()
    assert job.outputs() == expected
    assert billed(fast, *FIELDS) == {("gemini", "gemini-2.5-flash", mode): len(ITEMS)}
    assert not fast.duplicates()
    assert accounted(job, *FIELDS) == billed(fast, *FIELDS)
    report = job.report()
    assert report.complete and report.paid > 0  # priced from genai-prices, batch at half


def test_a_large_batch_goes_as_an_uploaded_file(
    fast: Sandbox, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gemini_provider, "INLINE_BYTES", 100)  # any batch is "large"
    chain = PROMPT | make_gemini(fast) | StrOutputParser()
    expected = run_direct(chain.abatch(ITEMS))
    fast.reset()
    job = run(chain, store_path, "batch")
    assert job.outputs() == expected
    assert billed(fast, *FIELDS) == {("gemini", "gemini-2.5-flash", "batch"): len(ITEMS)}
    assert not fast.duplicates()


def test_seed_003_three_models_in_parallel(fast: Sandbox, store_path: Path) -> None:
    """GPT, Claude, and Gemini both through ChatGoogleGenerativeAI (batch) and through its
    OpenAI-compatible endpoint (no Batch API: realtime, noted)."""
    from langchain_openai import ChatOpenAI

    compat = ChatOpenAI(model="gemini-2.0-flash", base_url=fast.compat_base_url, api_key=TEST_KEY)
    parser = StrOutputParser()
    chain = RunnableParallel(
        gpt=PROMPT | make_openai(fast) | parser,
        claude=PROMPT | make_anthropic(fast) | parser,
        gemini=PROMPT | make_gemini(fast) | parser,
        gemini_compat=PROMPT | compat | parser,
    )
    job = run(chain, store_path, "batch")  # the endpoint without a Batch API runs realtime
    assert job.counts["succeeded"] == len(ITEMS)
    n = len(ITEMS)
    assert billed(fast, *FIELDS) == {
        ("openai", "gpt-4o-mini", "batch"): n,
        ("anthropic", "claude-haiku-4-5", "batch"): n,
        ("gemini", "gemini-2.5-flash", "batch"): n,
        ("openai", "gemini-2.0-flash", "realtime"): n,
    }
    assert not fast.duplicates()
    assert accounted(job, *FIELDS) == billed(
        fast, *FIELDS
    )  # nothing billed that batchain did not account for
    (note,) = job.report().notes
    assert note.startswith(f"ChatOpenAI(gemini-2.0-flash) at {fast.compat_base_url}: {n} calls ran realtime")
