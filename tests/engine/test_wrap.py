"""``batchain.wrap(chain)``: a drop-in Runnable whose ``batch`` is one batchain job. Its
answers equal ``chain.batch``'s, over real HTTP against the sandbox, in every mode; the
ledger shows every request billed once, and a repeated call answered from the store."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel

import batchain
from batchain.sandbox import Sandbox
from batchain.store import SQLiteStore
from tests.engine.conftest import accounted, billed, make_anthropic, make_openai

PROMPT = ChatPromptTemplate.from_template("Say something about {x}.")
ITEMS = [{"x": f"topic {i}"} for i in range(5)]
#: quick polls of the sandbox's quick batches
QUICK = {"poll_min": 0.02}


def one_model(sb: Sandbox) -> Runnable[Any, Any]:
    return PROMPT | make_openai(sb) | StrOutputParser()


def two_providers(sb: Sandbox) -> Runnable[Any, Any]:
    return PROMPT | RunnableParallel(
        short=make_openai(sb) | StrOutputParser(), long=make_anthropic(sb) | StrOutputParser()
    )


def jobs_in(store: Path) -> int:
    with SQLiteStore(store) as st:
        return len(st.list_jobs(limit=None))


class Runs(BaseCallbackHandler):
    """Every chain run it sees: its tags, metadata, parent and id."""

    def __init__(self) -> None:
        self.runs: list[tuple[list[str], dict[str, Any], Any, Any]] = []

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: Any, parent_run_id: Any = None, **kw: Any
    ) -> None:
        self.runs.append((list(kw.get("tags") or []), dict(kw.get("metadata") or {}), parent_run_id, run_id))

    def top(self) -> list[tuple[list[str], dict[str, Any], Any, Any]]:
        return [run for run in self.runs if run[2] is None]


@pytest.mark.parametrize("mode", ["realtime", "batch", "auto"])
@pytest.mark.parametrize("shape", [one_model, two_providers])
def test_batch_equals_the_chains_own_in_every_mode(
    fast: Sandbox, store_path: Path, mode: str, shape: Any
) -> None:
    chain = shape(fast)
    expected = chain.batch(ITEMS)
    fast.reset()
    wrapped = batchain.wrap(chain, mode=mode, store=store_path, **QUICK)
    assert wrapped.batch(ITEMS) == expected
    tiers = {e.tier for e in fast.ledger()}
    assert tiers == ({"realtime"} if mode == "realtime" else {"batch"})  # auto: every item is normal
    calls = len(ITEMS) * (2 if shape is two_providers else 1)
    assert sum(billed(fast).values()) == calls and not fast.duplicates()
    assert wrapped.last_job is not None and accounted(wrapped.last_job) == billed(fast)


def test_auto_sends_urgent_items_realtime(fast: Sandbox, store_path: Path) -> None:
    items = [{**item, "urgent": i == 0} for i, item in enumerate(ITEMS)]
    expected = one_model(fast).batch(ITEMS)
    fast.reset()
    wrapped = batchain.wrap(one_model(fast), mode="auto", priority_field="urgent", store=store_path, **QUICK)
    assert wrapped.batch(items) == expected
    assert billed(fast, "tier") == {("realtime",): 1, ("batch",): len(ITEMS) - 1}
    assert not fast.duplicates()


def test_every_batch_call_is_one_job_and_a_repeat_is_answered_from_the_store(
    fast: Sandbox, store_path: Path
) -> None:
    wrapped = batchain.wrap(one_model(fast), mode="batch", store=store_path, **QUICK)
    first = wrapped.batch(ITEMS)
    first_job = wrapped.last_job
    assert jobs_in(store_path) == 1 and sum(billed(fast).values()) == len(ITEMS)
    assert wrapped.batch(ITEMS) == first
    assert jobs_in(store_path) == 2
    assert wrapped.last_job is not None and wrapped.last_job.id != first_job.id  # type: ignore[union-attr]
    assert wrapped.last_job.call_stats.get("cache") == len(ITEMS)
    assert sum(billed(fast).values()) == len(ITEMS) and not fast.duplicates()  # nothing new billed
    assert wrapped.invoke(ITEMS[2]) == first[2]
    assert jobs_in(store_path) == 3 and sum(billed(fast).values()) == len(ITEMS)


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_return_exceptions_puts_the_error_in_place(fast: Sandbox, store_path: Path, mode: str) -> None:
    items = [{"x": "fine"}, {"x": "[[fail:400]] broken"}, {"x": "also fine"}]
    expected = one_model(fast).batch(items, return_exceptions=True)
    fast.reset()
    wrapped = batchain.wrap(one_model(fast), mode=mode, store=store_path, **QUICK)
    got = wrapped.batch(items, return_exceptions=True)
    assert [isinstance(x, Exception) for x in got] == [False, True, False]
    assert [got[0], got[2]] == [expected[0], expected[2]]
    if mode == "realtime":  # the provider's error, as chain.batch returns it
        assert isinstance(got[1], openai.BadRequestError) and isinstance(expected[1], openai.BadRequestError)
    else:
        assert isinstance(got[1], batchain.BatchCallError)
    with pytest.raises(type(got[1])) as raised:  # without it, the first error is raised
        wrapped.batch(items)
    assert any("batchain job" in note for note in getattr(raised.value, "__notes__", []))
    assert not fast.duplicates()
    assert wrapped.last_job is not None and wrapped.last_job.counts["failed"] == 1


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_config_reaches_every_run(fast: Sandbox, store_path: Path, mode: str) -> None:
    wrapped = batchain.wrap(one_model(fast), mode=mode, store=store_path, **QUICK)
    runs = Runs()
    config = {"callbacks": [runs], "tags": ["nightly"], "metadata": {"team": "search"}, "max_concurrency": 2}
    assert len(wrapped.batch(ITEMS, config)) == len(ITEMS)  # type: ignore[arg-type]
    top = runs.top()
    assert len(top) == len(ITEMS)
    assert all("nightly" in tags and meta["team"] == "search" for tags, meta, _, _ in top)
    assert wrapped.last_job is not None and wrapped.last_job.record.options["max_concurrency"] == 2
    # one config per input: callbacks and run ids may differ, the rest may not
    mine, ids = [Runs() for _ in ITEMS[:2]], [uuid.uuid4(), uuid.uuid4()]
    configs: Any = [{"callbacks": [h], "run_id": i, "tags": ["t"]} for h, i in zip(mine, ids, strict=True)]
    wrapped.batch(ITEMS[:2], configs)
    assert [[run_id for *_, run_id in h.top()] for h in mine] == [[i] for i in ids]
    with pytest.raises(batchain.InvalidOption, match=r"config\[1\] has another tags"):
        wrapped.batch(ITEMS[:2], [{"tags": ["a"]}, {"tags": ["b"]}])
    assert sum(billed(fast).values()) == len(ITEMS) and not fast.duplicates()


def test_it_composes_and_nests_under_the_outer_run(sandbox: Sandbox, store_path: Path) -> None:
    chain = one_model(sandbox)
    shout = RunnableLambda(lambda text: text.upper())
    expected = (chain | shout).batch(ITEMS)
    sandbox.reset()
    composed = batchain.wrap(chain, store=store_path) | shout
    assert composed.batch(ITEMS) == expected
    runs = Runs()
    assert composed.invoke(ITEMS[0], {"callbacks": [runs]}) == expected[0]  # from the store
    assert len(runs.top()) == 1  # the wrapped chain's run is a child of the sequence's
    assert composed.get_input_schema().model_json_schema() == chain.get_input_schema().model_json_schema()
    assert batchain.wrap(chain).get_output_schema() is not None
    assert batchain.wrap(chain).InputType == chain.InputType
    assert len(sandbox.ledger()) == len(ITEMS) and not sandbox.duplicates()


def test_batch_as_completed_yields_every_index_once(fast: Sandbox, store_path: Path) -> None:
    items = [*ITEMS, {"x": "[[fail:400]] no"}]
    expected = one_model(fast).batch(ITEMS)
    fast.reset()
    wrapped = batchain.wrap(one_model(fast), mode="batch", store=store_path, **QUICK)
    got = list(wrapped.batch_as_completed(items, return_exceptions=True))
    assert sorted(i for i, _ in got) == list(range(len(items)))
    outputs = dict(got)
    assert isinstance(outputs[len(ITEMS)], batchain.BatchCallError)
    assert [outputs[i] for i in range(len(ITEMS))] == expected
    with pytest.raises(batchain.BatchCallError):
        list(wrapped.batch_as_completed(items))
    assert sum(billed(fast).values()) == len(ITEMS) and not fast.duplicates()


def test_async_twins(fast: Sandbox, store_path: Path) -> None:
    chain = one_model(fast)
    expected = chain.batch(ITEMS)
    fast.reset()
    wrapped = batchain.wrap(chain, mode="batch", store=store_path, **QUICK)

    async def go() -> tuple[Any, list[Any], dict[int, Any]]:
        one = await wrapped.ainvoke(ITEMS[0])
        many = await wrapped.abatch(ITEMS)
        pairs = {i: out async for i, out in wrapped.abatch_as_completed(ITEMS)}
        return one, many, pairs

    one, many, pairs = asyncio.run(go())
    assert one == expected[0] and many == expected
    assert [pairs[i] for i in range(len(ITEMS))] == expected
    assert jobs_in(store_path) == 3
    assert sum(billed(fast).values()) == len(ITEMS) and not fast.duplicates()  # the rest from the store


def test_options_are_checked_when_wrapping(sandbox: Sandbox, store_path: Path) -> None:
    chain = one_model(sandbox)
    with pytest.raises(batchain.InvalidOption, match="mode"):
        batchain.wrap(chain, mode="turbo")
    with pytest.raises(batchain.InvalidOption, match="max_batch_size"):
        batchain.wrap(chain, max_batch_size=0)
    with pytest.raises(TypeError, match="unknown option"):
        batchain.wrap(chain, max_concurency=3)
    with pytest.raises(batchain.InvalidOption, match="job_id"):
        batchain.wrap(chain, job_id="mine")
    with pytest.raises(batchain.InvalidOption, match="stop"):
        batchain.wrap(chain, store=store_path).invoke(ITEMS[0], stop=["x"])
    assert batchain.wrap(chain, store=store_path).batch([]) == []
    assert not sandbox.ledger() and not store_path.exists()


def test_leaving_batch_as_completed_early_stops_the_job_at_once(sandbox: Sandbox, store_path: Path) -> None:
    items = [{"x": "quick"}, {"x": "[[latency:30000]] slow"}]
    wrapped = batchain.wrap(one_model(sandbox), store=store_path, timeout=1.0)
    started = time.monotonic()
    for index, _ in wrapped.batch_as_completed(items):
        assert index == 0
        break
    assert time.monotonic() - started < 15  # not the slow item's 30 s
    with SQLiteStore(store_path) as st:
        (job,) = st.list_jobs()
    counts = batchain.Job.open(job.id, store=store_path).counts
    assert counts["succeeded"] == 1 and counts["pending"] == 1  # to resume, not lost
    assert not sandbox.duplicates()


def test_a_job_paused_by_its_budget_raises_job_incomplete(sandbox: Sandbox, store_path: Path) -> None:
    prices = {"openai/gpt-4o-mini": {"input": 100.0, "output": 400.0}}  # a few calls
    chain = PROMPT | make_openai(sandbox, max_tokens=20) | StrOutputParser()
    wrapped = batchain.wrap(chain, store=store_path, budget=0.05, prices=prices, max_concurrency=2)
    items = [{"x": i} for i in range(40)]
    with pytest.raises(batchain.JobIncomplete, match="resume") as raised:
        wrapped.batch(items, return_exceptions=True)
    job = batchain.Job.open(raised.value.job_id, store=store_path)
    assert job.status == batchain.JobStatus.PAUSED and 0 < job.counts["succeeded"] < len(items)
    assert sum(billed(sandbox).values()) == job.counts["succeeded"] and not sandbox.duplicates()
