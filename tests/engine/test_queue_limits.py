"""Provider queues as resources: enqueued-token limits, batch size limits and open-batch
caps. The sandbox refuses like the providers do (OpenAI ``token_limit_exceeded`` and
``too_many_tasks`` at validation, a file too large at upload; Anthropic 413, 400 and a
429 for its processing queue at create); batchain splits or waits, never fails an item
for it. The sandbox ledger is the judge: every request billed once, in batch mode."""

from __future__ import annotations

import collections
import itertools
import logging
from pathlib import Path

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.sandbox import Sandbox
from batchain.store import SQLiteStore
from batchain.store.records import BatchRecord
from tests.engine.conftest import make_anthropic, make_openai

pytestmark = pytest.mark.timeout(60)

# "Say something about 12." is 11 prompt tokens at the sandbox (3 priming + 3 message +
# 5 words and marks), and about as many in batchain's estimate (23 characters / 4 + 6)
PROMPT = ChatPromptTemplate.from_template("Say something about {x}.")
TOKENS = 11
FAST = dict(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
LOG = "batchain.engine.batching"


@pytest.fixture
def fast(sandbox: Sandbox) -> Sandbox:
    sandbox.configure(**FAST)
    return sandbox


def chain_for(sb: Sandbox, provider: str) -> object:
    model = make_openai(sb) if provider == "openai" else make_anthropic(sb)
    return PROMPT | model | StrOutputParser()


def run_batch(chain: object, inputs: list[object], store: Path, **kw: object) -> batchain.Job:
    kw.setdefault("poll_min", 0.02)
    kw.setdefault("poll_max", 0.1)
    return batchain.run(chain, inputs, mode="batch", store=store, progress=False, **kw)  # type: ignore[arg-type]


def job_batches(store: Path) -> list[BatchRecord]:
    with SQLiteStore(store) as st:
        (job,) = st.list_jobs()
        return st.job_batches(job.id)


def per_batch(sb: Sandbox) -> collections.Counter[str | None]:
    """Requests billed in each provider batch."""
    return collections.Counter(e.batch_id for e in sb.ledger())


def assert_paid_once(sb: Sandbox, job: batchain.Job, n: int) -> None:
    """Every item has its one result, every request was billed once, all in batches."""
    assert job.counts["succeeded"] == n and job.counts["failed"] == 0
    ledger = sb.ledger()
    assert len(ledger) == n
    assert not sb.duplicates()
    assert {e.tier for e in ledger} == {"batch"}
    assert len(job.outputs()) == n


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and text in r.getMessage()]


@pytest.mark.parametrize("max_batch_size", [None, 5], ids=["one-batch", "batches-of-5"])
def test_an_enqueued_token_limit_a_third_of_the_job(
    fast: Sandbox, store_path: Path, caplog: pytest.LogCaptureFixture, max_batch_size: int | None
) -> None:
    """One batch of the whole job is refused (``token_limit_exceeded``, nothing else open):
    it is split under the limit the provider stated. Batches of 5 created at once: those
    over the limit are refused while others are open, and wait until one of them ends."""
    # room for 11 of 30 requests; batches run long enough that the first ones are still
    # queued when the later ones of the same flush are validated
    fast.configure(openai_enqueued_token_limit=11 * TOKENS, batch_processing_s=0.4)
    caplog.set_level(logging.INFO, logger=LOG)
    n = 30
    inputs: list[object] = [{"x": i + 10} for i in range(n)]
    job = run_batch(chain_for(fast, "openai"), inputs, store_path, max_batch_size=max_batch_size)
    assert_paid_once(fast, job, n)
    billed = per_batch(fast)
    assert len(billed) >= 3 and max(billed.values()) <= 11  # every billed batch fit the limit
    stats = job.stats
    assert stats["batches_refused"] >= 1
    assert stats["capacity_waits"] >= 1
    assert stats["calls_requeued"] == 0  # a refusal is no attempt of the calls
    refused = messages(caplog, "the provider refused")
    assert refused and all("queued tokens" in m for m in refused)
    if max_batch_size is None:
        assert "splitting" in refused[0]
    else:
        assert any("waiting until one of the" in m for m in refused)
    waits = messages(caplog, "wait for room at the provider")
    assert waits and len(waits) <= stats["batches_created"]  # said once per change, not per flush


@pytest.mark.parametrize(
    ("provider", "knob"),
    [
        ("openai", "openai_max_batch_bytes"),
        ("anthropic", "anthropic_max_batch_bytes"),
        ("openai", "openai_max_batch_requests"),
        ("anthropic", "anthropic_max_batch_requests"),
    ],
)
def test_batches_larger_than_the_provider_takes_are_split_until_they_fit(
    fast: Sandbox, store_path: Path, provider: str, knob: str
) -> None:
    """OpenAI refuses a file too large at upload and too many requests at validation;
    Anthropic answers 413 or 400 at create. The batches are halved until they fit."""
    n = 24
    limit = 2000 if knob.endswith("bytes") else 7  # about 7 requests of either provider
    fast.configure(**{knob: limit})
    job = run_batch(chain_for(fast, provider), [{"x": i + 10} for i in range(n)], store_path)
    assert_paid_once(fast, job, n)
    billed = per_batch(fast)
    assert len(billed) >= 4
    if knob.endswith("requests"):
        assert max(billed.values()) <= limit
    assert job.stats["batches_refused"] >= 1
    assert job.stats["calls_requeued"] == 0


