"""Batch progress: items done of all, provider batches by status, requests done, and the
expected finish, from what the provider reports (and "unknown" until it reports some)."""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import replace
from pathlib import Path

import openai
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.cli import run_cli
from batchain.engine.forecast import JobProgress, expected_finish, finish_text, progress_text
from batchain.sandbox import Sandbox
from batchain.store.records import BatchRecord
from tests.conftest import TEST_KEY
from tests.engine.conftest import make_openai

T0 = 1_800_000_000.0


def _batch(status: str, created: float, **kw: object) -> BatchRecord:
    fields: dict[str, object] = dict(
        id=f"bc_{created}",
        job_id="j",
        provider="openai",
        lane="openai|u|m",
        status=status,
        provider_batch_id="batch_x",
        n_calls=100,
        created_at=created,
        updated_at=created,
        info={},
    )
    fields.update(kw)
    return BatchRecord(**fields)  # type: ignore[arg-type]


def test_no_basis_no_estimate() -> None:
    waiting = _batch("submitted", T0, provider_status="validating", total=0, seen_at=T0 + 5)
    assert expected_finish([waiting], T0 + 10) is None
    assert expected_finish([_batch("collected", T0, total=100, updated_at=T0 + 60)], T0 + 100) is None


def test_a_batch_goes_on_at_its_pace() -> None:
    # a quarter done 100 s after its creation: the rest takes 300 s more
    b = _batch("submitted", T0, provider_status="in_progress", done=25, total=100, seen_at=T0 + 100)
    assert expected_finish([b], T0 + 100) == T0 + 400
    # never before now, even when it is late
    assert expected_finish([b], T0 + 1000) == T0 + 1000
    # all done, or ended: now (it is being collected)
    full = replace(b, done=100, provider_status="finalizing")
    assert expected_finish([full], T0 + 150) == T0 + 150
    assert expected_finish([replace(b, status="ended")], T0 + 150) == T0 + 150


def test_a_batch_not_started_takes_as_long_as_the_longest_known() -> None:
    going = _batch("submitted", T0, provider_status="in_progress", done=50, total=100, seen_at=T0 + 100)
    queued = _batch("submitted", T0 + 50, provider_status="validating", seen_at=T0 + 100)
    # going: 200 s in all; queued: assumed 200 s from its creation
    assert expected_finish([going, queued], T0 + 100) == T0 + 250
    # a collected batch of an earlier round is a basis too: it took 500 s
    earlier = _batch("collected", T0 - 1000, total=10, updated_at=T0 - 500)
    assert expected_finish([earlier, queued], T0 + 100) == T0 + 550
    # lost or abandoned batches are no basis and wait for nothing
    lost = _batch("lost", T0 - 1000, total=10, updated_at=T0 - 100)
    assert expected_finish([lost, queued], T0 + 100) is None


def test_the_text_says_what_is_known() -> None:
    p = JobProgress(
        items_done=120,
        items_total=400,
        inputs_complete=True,
        batches={"in progress": 3, "validating": 1, "collected": 12},
        requests_done=900,
        requests_total=4000,
        expected_finish=T0 + 720,
        open_batches=4,
    )
    rows = dict(progress_text(p, T0))
    assert rows["items"] == "120/400 done"
    assert rows["batches"] == (
        "3 in progress, 1 validating, 12 collected (900/4,000 requests done at the provider)"
    )
    assert rows["finish"].endswith("(in 12 min), for the batches at the provider now")
    unknown = replace(p, expected_finish=None, inputs_complete=False)
    assert finish_text(unknown, T0) == "unknown (no batch has reported progress yet)"
    done = replace(p, batches={"collected": 16}, open_batches=0, requests_total=0)
    assert [label for label, _ in progress_text(done, T0)] == ["items", "batches"]


def _status(store: Path, job_id: str) -> tuple[dict[str, str], dict[str, object]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        run_cli(["status", job_id, "--store", str(store)])
    rows = {}
    for line in out.getvalue().splitlines():
        label, _, text = line.strip().partition(" ")
        rows[label] = text.strip()
    data = io.StringIO()
    with contextlib.redirect_stdout(data), contextlib.redirect_stderr(io.StringIO()):
        run_cli(["status", job_id, "--store", str(store), "--json"])
    return rows, json.loads(data.getvalue())["progress"]


def test_status_shows_batches_and_the_expected_finish(sandbox: Sandbox, store_path: Path) -> None:
    # validating for a while, then the 40 requests finish one after another over a minute
    sandbox.configure(batch_validating_s=4.0, batch_processing_s=60.0, batch_finalizing_s=0.01)
    chain = ChatPromptTemplate.from_template("Hi {x}") | make_openai(sandbox) | StrOutputParser()
    job = batchain.submit(chain, [{"x": i} for i in range(40)], store=store_path, poll_min=0.02)

    p = job.progress()
    assert (p.items_done, p.items_total, p.open_batches, p.expected_finish) == (0, 40, 1, None)
    rows, data = _status(store_path, job.id)
    assert rows["finish"] == "unknown (no batch has reported progress yet)"
    assert data["expected_finish"] is None and data["items_total"] == 40

    # once the provider reports some requests done, a poll records it and the finish is known
    (batch,) = job.store.job_batches(job.id)
    client = openai.OpenAI(base_url=sandbox.openai_base_url, api_key=TEST_KEY)
    deadline = time.monotonic() + 30
    while client.batches.retrieve(batch.provider_batch_id).request_counts.completed == 0:  # type: ignore[arg-type,union-attr]
        assert time.monotonic() < deadline, "the sandbox batch never started"
        time.sleep(0.2)
    assert job.poll() == batchain.JobStatus.WAITING

    p = job.progress()
    assert p.batches == {"in progress": 1}
    assert p.requests_total == 40 and 0 < p.requests_done < 40
    assert p.expected_finish is not None and p.expected_finish > batch.created_at
    rows, data = _status(store_path, job.id)
    assert rows["batches"] == f"1 in progress ({p.requests_done}/40 requests done at the provider)"
    assert rows["finish"].endswith("for the batches at the provider now")
    assert data["batches"] == {"in progress": 1} and data["expected_finish"] == p.expected_finish

    job.cancel()
    p = job.progress()
    assert (p.items_done, p.items_total, p.open_batches, p.expected_finish) == (40, 40, 0, None)
    rows, _ = _status(store_path, job.id)
    assert "finish" not in rows
    assert not sandbox.duplicates()
