"""A provider batch the provider no longer knows (issue 12, case 6): every wait has an end.

A batch the provider says it does not know (404) for ``lost_after`` seconds, in at least
three polls, is declared lost and its calls are sent again in a new batch; cancelling
treats such a batch as gone, and stops waiting for one it cannot reach; a job moved to a
new base URL leaves its batches at the old one as lost instead of ``submitted`` for good.
The sandbox ledger is the judge: every request billed once at each endpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

import batchain
from batchain.providers.fake import FakeChatModel, FakeProvider
from batchain.sandbox import Sandbox, SandboxConfig
from batchain.states import BatchStatus, CallStatus, ItemStatus, JobStatus
from batchain.store import SQLiteStore
from tests.cli.conftest import CHAIN, Cli
from tests.conftest import TEST_KEY
from tests.engine.conftest import make_anthropic, make_openai

pytestmark = pytest.mark.timeout(120)

PROMPT = ChatPromptTemplate.from_template("Say something about {x}.")
FAST = dict(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
#: the provider sits on a batch: nothing of it runs (or is billed) while a test looks
STALLED = dict(batch_validating_s=120.0)
#: bounded, and short for tests (the default is 10 minutes)
LOST_AFTER = 1.0
N = 8
INPUTS = [{"x": f"topic {i}"} for i in range(N)]
POLLING: dict[str, Any] = dict(poll_min=0.05, poll_max=0.2, lost_after=LOST_AFTER)


def chain_for(sb: Sandbox, provider: str = "openai", *, fast: bool = True) -> Any:
    model = make_openai(sb) if provider == "openai" else make_anthropic(sb)
    chain = PROMPT | model | StrOutputParser()
    # a step after the parser takes the chain off the bulk path: items are coroutines
    return chain if fast else chain | RunnableLambda(lambda text: text.strip())


def batches(job: batchain.Job) -> list[tuple[str, str | None]]:
    """The job's provider batches, in creation order: (status, provider id)."""
    return [(b.status, b.provider_batch_id) for b in job.store.job_batches(job.id)]


def assert_every_item_has_one_result(job: batchain.Job) -> None:
    results = job.results()
    assert [r.index for r in results] == list(range(N))
    assert all(r.status == ItemStatus.SUCCEEDED for r in results), job.errors()
    assert job.status == JobStatus.COMPLETED


def calls_left_open(job: batchain.Job) -> list[str]:
    """The job's calls still waiting on a provider batch (nothing may stay there)."""
    return job.store.calls_in_status(CallStatus.SUBMITTED, job.id)


def lost_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "declared lost" in r.getMessage()]


# -- (a) the provider forgets a submitted batch ----------------------------------------------


@pytest.mark.parametrize(
    ("provider", "fast"), [("openai", True), ("anthropic", True), ("openai", False)], ids=str
)
def test_a_batch_the_provider_forgot_is_declared_lost_and_its_calls_paid_once(
    sandbox: Sandbox, store_path: Path, caplog: pytest.LogCaptureFixture, provider: str, fast: bool
) -> None:
    sandbox.configure(**STALLED)
    job = batchain.submit(chain_for(sandbox, provider, fast=fast), INPUTS, store=store_path, **POLLING)
    [(status, forgotten)] = batches(job)
    assert status == BatchStatus.SUBMITTED
    assert sandbox.forget_batches() == [forgotten]
    sandbox.configure(**FAST)

    caplog.set_level(logging.INFO, logger="batchain.engine.batching")
    started = time.monotonic()
    job.wait()
    waited = time.monotonic() - started

    assert_every_item_has_one_result(job)
    assert waited >= LOST_AFTER  # one not-found right after a create is not enough
    assert waited < 60  # and the wait has an end (before: polled forever)
    assert [s for s, _ in batches(job)] == [BatchStatus.LOST, BatchStatus.COLLECTED]
    assert job.stats["batches_lost"] == 1
    assert not calls_left_open(job)
    assert any(forgotten in line for line in lost_warnings(caplog))
    # the judge: each request billed once, all in the batch that replaced the lost one
    ledger = sandbox.ledger()
    assert len(ledger) == N and not sandbox.duplicates()
    assert {e.batch_id for e in ledger} == {batches(job)[1][1]}
    assert {e.tier for e in ledger} == {"batch"}


