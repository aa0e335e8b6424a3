"""Reconciling a lost Anthropic create (issue 12, case 4), with the sandbox ledger as judge.

Anthropic batches carry no metadata: after a crash between the create and recording its
id, the batch could only be matched by its size, so another job's batch of the same size
was adopted (and cancelled by ``Job.cancel()``), or ours was taken for absent and sent
again. Now every custom id carries the batch's nonce, and a batch found after a lost
create answer is adopted only once its results carry our custom ids."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain import _json
from batchain.providers.anthropic import AnthropicBatchAPI
from batchain.providers.base import BatchIntent, Identification, ProviderBatch
from batchain.providers.fake import FakeAdapter, FakeBatchAPI, FakeChatModel, FakeProvider
from batchain.providers.registry import register_adapter, unregister_adapter
from batchain.sandbox import Sandbox
from tests import preloaded

CRASH = Path(__file__).parent.parent / "engine" / "crash"
N = 100
FAST = dict(batch_validating_s=0.02, batch_processing_s=0.3, batch_finalizing_s=0.02)
pytestmark = pytest.mark.timeout(240)


def _child(sb: Sandbox, store: Path, job_id: str, action: str, failpoint: str = "") -> preloaded.Child:
    env = dict(
        os.environ,
        CRASH_OPENAI_BASE_URL=sb.openai_base_url,
        CRASH_ANTHROPIC_BASE_URL=sb.anthropic_base_url,
        CRASH_PROVIDER="anthropic",
    )
    env.pop("BATCHAIN_FAILPOINT", None)
    if failpoint:
        env["BATCHAIN_FAILPOINT"] = failpoint
    args = [str(CRASH / "run_job.py"), str(store), job_id, str(N), action, f"{CRASH / 'bulk_chain.py'}:chain"]
    return preloaded.popen(
        [*args, "batch"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _crash(sb: Sandbox, store: Path, job_id: str, failpoint: str, action: str = "start") -> None:
    proc = _child(sb, store, job_id, action, failpoint)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]


def _run(sb: Sandbox, store: Path, job_id: str, action: str) -> str:
    proc = _child(sb, store, job_id, action)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    return err


def _client(sb: Sandbox) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sb.anthropic_base_url, api_key="sk-test-other", max_retries=0)


def _other_jobs_batch(sb: Sandbox, **headers: str) -> str:
    """Another job's batch of our size, named the way batchain names its requests."""
    nonce = "bc_" + secrets.token_hex(8)
    requests: list[Any] = [
        {
            "custom_id": f"{nonce}-{hashlib.sha256(str(i).encode()).hexdigest()[:44]}",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Other job's item {i}"}],
            },
        }
        for i in range(N)
    ]
    with _client(sb) as client:
        return client.messages.batches.create(requests=requests, extra_headers=headers).id


def _other_batch(sb: Sandbox, batch_id: str) -> Any:
    with _client(sb) as client:
        return client.messages.batches.retrieve(batch_id)


def _wait_ended(sb: Sandbox, batch_id: str) -> None:
    deadline = time.monotonic() + 60
    while _other_batch(sb, batch_id).processing_status != "ended":
        assert time.monotonic() < deadline, f"batch {batch_id} did not end"
        time.sleep(0.05)


def _batches(store: Path, job_id: str) -> list[tuple[str, str | None]]:
    con = sqlite3.connect(store)
    try:
        sql = "SELECT status, provider_batch_id FROM provider_batches WHERE job_id=? ORDER BY created_at"
        return [(r[0], r[1]) for r in con.execute(sql, (job_id,))]
    finally:
        con.close()


def _by_batch(sb: Sandbox) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for e in sb.ledger():
        counts[e.batch_id] = counts.get(e.batch_id, 0) + 1
    return counts


def _assert_finished(store: Path, job_id: str) -> batchain.Job:
    job = batchain.Job.open(job_id, store=store)
    assert job.status == batchain.JobStatus.COMPLETED
    results = job.results()
    assert [r.index for r in results] == list(range(N))
    # each item got its own answer: none of the other job's
    assert all(r.ok and r.output.endswith(f"Summarise item {r.index}") for r in results)
    return job


