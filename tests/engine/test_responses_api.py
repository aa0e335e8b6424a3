"""``ChatOpenAI(use_responses_api=True)`` in batch mode: its calls go as ``/v1/responses``
batch lines, and come back as the same messages, structured output and tool calls as a
direct realtime call gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel

import batchain
from batchain.sandbox import Sandbox
from tests.conftest import TEST_KEY
from tests.engine.conftest import accounted, billed, make_openai, run_direct

PROMPT = ChatPromptTemplate.from_messages([("system", "answer briefly"), ("human", "{q}")])
ITEMS = [{"q": f"question number {i}"} for i in range(8)]


class Answer(BaseModel):
    text: str
    score: int


class Lookup(BaseModel):
    """Look a term up."""

    term: str


def tail(chain_kind: str, model: Any) -> Any:
    if chain_kind == "text":
        return PROMPT | model | StrOutputParser()
    if chain_kind == "structured":
        return PROMPT | model.with_structured_output(Answer)
    return PROMPT | model.bind_tools([Lookup], tool_choice="Lookup") | (lambda m: m.tool_calls)


@pytest.mark.parametrize("chain_kind", ["text", "structured", "tools"])
def test_responses_api_calls_go_through_the_batch_api_and_match_realtime(
    fast: Sandbox, store_path: Path, chain_kind: str
) -> None:
    chain = tail(chain_kind, make_openai(fast, use_responses_api=True))
    expected = run_direct(chain.abatch(ITEMS))
    fast.reset()
    job = batchain.run(chain, ITEMS, mode="batch", store=store_path, progress=False, poll_min=0.02)
    assert job.counts["succeeded"] == len(ITEMS)
    got = job.outputs()
    if chain_kind == "tools":  # ids are per response; the calls themselves must match
        got = [[(c["name"], c["args"]) for c in calls] for calls in got]
        expected = [[(c["name"], c["args"]) for c in calls] for calls in expected]
    assert got == expected
    assert billed(fast) == {("gpt-4o-mini", "batch"): len(ITEMS)}
    assert not fast.duplicates() and accounted(job) == billed(fast)
    (batch,) = {b.provider_batch_id for b in _batches(store_path)}
    assert batch


def test_responses_and_chat_calls_of_one_job_go_in_separate_batches(fast: Sandbox, store_path: Path) -> None:
    from langchain_core.runnables import RunnableParallel

    chain = RunnableParallel(
        chat=PROMPT | make_openai(fast) | StrOutputParser(),
        responses=PROMPT | make_openai(fast, use_responses_api=True) | StrOutputParser(),
    )
    job = batchain.run(chain, ITEMS, mode="batch", store=store_path, progress=False, poll_min=0.02)
    assert job.counts["succeeded"] == len(ITEMS)
    ours = {b.provider_batch_id for b in _batches(store_path)}
    with openai.OpenAI(base_url=fast.openai_base_url, api_key=TEST_KEY) as client:
        endpoints = {b.endpoint for b in client.batches.list() if b.id in ours}
    assert len(ours) == 2 and endpoints == {"/v1/chat/completions", "/v1/responses"}
    assert billed(fast) == {("gpt-4o-mini", "batch"): 2 * len(ITEMS)}
    assert not fast.duplicates() and accounted(job) == billed(fast)
    for out in job.outputs():
        assert out["chat"] == out["responses"]  # the sandbox answers both the same way


def test_responses_api_in_realtime_mode_is_accounted(sandbox: Sandbox, store_path: Path) -> None:
    chain = PROMPT | make_openai(sandbox, use_responses_api=True) | StrOutputParser()
    job = batchain.run(chain, ITEMS, store=store_path, progress=False)
    assert job.counts["succeeded"] == len(ITEMS)
    assert billed(sandbox) == {("gpt-4o-mini", "realtime"): len(ITEMS)}
    assert accounted(job) == billed(sandbox)
    assert job.usage.input_tokens == sum(e.input_tokens for e in sandbox.ledger())


def _batches(store: Path) -> list[Any]:
    from batchain.store import SQLiteStore

    with SQLiteStore(store) as st:
        (job,) = st.list_jobs()
        return st.job_batches(job.id)