def test_the_anthropic_processing_queue_limit_makes_calls_wait(fast: Sandbox, store_path: Path) -> None:
    fast.configure(anthropic_queue_limit=8)
    n = 20
    job = run_batch(chain_for(fast, "anthropic"), [{"x": i + 10} for i in range(n)], store_path)
    assert_paid_once(fast, job, n)
    billed = per_batch(fast)
    assert len(billed) >= 3 and max(billed.values()) <= 8
    assert job.stats["batches_refused"] >= 1
    assert job.stats["capacity_waits"] >= 1


def test_max_open_batches_one_never_has_two_open(fast: Sandbox, store_path: Path) -> None:
    n = 20
    job = run_batch(
        chain_for(fast, "openai"),
        [{"x": i + 10} for i in range(n)],
        store_path,
        max_batch_size=5,
        max_open_batches=1,
    )
    assert_paid_once(fast, job, n)
    batches = job_batches(store_path)
    assert len(batches) == 4 and all(b.status == "collected" for b in batches)
    for before, after in itertools.pairwise(batches):
        assert after.created_at >= before.updated_at  # created only once the last was collected
    spans = sorted(
        (min(ts), max(ts))
        for ts in _times_by_batch(fast).values()  # when the provider ran each batch
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end
    assert job.stats["capacity_waits"] >= 1
    assert job.stats["batches_refused"] == 0


def _times_by_batch(sb: Sandbox) -> dict[str | None, list[float]]:
    times: dict[str | None, list[float]] = collections.defaultdict(list)
    for e in sb.ledger():
        times[e.batch_id].append(e.ts)
    return times


def test_max_enqueued_tokens_caps_each_model_and_a_call_over_it_fails_alone(
    fast: Sandbox, store_path: Path
) -> None:
    n = 12
    inputs: list[object] = [{"x": i + 10} for i in range(n)]
    inputs.insert(5, {"x": "word " * 200})  # about 250 tokens, over the cap on its own
    job = run_batch(chain_for(fast, "openai"), inputs, store_path, max_enqueued_tokens=3 * TOKENS)
    assert job.counts["succeeded"] == n and job.counts["failed"] == 1
    (error,) = job.errors()
    assert error.index == 5
    message = error.error["message"]  # type: ignore[index]
    assert "max_enqueued_tokens=33" in message and "openai gpt-4o-mini" in message
    billed = per_batch(fast)
    assert max(billed.values()) <= 3 and len(billed) >= 4
    assert len(fast.ledger()) == n and not fast.duplicates()
    assert job.stats["batches_refused"] == 0


def test_a_request_larger_than_the_providers_limit_alone_fails_and_the_rest_complete(
    fast: Sandbox, store_path: Path
) -> None:
    fast.configure(openai_enqueued_token_limit=6 * TOKENS)
    n = 10
    inputs: list[object] = [{"x": i + 10} for i in range(n)]
    inputs.insert(3, {"x": "word " * 200})  # about 200 tokens at the sandbox: never fits
    job = run_batch(chain_for(fast, "openai"), inputs, store_path)
    assert job.counts["succeeded"] == n and job.counts["failed"] == 1
    (error,) = job.errors()
    assert error.index == 3
    message = error.error["message"]  # type: ignore[index]
    assert "refused alone" in message and "Limit: 66 enqueued tokens" in message
    assert len(fast.ledger()) == n and not fast.duplicates()
    assert max(per_batch(fast).values()) <= 6


def test_a_batch_left_open_by_an_earlier_run_counts_and_its_refusal_is_split(
    fast: Sandbox, store_path: Path
) -> None:
    """``submit`` leaves the whole job in one batch; the run that waits for it finds it
    refused (nothing else open), splits it under the stated limit and completes."""
    fast.configure(openai_enqueued_token_limit=8 * TOKENS, batch_validating_s=0.2)
    n = 20
    chain = chain_for(fast, "openai")
    job = batchain.submit(chain, [{"x": i + 10} for i in range(n)], store=store_path, poll_min=0.02)
    assert job.status == batchain.JobStatus.WAITING and len(job_batches(store_path)) == 1
    done = batchain.Job.open(job.id, store=store_path, chain=chain).wait(poll_max=0.1)
    assert_paid_once(fast, done, n)
    assert max(per_batch(fast).values()) <= 8
    assert done.stats["batches_refused"] >= 1 and done.stats["calls_requeued"] == 0


@pytest.mark.parametrize("option", ["max_open_batches", "max_enqueued_tokens"])
def test_caps_must_be_positive(sandbox: Sandbox, store_path: Path, option: str) -> None:
    with pytest.raises(batchain.InvalidOption, match=f"{option} must be a whole number of at least 1"):
        run_batch(chain_for(sandbox, "openai"), [{"x": 1}], store_path, **{option: 0})
    assert sandbox.ledger() == []


def test_batch_creates_refused_again_and_again_pause_the_job_and_a_resume_completes_it(
    fast: Sandbox, store_path: Path
) -> None:
    fast.configure(batch_create_429=1000)
    chain = chain_for(fast, "anthropic")
    job = run_batch(chain, [{"x": i + 10} for i in range(6)], store_path)
    assert job.status == batchain.JobStatus.PAUSED
    note = job.record.note or ""
    assert "anthropic claude-haiku-4-5" in note and "times in a row" in note and "resume" in note
    assert job.counts["failed"] == 0 and fast.ledger() == []
    fast.configure(batch_create_429=0)
    done = batchain.Job.open(job.id, store=store_path, chain=chain).resume(poll_min=0.02)
    assert_paid_once(fast, done, 6)
