"""A run records its progress over time (for the dashboard's charts): samples that only move
forward and end where the job ended, with the calls the sandbox billed and their cost."""

from __future__ import annotations

import itertools
import time
from decimal import Decimal
from pathlib import Path

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.engine import history
from batchain.sandbox import Sandbox
from batchain.states import JobStatus
from batchain.store import SQLiteStore
from batchain.store.records import ProgressSample
from tests.engine.conftest import make_openai

PROMPT = ChatPromptTemplate.from_template("Say something about {x}")


def _samples(store: Path, job_id: str) -> list[ProgressSample]:
    with SQLiteStore(store, read_only=True) as st:
        return st.progress_history(job_id)


def _moves_forward(samples: list[ProgressSample], *, items: bool = True) -> None:
    for a, b in itertools.pairwise(samples):
        assert b.t > a.t and b.calls_paid >= a.calls_paid
        assert a.cost is not None and b.cost is not None and b.cost >= a.cost
        assert b.items_done >= a.items_done or not items


def _ends_where_the_job_ended(job: batchain.Job, sample: ProgressSample, billed: int) -> None:
    counts = job.counts
    assert sample.items_done == counts["total"] - counts["pending"]
    assert (sample.items_failed, sample.items_total) == (counts["failed"], counts["total"])
    assert sample.calls_paid == job.call_stats["paid"] == billed
    assert sample.cost == job.report().paid > 0
    usage = job.store.job_usage(job.id)
    assert sample.tokens == usage.input_tokens + usage.output_tokens > 0


def test_a_realtime_run_samples_its_progress_as_it_goes(
    sandbox: Sandbox, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "_FIRST_EVERY", 0.02)
    sandbox.configure(latency_ms=20)
    chain = PROMPT | make_openai(sandbox) | StrOutputParser()
    job = batchain.run(
        chain, [{"x": i} for i in range(80)], store=store_path, progress=False, max_concurrency=4
    )
    samples = _samples(store_path, job.id)
    assert len(samples) >= 5  # about 0.4 s of calls, a sample every 20 ms when something moved
    assert samples[0].items_done < samples[-1].items_done == 80
    _moves_forward(samples)
    _ends_where_the_job_ended(job, samples[-1], len(sandbox.ledger()))
    assert not sandbox.duplicates()


def test_a_batch_run_and_its_retry_add_up(fast: Sandbox, store_path: Path) -> None:
    job = _failing_batch_job(fast, store_path, n=40, seed=3)
    first = _samples(store_path, job.id)
    assert first[-1].items_failed == job.counts["failed"] > 0
    job = job.retry(mode="batch", progress=False, poll_min=0.02)
    samples = _samples(store_path, job.id)
    assert samples[: len(first)] == first and len(samples) > len(first)
    # the second run's samples go on from what the first paid; its items go from the
    # failed ones, now pending again, to done
    _moves_forward(samples, items=False)
    _moves_forward(samples[len(first) :])
    assert samples[len(first)].items_done < first[-1].items_done
    assert samples[-1].items_failed == 0
    _ends_where_the_job_ended(job, samples[-1], len(fast.ledger()))
    assert not fast.duplicates()


def test_samples_come_less_often_as_a_run_goes_on() -> None:
    assert history.interval(0) == history.interval(100) == 2.0
    assert history.interval(3_000) == 10.0
    assert history.interval(10 * 3600) == 60.0


def _sums(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Note each time a run sums what the job paid from its calls."""
    summed: list[str] = []
    real = SQLiteStore.job_spent

    def job_spent(self: SQLiteStore, job_id: str) -> object:
        summed.append(job_id)
        return real(self, job_id)

    monkeypatch.setattr(SQLiteStore, "job_spent", job_spent)
    return summed


def _failing_batch_job(fast: Sandbox, store_path: Path, *, n: int = 30, seed: int = 5) -> batchain.Job:
    """A batch job of ``n`` items, some failed (no retries), and the sandbox healed after."""
    fast.configure(batch_item_error_rate=0.3, seed=seed)
    chain = PROMPT | make_openai(fast) | StrOutputParser()
    job = batchain.run(
        chain,
        [{"x": i} for i in range(n)],
        mode="batch",
        store=store_path,
        progress=False,
        max_retries=0,
        poll_min=0.02,
    )
    assert job.counts["failed"] > 0
    fast.configure(batch_item_error_rate=0.0)
    return job


def test_a_run_after_a_clean_one_goes_on_from_its_last_sample(
    fast: Sandbox, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _failing_batch_job(fast, store_path)
    summed = _sums(monkeypatch)
    job = job.retry(mode="batch", progress=False, poll_min=0.02)
    # the first run left cleanly: its last sample says what it paid, no call is walked
    assert summed == []
    _ends_where_the_job_ended(job, _samples(store_path, job.id)[-1], len(fast.ledger()))
    assert not fast.duplicates()


def test_a_run_after_a_crash_sums_what_earlier_runs_paid(
    fast: Sandbox, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _failing_batch_job(fast, store_path)
    with SQLiteStore(store_path) as st:
        # as a run that died leaves the job: running, its last sample behind what it paid
        st.record_progress(job.id, ProgressSample(time.time(), 0, 0, 30, 0, Decimal(0), 0))
        st.set_job_status(job.id, JobStatus.RUNNING)
    summed = _sums(monkeypatch)
    job = job.retry(mode="batch", progress=False, poll_min=0.02)
    assert summed == [job.id]
    last = _samples(store_path, job.id)[-1]
    _ends_where_the_job_ended(job, last, len(fast.ledger()))
    assert not fast.duplicates()
