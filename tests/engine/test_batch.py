"""Batch mode behaviour against the sandbox's Batch APIs over real HTTP."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

import batchain
from batchain.engine.calls import BatchUnsupportedError
from batchain.sandbox import Sandbox
from batchain.store import open_store
from batchain.store.records import BatchRecord
from tests.engine.conftest import make_anthropic, make_openai

PROMPT = ChatPromptTemplate.from_template("Say something about {x}.")


def chain_for(sb: Sandbox, provider: str = "openai") -> object:
    model = make_openai(sb) if provider == "openai" else make_anthropic(sb)
    return PROMPT | model | StrOutputParser()


def run_batch(chain: object, inputs: list[object], store: Path, **kw: object) -> batchain.Job:
    kw.setdefault("poll_min", 0.02)
    return batchain.run(chain, inputs, mode="batch", store=store, progress=False, **kw)  # type: ignore[arg-type]


def provider_batches(store: Path) -> list[BatchRecord]:
    with open_store(store) as st:
        (job,) = st.list_jobs()
        return st.job_batches(job.id)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_results_equal_realtime(fast: Sandbox, any_store: str | Path, provider: str) -> None:
    inputs = [{"x": f"topic {i}"} for i in range(30)]
    batch = run_batch(chain_for(fast, provider), inputs, any_store)
    assert {e.tier for e in fast.ledger()} == {"batch"}
    realtime = batchain.run(chain_for(fast, provider), inputs, store=any_store, progress=False, cache=False)
    assert batch.outputs() == realtime.outputs()
    assert batch.stats["rounds"] == 1 and batch.stats["batches_created"] == 1


def test_batches_split_under_the_size_limit(fast: Sandbox, any_store: str | Path) -> None:
    job = run_batch(chain_for(fast), [{"x": i} for i in range(25)], any_store, max_batch_size=10)
    assert job.counts["succeeded"] == 25
    ids = {e.batch_id for e in fast.ledger()}
    assert len(ids) == 3
    assert job.stats["batches_created"] == 3


def test_expired_batch_keeps_partial_results_and_resubmits_the_rest(
    fast: Sandbox, any_store: str | Path
) -> None:
    fast.configure(batch_expire_after_fraction=0.5, batch_processing_s=0.2)
    job = batchain.submit(chain_for(fast), [{"x": i} for i in range(40)], store=any_store, poll_min=0.02)
    while job.poll() == batchain.JobStatus.WAITING and not job.counts["succeeded"]:
        pass
    assert job.counts["succeeded"] == 20  # the half that ran before expiry is kept
    per_batch = collections.Counter(e.batch_id for e in fast.ledger())
    assert per_batch.most_common(1)[0][1] == 20  # round 2 may already have started
    fast.configure(batch_expire_after_fraction=None)
    job.wait()
    assert job.counts["succeeded"] == 40
    assert not fast.duplicates()
    assert len(fast.ledger()) == 40


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_errored_items_retry_transient_and_fail_permanent(
    fast: Sandbox, any_store: str | Path, provider: str
) -> None:
    inputs = [{"x": "[[flaky:1]] a"}, {"x": "[[fail:400]] b"}, {"x": "c"}]
    job = run_batch(chain_for(fast, provider), inputs, any_store)
    assert [r.status.value for r in job.results()] == ["succeeded", "failed", "succeeded"]
    err = job.errors()[0].error
    assert err is not None and err["type"] == "BatchCallError"
    assert provider in err["message"]
    assert job.stats["calls_requeued"] == 1
    assert len(fast.ledger()) == 2


def test_random_item_errors_are_retried(fast: Sandbox, any_store: str | Path) -> None:
    fast.configure(batch_item_error_rate=0.3)
    job = run_batch(chain_for(fast), [{"x": i} for i in range(30)], any_store, max_retries=10)
    assert job.counts["succeeded"] == 30
    assert not fast.duplicates()


def test_dropped_results_are_matched_by_custom_id(fast: Sandbox, any_store: str | Path) -> None:
    fast.configure(batch_drop_rate=0.3)
    inputs = [{"x": i} for i in range(30)]
    job = run_batch(chain_for(fast), inputs, any_store, max_retries=10)
    assert job.counts["succeeded"] == 30
    fast.configure(batch_drop_rate=0.0)
    again = batchain.run(chain_for(fast), inputs, store=any_store, progress=False, cache=False)
    assert job.outputs() == again.outputs()  # never shifted onto the wrong item


def test_batch_failing_validation_fails_its_items_clearly(fast: Sandbox, any_store: str | Path) -> None:
    fast.configure(batch_fail_validation=True)
    job = run_batch(chain_for(fast), [{"x": 1}, {"x": 2}], any_store)
    assert job.counts["failed"] == 2
    assert "validation" in job.errors()[0].error["message"]  # type: ignore[index]
    assert fast.ledger() == []


def test_429_on_create_is_retried(fast: Sandbox, any_store: str | Path) -> None:
    fast.configure(batch_create_429=2)
    job = run_batch(chain_for(fast, "anthropic"), [{"x": i} for i in range(5)], any_store)
    assert job.counts["succeeded"] == 5
    assert len({e.batch_id for e in fast.ledger()}) == 1


def test_model_without_adapter_fails_before_submitting(fast: Sandbox, any_store: str | Path) -> None:
    chain = PROMPT | ParrotFakeChatModel()
    with pytest.raises(BatchUnsupportedError, match="ParrotFakeChatModel"):
        run_batch(chain, [{"x": 1}], any_store)
    assert fast.ledger() == []


def test_hidden_model_without_adapter_stops_the_job_before_any_batch(
    fast: Sandbox, any_store: str | Path
) -> None:
    def hidden(x: dict[str, int]) -> str:
        return str(ParrotFakeChatModel().invoke(f"hi {x['x']}").content)  # built at call time

    chain = RunnableLambda(hidden) | make_openai(fast)
    with pytest.raises(BatchUnsupportedError):
        run_batch(chain, [{"x": i} for i in range(5)], any_store)
    assert fast.ledger() == []
    with open_store(any_store) as st:
        (job,) = st.list_jobs()
        assert job.status == batchain.JobStatus.PAUSED
        assert "fallback" in (job.note or "")
        assert st.job_batches(job.id) == []


def test_fallback_realtime_records_the_tier_of_each_call(fast: Sandbox, any_store: str | Path) -> None:
    parrot = ParrotFakeChatModel()
    chain = PROMPT | parrot | (lambda m: {"x": m.content}) | PROMPT | make_openai(fast)
    job = run_batch(chain, [{"x": i} for i in range(4)], any_store, fallback="realtime")
    assert job.counts["succeeded"] == 4
    with open_store(any_store) as st:
        tiers = dict(st._read("SELECT tier, COUNT(*) FROM calls GROUP BY tier"))
    assert tiers == {"realtime": 4, "batch": 4}
    assert {e.tier for e in fast.ledger()} == {"batch"}


def test_submit_then_poll_until_done(fast: Sandbox, any_store: str | Path) -> None:
    fast.configure(batch_processing_s=0.3)
    chain = chain_for(fast) | (lambda s: {"x": s}) | chain_for(fast, "anthropic")
    job = batchain.submit(chain, [{"x": i} for i in range(10)], store=any_store, poll_min=0.02)
    assert job.status == batchain.JobStatus.WAITING
    assert len(provider_batches(any_store)) == 1
    reopened = batchain.Job.open(job.id, store=any_store, chain=chain)
    seen = set()
    for _ in range(200):
        status = reopened.poll()
        seen.add(status)
        if status == batchain.JobStatus.COMPLETED:
            break
    assert reopened.counts["succeeded"] == 10
    assert batchain.JobStatus.WAITING in seen
    assert len(provider_batches(any_store)) == 2
    assert not fast.duplicates()


@pytest.mark.parametrize("window", [None, 8], ids=["one window", "items leave the window"])
def test_cancel_keeps_finished_results(fast: Sandbox, any_store: str | Path, window: int | None) -> None:
    fast.configure(batch_processing_s=3.0)
    job = batchain.submit(
        chain_for(fast), [{"x": i} for i in range(40)], store=any_store, poll_min=0.02, window=window
    )
    import time

    time.sleep(1.0)  # about a third of the batch has run
    job.cancel()
    assert job.status == batchain.JobStatus.CANCELLED
    counts = job.counts
    assert counts["succeeded"] > 0 and counts["cancelled"] > 0
    assert counts["succeeded"] + counts["cancelled"] == 40
    assert len(fast.ledger()) == counts["succeeded"] and not fast.duplicates()


def test_realtime_job_cancel_marks_pending_items(fast: Sandbox, any_store: str | Path) -> None:
    it = batchain.as_completed(
        chain_for(fast), [{"x": i} for i in range(300)], store=any_store, max_concurrency=2
    )
    next(it)
    it.close()
    with open_store(any_store) as st:
        (rec,) = st.list_jobs()
    job = batchain.Job.open(rec.id, store=any_store).cancel()
    assert job.status == batchain.JobStatus.CANCELLED
    assert job.counts["pending"] == 0 and job.counts["cancelled"] > 0


def test_submit_stores_every_input_so_wait_needs_none(fast: Sandbox, any_store: str | Path) -> None:
    # a window smaller than the dataset: only 10 items are parked at a time
    job = batchain.submit(
        chain_for(fast), ({"x": i} for i in range(25)), store=any_store, poll_min=0.02, window=10
    )
    assert job.record.inputs_complete and job.counts["total"] == 25
    again = batchain.Job.open(job.id, store=any_store, chain=chain_for(fast))
    again.wait()  # no inputs passed: they are all in the store
    assert again.counts["succeeded"] == 25
    assert len(fast.ledger()) == 25 and not fast.duplicates()


@pytest.mark.parametrize("path", ["bulk", "ordinary"])
def test_an_identical_job_submitted_meanwhile_waits_on_the_first_ones_batches(
    fast: Sandbox, any_store: str | Path, path: str
) -> None:
    """Its calls are the first job's, already at the provider: it waits for those batches
    (status waiting, not paused), and both end with every call billed once."""
    fast.configure(batch_processing_s=0.5)
    chain = chain_for(fast)
    if path == "ordinary":  # a second model step: the chain's items go the ordinary way
        chain = chain | (lambda s: {"x": s}) | chain_for(fast)  # type: ignore[operator]
    inputs = [{"x": i} for i in range(12)]
    first = batchain.submit(chain, inputs, store=any_store, poll_min=0.02)  # type: ignore[arg-type]
    second = batchain.submit(chain, inputs, store=any_store, poll_min=0.02)  # type: ignore[arg-type]
    assert first.status == second.status == batchain.JobStatus.WAITING, second.record.note
    assert second.wait(progress=False).counts["succeeded"] == 12
    assert first.wait(progress=False).counts["succeeded"] == 12
    assert first.outputs() == second.outputs()
    stages = 2 if path == "ordinary" else 1
    assert len(fast.ledger()) == 12 * stages and not fast.duplicates()