def test_lost_is_declared_across_runs_that_poll_once_each(sandbox: Sandbox, store_path: Path) -> None:
    """``Job.poll()`` from a scheduler: every run polls once; the not-found streak is kept in the
    store, so the runs add up to the bound."""
    sandbox.configure(**STALLED)
    job = batchain.submit(chain_for(sandbox), INPUTS, store=store_path, **POLLING)
    sandbox.forget_batches()
    sandbox.configure(**FAST)
    deadline = time.monotonic() + 60
    while job.poll() != JobStatus.COMPLETED:
        assert time.monotonic() < deadline, f"still {job.status}: {batches(job)}"
        time.sleep(0.2)
    assert_every_item_has_one_result(job)
    assert [s for s, _ in batches(job)] == [BatchStatus.LOST, BatchStatus.COLLECTED]
    assert len(sandbox.ledger()) == N and not sandbox.duplicates()


def test_a_batch_unknown_for_a_moment_is_not_lost(store_path: Path) -> None:
    """A 404 just after a create can be the provider's eventual consistency: a batch that
    shows up again is collected, not declared lost, and nothing is sent twice."""
    provider = FakeProvider(batch_polls=100)
    chain = PROMPT | FakeChatModel(provider=provider) | StrOutputParser()
    # the time bound is passed at once: only the number of polls holds the batch
    prices = {"fake/fake-chat": {"input": 1.0, "output": 2.0}}
    job = batchain.submit(chain, INPUTS, store=store_path, poll_min=0.01, lost_after=0, prices=prices)
    [(_, provider_id)] = batches(job)
    assert provider_id is not None
    hidden = provider.batches.pop(provider_id)
    for polls in (1, 2):
        assert job.poll() == JobStatus.WAITING
        [record] = job.store.job_batches(job.id)
        assert (record.status, record.missing_polls) == (BatchStatus.SUBMITTED, polls)
    provider.batches[provider_id] = hidden
    hidden.polls_left = 0
    job.wait()
    assert_every_item_has_one_result(job)
    [record] = job.store.job_batches(job.id)
    assert (record.status, record.missing_polls, record.missing_since) == (BatchStatus.COLLECTED, 0, None)
    assert job.stats["batches_lost"] == 0
    assert len(provider.answered()) == N and not provider.duplicates()


# -- (b) cancel always finishes -----------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_cancel_finishes_when_the_provider_does_not_know_the_batch(
    sandbox: Sandbox, store_path: Path, provider: str
) -> None:
    sandbox.configure(**STALLED)
    job = batchain.submit(chain_for(sandbox, provider), INPUTS, store=store_path, **POLLING)
    sandbox.forget_batches()
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 30  # gone: no need to wait for lost_after
    assert job.status == JobStatus.CANCELLED
    assert job.counts["cancelled"] == N
    assert [s for s, _ in batches(job)] == [BatchStatus.LOST]
    assert not calls_left_open(job)
    assert sandbox.ledger() == []


def test_cancel_finishes_when_the_provider_cannot_be_reached(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = Sandbox(SandboxConfig(**STALLED)).start()
    try:
        job = batchain.submit(chain_for(gone), INPUTS, store=store_path, **POLLING)
    finally:
        gone.stop()  # the provider is down for good: every poll and cancel fails
    [(_, provider_id)] = batches(job)
    caplog.set_level(logging.INFO, logger="batchain.engine.batching")
    job.cancel()  # used to hang, polling forever
    assert job.status == JobStatus.CANCELLED
    assert job.counts["cancelled"] == N
    assert [s for s, _ in batches(job)] == [BatchStatus.LOST]
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"polling batch {provider_id}" in m for m in messages)  # failures name the batch
    assert any(provider_id in m and "may still run" in m for m in lost_warnings(caplog))


def test_batchain_cancel_finishes_when_the_provider_does_not_know_the_batch(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    store = tmp_path / "store.sqlite"
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))},
        "BATCHAIN_STORE": str(store),
        "OPENAI_BASE_URL": sandbox.openai_base_url,
        "OPENAI_API_KEY": TEST_KEY,
        "NO_COLOR": "1",
    }
    cli = Cli(env=env, cwd=tmp_path, store=store)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"headline": f"headline {i}"}) + "\n" for i in range(4)))
    sandbox.configure(**STALLED)
    submitted = cli("run", CHAIN, str(data), "--mode", "batch", "--detach", "--job-id", "job-lost")
    assert submitted.returncode == 0, submitted.stderr
    [forgotten] = sandbox.forget_batches()

    cancelled = cli("cancel", "job-lost", timeout=60)  # used to hang
    assert cancelled.returncode == 0, cancelled.stderr
    assert "4 items cancelled" in cancelled.stderr
    assert forgotten in cancelled.stderr and "declared lost" in cancelled.stderr
    with SQLiteStore(store) as st:
        assert [b.status for b in st.job_batches("job-lost")] == [BatchStatus.LOST]
    assert sandbox.ledger() == []


