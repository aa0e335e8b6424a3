"""Realtime engine behaviour against the sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel

import batchain
from batchain.sandbox import Sandbox
from tests.conftest import TEST_KEY
from tests.engine.conftest import make_anthropic, make_openai

PROMPT = ChatPromptTemplate.from_template("Say something about {x}.")


def simple_chain(sb: Sandbox, **kw: object) -> object:
    return PROMPT | make_openai(sb, **kw) | StrOutputParser()


def test_results_in_input_order_with_usage(sandbox: Sandbox, store_path: Path) -> None:
    inputs = [{"x": f"thing {i}"} for i in range(50)]
    job = batchain.run(simple_chain(sandbox), inputs, store=store_path, progress=False)
    assert job.status == batchain.JobStatus.COMPLETED
    results = job.results()
    assert [r.index for r in results] == list(range(50))
    assert [r.input for r in results] == inputs
    assert all(r.ok and isinstance(r.output, str) for r in results)
    ledger = sandbox.ledger()
    assert len(ledger) == 50
    usage = job.usage
    assert usage.requests == 50
    assert usage.input_tokens == sum(e.input_tokens for e in ledger)
    assert usage.output_tokens == sum(e.output_tokens for e in ledger)


def test_duplicate_inputs_share_one_request(sandbox: Sandbox, store_path: Path) -> None:
    inputs = [{"x": f"thing {i % 10}"} for i in range(60)]
    job = batchain.run(simple_chain(sandbox), inputs, store=store_path, progress=False)
    assert job.counts["succeeded"] == 60
    assert len(sandbox.ledger()) == 10
    assert not sandbox.duplicates()
    assert job.outputs()[0] == job.outputs()[10]


def test_cache_across_jobs_and_opt_out(sandbox: Sandbox, store_path: Path) -> None:
    inputs = [{"x": i} for i in range(20)]
    first = batchain.run(simple_chain(sandbox), inputs, store=store_path, progress=False)
    assert len(sandbox.ledger()) == 20
    second = batchain.run(simple_chain(sandbox), inputs, store=store_path, progress=False)
    assert len(sandbox.ledger()) == 20, "a second job over the same inputs must not pay again"
    assert second.outputs() == first.outputs()
    assert second.call_stats == {"cache": 20}
    assert second.usage.requests == 0
    third = batchain.run(simple_chain(sandbox), inputs, store=store_path, progress=False, cache=False)
    assert len(sandbox.ledger()) == 40
    assert third.call_stats == {"paid": 20}


def test_concurrency_cap_is_global_through_nested_parallel(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(latency_ms=60)
    gpt = make_openai(sandbox)
    fan = PROMPT | RunnableParallel(
        a=gpt | StrOutputParser(),
        b=gpt.bind(stop=["zz"]) | StrOutputParser(),
        c=RunnableParallel(d=gpt.bind(temperature=0.5), e=gpt.bind(temperature=0.7)),
    )
    job = batchain.run(
        fan, [{"x": i} for i in range(12)], store=store_path, progress=False, max_concurrency=3
    )
    assert job.counts["succeeded"] == 12
    assert job.stats["peak_in_flight"] == 3
    assert len(sandbox.ledger()) == 48


def test_transient_errors_are_retried_and_billed_once(sandbox: Sandbox, store_path: Path) -> None:
    inputs = [{"x": f"[[flaky:2]] item {i}"} for i in range(5)]
    job = batchain.run(simple_chain(sandbox), inputs, store=store_path, progress=False, max_retries=3)
    assert job.counts["succeeded"] == 5
    assert job.stats["retries"] == 10
    assert len(sandbox.ledger()) == 5


def test_request_errors_fail_the_item_without_retry(sandbox: Sandbox, store_path: Path) -> None:
    inputs = [{"x": "fine"}, {"x": "[[fail:400]] broken"}, {"x": "also fine"}]
    job = batchain.run(simple_chain(sandbox), inputs, store=store_path, progress=False)
    assert job.status == batchain.JobStatus.COMPLETED
    assert job.counts == {"pending": 0, "succeeded": 2, "failed": 1, "cancelled": 0, "total": 3}
    (err,) = job.errors()
    assert err.index == 1
    assert err.error is not None
    assert err.error["type"] == "BadRequestError"
    assert "400" in err.error["message"]
    assert job.stats["retries"] == 0
    assert len(sandbox.ledger()) == 2


def test_timeout_is_retried_then_reported(sandbox: Sandbox, store_path: Path) -> None:
    inputs = [{"x": "[[latency:3000]] slow"}, {"x": "quick"}]
    t0 = time.monotonic()
    job = batchain.run(
        simple_chain(sandbox), inputs, store=store_path, progress=False, timeout=0.3, max_retries=1
    )
    assert time.monotonic() - t0 < 5
    assert job.counts["failed"] == 1 and job.counts["succeeded"] == 1
    assert "Timeout" in job.errors()[0].error["type"]  # type: ignore[index]
    assert job.stats["retries"] == 1


def test_rate_limit_without_a_configured_limit_still_finishes(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(rpm=600)  # 10 requests/s, a burst of 10
    inputs = [{"x": i} for i in range(40)]
    t0 = time.monotonic()
    job = batchain.run(simple_chain(sandbox), inputs, store=store_path, progress=False)
    elapsed = time.monotonic() - t0
    assert job.counts["succeeded"] == 40
    assert len(sandbox.ledger()) == 40
    assert elapsed >= 2.5  # the sandbox allowed ~10 + 10/s
    assert elapsed < 8


def test_rate_limit_given_is_respected_without_429s(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(rpm=1200)
    job = batchain.run(
        simple_chain(sandbox), [{"x": i} for i in range(30)], store=store_path, progress=False, rpm=1200
    )
    assert job.counts["succeeded"] == 30
    assert job.stats["rate_limited"] == 0


def test_generator_inputs_and_as_completed(sandbox: Sandbox, store_path: Path) -> None:
    def gen() -> Iterator[dict[str, int]]:
        for i in range(30):
            yield {"x": i}

    seen = dict(batchain.as_completed(simple_chain(sandbox), gen(), store=store_path))
    assert sorted(seen) == list(range(30))
    assert all(r.ok for r in seen.values())
    assert seen[3].input == {"x": 3}


def test_async_twins(sandbox: Sandbox, store_path: Path) -> None:
    async def main() -> list[int]:
        job = await batchain.arun(
            simple_chain(sandbox), [{"x": i} for i in range(5)], store=store_path, progress=False
        )
        assert job.counts["succeeded"] == 5
        got = []
        async for idx, res in batchain.aas_completed(
            simple_chain(sandbox), [{"x": i} for i in range(5, 9)], store=store_path
        ):
            assert res.ok
            got.append(idx)
        return sorted(got)

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_leaving_as_completed_early_pauses_and_resume_finishes(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(latency_ms=20)
    chain = simple_chain(sandbox)
    inputs = [{"x": i} for i in range(200)]
    it = batchain.as_completed(chain, inputs, store=store_path, max_concurrency=4)
    next(it)
    it.close()
    (job_rec,) = batchain.SQLiteStore(store_path).list_jobs()
    job = batchain.Job.open(job_rec.id, store=store_path, chain=chain)
    assert job.status == batchain.JobStatus.PAUSED
    assert 0 < job.counts["succeeded"] < 200
    job.resume(inputs, progress=False)
    assert job.status == batchain.JobStatus.COMPLETED
    assert job.counts["succeeded"] == 200
    assert not sandbox.duplicates()
    assert len(sandbox.ledger()) == 200


def test_job_reopens_by_recorded_chain_reference(sandbox: Sandbox, store_path: Path, tmp_path: Path) -> None:
    chain_file = tmp_path / "my_chain.py"
    chain_file.write_text(
        "from langchain_openai import ChatOpenAI\n"
        "from langchain_core.prompts import ChatPromptTemplate\n"
        f"chain = ChatPromptTemplate.from_template('Hi {{x}}') | ChatOpenAI(model='gpt-4o-mini',"
        f" api_key='{TEST_KEY}', base_url='{sandbox.openai_base_url}')\n"
    )
    ref = f"{chain_file}:chain"
    job = batchain.run(ref, [{"x": 1}, {"x": 2}], store=store_path, progress=False)
    again = batchain.Job.open(job.id, store=store_path)
    assert again.record.chain_ref == ref
    again.retry(progress=False)  # nothing failed: a no-op run that must still work
    assert again.counts["succeeded"] == 2


def test_failed_items_can_be_retried(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(error_rate=1.0)
    job = batchain.run(
        simple_chain(sandbox), [{"x": i} for i in range(4)], store=store_path, progress=False, max_retries=0
    )
    assert job.counts["failed"] == 4
    sandbox.configure(error_rate=0.0)
    job.retry(progress=False)
    assert job.counts["succeeded"] == 4


def test_api_key_never_reaches_the_store(sandbox: Sandbox, store_path: Path) -> None:
    job = batchain.run(simple_chain(sandbox), [{"x": 1}], store=store_path, progress=False)
    job2 = batchain.run(simple_chain(sandbox), [{"x": "[[fail:400]]"}], store=store_path, progress=False)
    assert job.counts["succeeded"] == 1 and job2.counts["failed"] == 1
    batchain.SQLiteStore(store_path).close()
    for path in store_path.parent.iterdir():
        assert TEST_KEY.encode() not in path.read_bytes()
        assert b"SECRET" not in path.read_bytes()


def test_unserializable_output_is_a_clear_item_error(sandbox: Sandbox, store_path: Path) -> None:
    chain = simple_chain(sandbox) | (lambda s: object())
    job = batchain.run(chain, [{"x": 1}], store=store_path, progress=False)
    (err,) = job.errors()
    assert err.error is not None and err.error["where"] == "output"
    assert "cannot store" in err.error["message"]


def test_sdk_retries_do_not_multiply_ours(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(error_rate=1.0)
    model = make_openai(sandbox, max_retries=5)  # the SDK's own retries must stay off
    job = batchain.run(PROMPT | model, [{"x": 1}], store=store_path, progress=False, max_retries=2)
    assert job.counts["failed"] == 1
    assert job.stats["sent"] == 3


def test_anthropic_errors_classified(sandbox: Sandbox, store_path: Path) -> None:
    chain = PROMPT | make_anthropic(sandbox) | StrOutputParser()
    job = batchain.run(
        chain, [{"x": "[[fail:400]]"}, {"x": "[[flaky:1]] ok"}], store=store_path, progress=False
    )
    assert job.counts["failed"] == 1 and job.counts["succeeded"] == 1
    assert job.stats["retries"] == 1


def test_openai_exception_type_reaches_fallbacks(sandbox: Sandbox, store_path: Path) -> None:
    failing = ChatPromptTemplate.from_template("[[fail:400]] {x}") | make_openai(sandbox)
    chain = (
        failing.with_fallbacks(
            [PROMPT | make_anthropic(sandbox)], exceptions_to_handle=(openai.BadRequestError,)
        )
        | StrOutputParser()
    )
    job = batchain.run(chain, [{"x": 1}], store=store_path, progress=False)
    assert job.counts["succeeded"] == 1


def test_a_job_runs_in_one_process_at_a_time(sandbox: Sandbox, store_path: Path) -> None:
    from batchain.engine.lifecycle import JobBusy
    from batchain.store.sqlite import SQLiteStore

    job = batchain.run(simple_chain(sandbox), [{"x": 1}], store=store_path, progress=False)
    with SQLiteStore(store_path) as st:
        # a live process elsewhere holds it (pid 1 on this host is always alive)
        import socket

        claim = st.acquire_lease(job.id, f"{socket.gethostname()}:1", 30.0)
        assert claim.epoch is not None
    with pytest.raises(JobBusy, match="another process"):
        job.retry(progress=False)
    with SQLiteStore(store_path) as st:
        st.release_lease(job.id, f"{socket.gethostname()}:1", claim.epoch)
        # a dead owner's lease is taken over at once (a crashed run)
        assert st.acquire_lease(job.id, f"{socket.gethostname()}:999999999", 30.0).epoch is not None
    job.retry(progress=False)
    assert job.counts["succeeded"] == 1


def test_failing_input_iterator_pauses_the_job_with_the_reason(sandbox: Sandbox, store_path: Path) -> None:
    def rows() -> Iterator[dict[str, int]]:
        yield {"x": 1}
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        batchain.run(simple_chain(sandbox), rows(), store=store_path, progress=False)
    (rec,) = batchain.SQLiteStore(store_path).list_jobs()
    assert rec.status == batchain.JobStatus.PAUSED
    assert "disk went away" in (rec.note or "")


def test_store_from_an_older_build_gains_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE calls (key TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT NOT NULL,"
        " endpoint TEXT NOT NULL DEFAULT '', status TEXT NOT NULL, attempts INTEGER NOT NULL"
        " DEFAULT 0, tier TEXT, job_id TEXT, request TEXT, response TEXT, error TEXT,"
        " input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,"
        " cache_read_tokens INTEGER NOT NULL DEFAULT 0, cache_creation_tokens INTEGER NOT NULL"
        " DEFAULT 0, reasoning_tokens INTEGER NOT NULL DEFAULT 0, batch_id TEXT,"
        " updated_at REAL NOT NULL) WITHOUT ROWID;"
    )
    con.close()
    with batchain.SQLiteStore(path) as st:
        cols = {r[1] for r in st._read("PRAGMA table_info(calls)")}
    assert {"cost", "request_hash"} <= cols
