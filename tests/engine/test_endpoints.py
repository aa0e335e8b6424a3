"""Batch mode parks a model's calls only where its endpoint has a Batch API.

Seed 003 asks GPT, Claude and Gemini (through Gemini's OpenAI-compatible endpoint) one
question in a ``RunnableParallel``. The sandbox serves such an endpoint at
``/v1beta/openai``: chat completions, and no files or batches. Every test checks the ledger:
nothing billed twice, nothing billed that batchain did not account for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_openai import ChatOpenAI

import batchain
from batchain.errors import BatchUnsupportedError, InvalidOption
from batchain.providers import adapter_for
from batchain.providers.endpoints import batch_support
from batchain.sandbox import Sandbox
from batchain.store import SQLiteStore
from tests.conftest import TEST_KEY
from tests.engine.conftest import accounted, billed, make_anthropic, make_openai

PROMPT = ChatPromptTemplate.from_template("请用一句话回答：{question}")  # noqa: RUF001 (seed 003 is in Chinese)
QUESTIONS = [{"question": f"什么是第{i}个质数？"} for i in range(6)]  # noqa: RUF001


def gemini_compat(sb: Sandbox, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(model="gemini-2.0-flash", base_url=sb.compat_base_url, api_key=TEST_KEY, **kw)


def three_models(sb: Sandbox) -> Any:
    parser = StrOutputParser()
    return RunnableParallel(
        gpt=PROMPT | make_openai(sb) | parser,
        claude=PROMPT | make_anthropic(sb) | parser,
        gemini=PROMPT | gemini_compat(sb) | parser,
    )


def run_batch(chain: Any, store: Path, **kw: Any) -> batchain.Job:
    return batchain.run(chain, QUESTIONS, mode="batch", store=store, progress=False, poll_min=0.02, **kw)


def test_under_batch_only_a_compatible_endpoint_without_a_batch_api_is_refused_before_anything_is_sent(
    fast: Sandbox, store_path: Path
) -> None:
    with pytest.raises(BatchUnsupportedError) as caught:
        run_batch(three_models(fast), store_path, batch_only=True)
    message = str(caught.value)
    assert "ChatOpenAI(gemini-2.0-flash)" in message
    assert f"ChatOpenAI(gemini-2.0-flash) at {fast.compat_base_url}: its endpoint has no Batch API" in message
    assert "drop batch_only=True" in message and "endpoint_modes={'127.0.0.1': 'batch'}" in message
    assert caught.value.endpoint == fast.compat_base_url
    assert fast.ledger() == []


def test_by_default_only_that_model_runs_realtime_and_the_report_says_why(
    fast: Sandbox, store_path: Path
) -> None:
    job = run_batch(three_models(fast), store_path)
    assert job.counts["succeeded"] == len(QUESTIONS)
    n = len(QUESTIONS)
    seen = billed(fast)
    assert seen == {
        ("gpt-4o-mini", "batch"): n,
        ("claude-haiku-4-5", "batch"): n,
        ("gemini-2.0-flash", "realtime"): n,
    }
    assert not fast.duplicates()
    assert accounted(job) == seen  # every billed call is in batchain's report, at its tier
    (note,) = job.report().notes
    assert note.startswith(f"ChatOpenAI(gemini-2.0-flash) at {fast.compat_base_url}: {n} calls ran realtime")
    assert note.endswith("(its endpoint has no Batch API: a batch listing there answered 404)")
    assert job.report().to_json()["notes"] == [note]
    for out in job.outputs():
        assert set(out) == {"gpt", "claude", "gemini"} and all(out.values())


def test_endpoint_modes_realtime_runs_that_model_realtime_even_under_batch_only(
    fast: Sandbox, store_path: Path
) -> None:
    modes = {"gemini-2.0-flash": "realtime"}
    job = run_batch(three_models(fast), store_path, endpoint_modes=modes, batch_only=True)
    assert job.counts["succeeded"] == len(QUESTIONS)
    assert billed(fast)[("gemini-2.0-flash", "realtime")] == len(QUESTIONS)
    assert not fast.duplicates() and accounted(job) == billed(fast)
    (note,) = job.report().notes
    assert "(endpoint_modes chose realtime)" in note


def test_endpoint_modes_realtime_by_host_also_applies_to_a_known_batch_endpoint(
    fast: Sandbox, store_path: Path
) -> None:
    chain = PROMPT | make_openai(fast) | StrOutputParser()  # the bulk path, when batchable
    job = run_batch(chain, store_path, endpoint_modes={fast.openai_base_url: "realtime"})
    assert job.counts["succeeded"] == len(QUESTIONS)
    assert billed(fast) == {("gpt-4o-mini", "realtime"): len(QUESTIONS)}
    assert job.stats["fast_path"] == "on"


def test_a_model_made_inside_a_lambda_pauses_the_job_at_its_first_call_and_resume_goes_on(
    fast: Sandbox, store_path: Path
) -> None:
    def ask_gemini(x: dict[str, str]) -> str:
        return str(gemini_compat(fast).invoke(x["question"]).content)  # built at call time

    parser = StrOutputParser()
    chain = RunnableParallel(gpt=PROMPT | make_openai(fast) | parser, gemini=RunnableLambda(ask_gemini))
    with pytest.raises(BatchUnsupportedError, match="has no Batch API") as caught:
        run_batch(chain, store_path, batch_only=True)
    assert caught.value.paused and "The job paused; nothing done is lost." in str(caught.value)
    with SQLiteStore(store_path) as st:
        (record,) = st.list_jobs()
    job = batchain.Job.open(record.id, store=store_path, chain=chain)
    assert job.status.value == "paused" and job.counts["pending"] == len(QUESTIONS)
    assert not [e for e in fast.ledger() if e.model == "gemini-2.0-flash"]

    job = job.resume(batch_only=False, progress=False)
    assert job.counts["succeeded"] == len(QUESTIONS)
    assert billed(fast) == {
        ("gpt-4o-mini", "batch"): len(QUESTIONS),
        ("gemini-2.0-flash", "realtime"): len(QUESTIONS),
    }
    assert not fast.duplicates() and accounted(job) == billed(fast)


def test_known_hosts_are_not_asked_and_choices_win() -> None:
    # no server listens at these: a probe would fail, so a known host must need none
    openai = ChatOpenAI(model="gpt-4o-mini", api_key=TEST_KEY, base_url="https://api.openai.com/v1")
    azure = ChatOpenAI(model="gpt-4o", api_key=TEST_KEY, base_url="https://acme.openai.azure.com/openai/v1")
    adapter = adapter_for(openai)
    assert adapter is not None
    assert batch_support(adapter, openai).batch and batch_support(adapter, openai).why == "known host"
    assert batch_support(adapter, azure).batch
    chosen = batch_support(adapter, openai, {"API.OPENAI.COM": "realtime"})
    assert not chosen.batch and chosen.chosen
    assert batch_support(adapter, openai, {"gpt-4o-mini": "realtime"}).chosen
    forced = ChatOpenAI(model="m", api_key=TEST_KEY, base_url="http://127.0.0.1:9/v1")  # nothing there
    assert batch_support(adapter, forced, {"http://127.0.0.1:9/v1/": "batch"}).batch


def test_batch_only_and_the_realtime_fallback_contradict(fast: Sandbox, store_path: Path) -> None:
    with pytest.raises(InvalidOption, match="contradict"):
        run_batch(PROMPT | make_openai(fast), store_path, batch_only=True, fallback="realtime")


@pytest.mark.parametrize("bad", [{"gpt-4o-mini": "later"}, {"": "batch"}, ["gpt-4o-mini"]])
def test_bad_endpoint_modes_are_refused(fast: Sandbox, store_path: Path, bad: Any) -> None:
    with pytest.raises(InvalidOption, match="endpoint_modes"):
        run_batch(PROMPT | make_openai(fast), store_path, endpoint_modes=bad)
    assert fast.ledger() == []