# -- (c) the job waited on against a new base URL -----------------------------------------------


@pytest.fixture
def new_endpoint() -> Iterator[Sandbox]:
    """A second provider endpoint: the job's model moves there (a new base URL)."""
    with Sandbox(SandboxConfig(**FAST)) as sb:
        yield sb


@pytest.mark.parametrize("fast", [True, False], ids=["bulk-path", "item-coroutines"])
def test_a_job_moved_to_a_new_base_url_leaves_no_call_submitted_and_pays_once_at_each(
    sandbox: Sandbox,
    new_endpoint: Sandbox,
    store_path: Path,
    caplog: pytest.LogCaptureFixture,
    fast: bool,
) -> None:
    # the old endpoint runs its batch in a while: after the job has moved, or (on a slow
    # machine) before, which changes nothing: the moved job no longer waits for it
    sandbox.configure(batch_validating_s=2.0)
    job = batchain.submit(chain_for(sandbox, fast=fast), INPUTS, store=store_path, **POLLING)
    [(_, old_batch)] = batches(job)
    assert old_batch is not None

    caplog.set_level(logging.INFO, logger="batchain.engine.batching")
    moved = batchain.Job.open(job.id, store=store_path, chain=chain_for(new_endpoint, fast=fast))
    started = time.monotonic()
    moved.wait()
    assert time.monotonic() - started < 60

    assert_every_item_has_one_result(moved)
    # the key includes the base URL: the calls were made at the new endpoint, and the batch
    # at the old one, which no model of the job reaches any more, is lost, not submitted
    assert [s for s, _ in batches(moved)] == [BatchStatus.LOST, BatchStatus.COLLECTED]
    assert moved.stats["batches_lost"] == 1
    assert not calls_left_open(moved)
    assert any(old_batch in line and sandbox.openai_base_url in line for line in lost_warnings(caplog))
    new_ledger = new_endpoint.ledger()
    assert len(new_ledger) == N and not new_endpoint.duplicates()
    # the old endpoint still runs its batch: it bills it there, once
    deadline = time.monotonic() + 30
    while len(sandbox.ledger()) < N and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sandbox.ledger()) == N and not sandbox.duplicates()
    assert {e.batch_id for e in sandbox.ledger()} == {old_batch}


def test_the_old_endpoint_forgotten_too(sandbox: Sandbox, new_endpoint: Sandbox, store_path: Path) -> None:
    """The sandbox restarted on a new port: the old batches are gone and the job finishes
    at the new one, paying once."""
    sandbox.configure(**STALLED)
    job = batchain.submit(chain_for(sandbox), INPUTS, store=store_path, **POLLING)
    sandbox.forget_batches()
    moved = batchain.Job.open(job.id, store=store_path, chain=chain_for(new_endpoint))
    moved.wait()
    assert_every_item_has_one_result(moved)
    assert not calls_left_open(moved)
    assert sandbox.ledger() == []
    assert len(new_endpoint.ledger()) == N and not new_endpoint.duplicates()


def test_a_key_the_provider_refuses_while_polling_pauses_the_job(sandbox: Sandbox, store_path: Path) -> None:
    """A 401 or 403 while polling cannot end by waiting: the job pauses at once, saying so
    (and never printing the key); with a good key a resume collects the same batch."""
    sandbox.configure(batch_validating_s=1.0)
    job = batchain.submit(chain_for(sandbox), INPUTS, store=store_path, **POLLING)
    [(_, provider_id)] = batches(job)
    bad = make_openai(sandbox, api_key="invalid-key-for-the-test-0123")
    refused = batchain.Job.open(job.id, store=store_path, chain=PROMPT | bad | StrOutputParser())
    started = time.monotonic()
    refused.wait()
    assert refused.status == JobStatus.PAUSED
    assert time.monotonic() - started < 30
    note = refused.record.note or ""
    assert "HTTP 401" in note and str(provider_id) in note and "resume" in note, note
    assert "invalid-key-for-the-test-0123" not in note
    assert not sandbox.duplicates()
    good = batchain.Job.open(job.id, store=store_path, chain=chain_for(sandbox))
    good.wait()
    assert_every_item_has_one_result(good)
    assert [s for s, _ in batches(good)] == [BatchStatus.COLLECTED]
    assert len(sandbox.ledger()) == N and not sandbox.duplicates()