def test_a_lost_create_is_adopted_by_its_nonce_not_another_jobs_batch_of_its_size(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.configure(**FAST)
    store = tmp_path / "a.sqlite"
    other = _other_jobs_batch(sandbox)
    _crash(sandbox, store, "job-a", "batch_after_create:anthropic")
    (intent,) = _batches(store, "job-a")
    assert intent == ("creating", None)  # the create reached the provider, its id was lost

    _run(sandbox, store, "job-a", "resume")
    job = _assert_finished(store, "job-a")
    # billed once each: our batch and the other job's, nothing sent again
    assert not sandbox.duplicates(), "a request was billed twice"
    assert len(sandbox.ledger()) == 2 * N
    ((status, ours),) = _batches(store, "job-a")
    assert status == "collected" and ours not in (None, other)
    assert _by_batch(sandbox) == {ours: N, other: N}
    assert job.stats["batches_reconciled"] == 1
    uid_prefixes = {(e.custom_id or "").split("-")[0] for e in sandbox.ledger() if e.batch_id == ours}
    assert len(uid_prefixes) == 1  # every request of our batch carries its nonce
    # the other job's batch ran untouched
    counts = _other_batch(sandbox, other).request_counts
    assert (counts.succeeded, counts.canceled) == (N, 0)


def test_a_create_that_never_happened_is_sent_once_and_another_jobs_batch_is_not_adopted(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.configure(**FAST)
    store = tmp_path / "b.sqlite"
    other = _other_jobs_batch(sandbox)
    _crash(sandbox, store, "job-b", "batch_before_create")
    assert _batches(store, "job-b") == [("creating", None)]

    _run(sandbox, store, "job-b", "resume")
    job = _assert_finished(store, "job-b")
    claimed = [pid for _, pid in _batches(store, "job-b")]
    assert other not in claimed, "another job's batch was adopted"
    assert not sandbox.duplicates(), "a request was billed twice"
    abandoned, collected = _batches(store, "job-b")
    assert abandoned == ("abandoned", None)
    assert collected[0] == "collected" and collected[1] not in (None, other)
    assert _by_batch(sandbox) == {collected[1]: N, other: N}  # ours sent exactly once
    assert job.stats["batches_reconciled"] == 0
    counts = _other_batch(sandbox, other).request_counts
    assert (counts.succeeded, counts.canceled) == (N, 0)


def test_cancel_while_verifying_never_cancels_another_jobs_batch(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(**FAST)
    store = tmp_path / "c.sqlite"
    # the other job's batch runs for minutes: it is still a candidate when we cancel
    other = _other_jobs_batch(sandbox, **{"x-sandbox-batch-processing-s": "600"})
    _crash(sandbox, store, "job-c", "batch_before_create")

    err = _run(sandbox, store, "job-c", "cancel")
    batch = _other_batch(sandbox, other)
    assert batch.processing_status == "in_progress" and batch.cancel_initiated_at is None
    assert "not cancelled at the provider" in err  # and the log says why
    job = batchain.Job.open("job-c", store=store)
    assert job.status == batchain.JobStatus.CANCELLED
    assert job.counts["cancelled"] == N
    # our intent is neither adopted nor abandoned: no batch of ours was created or sent
    assert _batches(store, "job-c") == [("creating", None)]
    assert set(_by_batch(sandbox)) <= {other}


def test_a_second_crash_while_verifying_is_safe(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(**FAST)
    store = tmp_path / "d.sqlite"
    _crash(sandbox, store, "job-d", "batch_after_create:anthropic")
    other = _other_jobs_batch(sandbox)  # newer than ours: it is checked first
    _wait_ended(sandbox, other)  # a candidate still running is passed over, not ruled out
    # the resume dies right after ruling the other job's batch out, before checking ours
    _crash(sandbox, store, "job-d", "batch_ruled_out", action="resume")
    assert _batches(store, "job-d") == [("creating", None)]  # nothing decided is lost

    _run(sandbox, store, "job-d", "resume")
    _assert_finished(store, "job-d")
    assert not sandbox.duplicates(), "a request was billed twice"
    ((status, ours),) = _batches(store, "job-d")
    assert status == "collected" and ours not in (None, other)
    assert _by_batch(sandbox) == {ours: N, other: N}


# -- a create whose answer is lost, on a provider whose batches carry no metadata ----------------


class NamelessBatchAPI(FakeBatchAPI):
    """The fake provider's batches as Anthropic's are: found by size and time alone, and
    told apart only by the nonce their custom ids carry."""

    identification = Identification.RESULTS

    def custom_id(self, nonce: str, key: str) -> str:
        return AnthropicBatchAPI().custom_id(nonce, key)

    async def find_created(self, client: Any, intent: BatchIntent) -> list[ProviderBatch]:
        provider: FakeProvider = client
        return [
            ProviderBatch(b.id, b.created_at, len(b.entries))
            for b in reversed(list(provider.batches.values()))
            if len(b.entries) == intent.n_requests
            and b.id not in intent.taken
            and intent.created_after - 5 <= b.created_at <= intent.created_before
        ]


class NamelessModel(FakeChatModel):
    pass


class NamelessAdapter(FakeAdapter):
    def __init__(self) -> None:
        super().__init__("nameless")
        self.nameless = NamelessBatchAPI()

    def batch_api(self) -> NamelessBatchAPI:
        return self.nameless


@pytest.fixture
def nameless() -> Iterator[FakeProvider]:
    register_adapter(NamelessModel, NamelessAdapter())
    try:
        yield FakeProvider(batch_polls=2)
    finally:
        unregister_adapter(NamelessModel)


def test_a_lost_create_answer_adopts_ours_among_same_size_batches(
    nameless: FakeProvider, tmp_path: Path
) -> None:
    rows = [{"x": i} for i in range(10)]
    lines = [_json.dumps({"custom_id": f"bc_0000000000000000-{i}", "body": {"n": i}}).encode() for i in rows]
    other = nameless.create_batch("bc_0000000000000000", "other-job", lines)
    other.polls_left = 0  # it has ended when ours is verified: ruled out by its results
    nameless.lose_create_answers = 1  # ours is created, but the answer is lost
    chain = ChatPromptTemplate.from_template("say {x}") | NamelessModel(provider=nameless) | StrOutputParser()
    job = batchain.run(
        chain,
        rows,
        mode="batch",
        store=tmp_path / "e.sqlite",
        progress=False,
        poll_min=0.01,
        poll_max=0.05,
        prices={"nameless/fake-chat": {"input": 1.0, "output": 2.0}},
    )
    assert job.outputs() == [f"say {i}" for i in range(10)]
    assert len(nameless.batches) == 2  # ours was never created again
    assert nameless.duplicates() == {}
    assert other.status == "ended"  # its results were read, it was never cancelled
    assert job.stats["batches_reconciled"] == 1
