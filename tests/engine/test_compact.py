"""Compacting finished jobs: what only a running job reads goes; results, the cost report,
usage and the cache stay exactly as they were. The sandbox ledger judges the cache: a later
job reuses the compacted job's answers and pays nothing."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.cli import run_cli
from batchain.cost.render import to_json
from batchain.sandbox import Sandbox
from batchain.store import SQLiteStore
from tests.engine.conftest import make_anthropic, make_openai

PROMPT = ChatPromptTemplate.from_template("Say something about {x}.")


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(list(args))
    return code, out.getvalue(), err.getvalue()


def _snapshot(job: batchain.Job) -> dict[str, Any]:
    """Everything compaction must leave exactly as it was: as kept for the finished job
    (``job_memo``) and as computed from its rows now."""
    kept = _read(job)
    store = job.store
    assert isinstance(store, SQLiteStore)
    store._memos = False
    try:
        assert _read(job) == kept
    finally:
        store._memos = True
    return kept


def _read(job: batchain.Job) -> dict[str, Any]:
    return {
        "results": [(r.index, r.status, r.input, r.output, r.error) for r in job.iter_results()],
        "report": to_json(job.report(per_item=True)),
        "usage": job.usage,
        "calls": job.call_stats,
        "counts": job.counts,
        "failures": job.store.job_failures(job.id),
        "batches": job.store.job_batches(job.id),
    }


def _rows(store: Path, sql: str, *params: Any) -> int:
    with sqlite3.connect(store) as con:
        return int(con.execute(sql, params).fetchone()[0])


def test_compaction_keeps_results_report_and_cache_exact(fast: Sandbox, store_path: Path) -> None:
    # two batch jobs in one store, on two providers
    inputs = [{"x": f"topic {i}"} for i in range(30)]
    chain = PROMPT | make_openai(fast) | StrOutputParser()
    job = batchain.run(chain, inputs, mode="batch", store=store_path, progress=False, poll_min=0.02)
    other = batchain.run(
        PROMPT | make_anthropic(fast) | StrOutputParser(),
        inputs[:10],
        mode="batch",
        store=store_path,
        progress=False,
        poll_min=0.02,
    )
    assert job.counts["succeeded"] == 30 and other.counts["succeeded"] == 10
    waits = "SELECT COUNT(*) FROM waits WHERE job_id=?"
    assert _rows(store_path, waits, job.id) == 30  # the bulk path noted each item's call
    # stores of earlier versions kept request bodies
    with sqlite3.connect(store_path) as con:
        con.execute("UPDATE calls SET request='{\"legacy\": 1}'")
    before, other_before = _snapshot(job), _snapshot(other)
    billed = len(fast.ledger())

    done = job.compact()

    assert (done.compacted, done.waits, done.requests) == (True, 30, 30)
    assert _rows(store_path, waits, job.id) == 0
    assert _rows(store_path, "SELECT COUNT(*) FROM calls WHERE request IS NOT NULL") == 10  # the other job's
    assert _snapshot(job) == before
    assert _snapshot(other) == other_before
    # the cache: a later job gets every answer from the compacted job, and pays nothing
    again = batchain.run(chain, inputs, mode="batch", store=store_path, progress=False, poll_min=0.02)
    assert again.outputs() == job.outputs()
    assert again.call_stats == {"cache": 30}
    assert len(fast.ledger()) == billed
    assert not fast.duplicates()


def test_only_finished_jobs_are_compacted(fast: Sandbox, store_path: Path) -> None:
    fast.configure(batch_processing_s=30.0)  # still at the provider while we look
    chain = PROMPT | make_openai(fast) | StrOutputParser()
    job = batchain.submit(chain, [{"x": i} for i in range(8)], store=store_path, poll_min=0.02)
    assert job.status == batchain.JobStatus.WAITING
    waits = "SELECT COUNT(*) FROM waits WHERE job_id=?"
    assert _rows(store_path, waits, job.id) == 8

    refused = job.compact()
    assert (refused.compacted, refused.status) == (False, "waiting")
    assert _rows(store_path, waits, job.id) == 8  # a resume still finds each item's call

    code, _, err = _cli("compact", job.id, "--store", str(store_path))
    assert code == 1
    assert f"{job.id}: not compacted: it is waiting" in err
    job.cancel()
    assert job.status == batchain.JobStatus.CANCELLED

    code, _, err = _cli("compact", "--store", str(store_path), "--vacuum")
    assert code == 0, err
    assert f"{job.id}: compacted (8 waits" in err
    assert "MB before" in err and "MB after" in err
    assert _rows(store_path, waits, job.id) == 0
    assert job.counts["cancelled"] == 8
    assert not fast.duplicates()


def test_compacting_an_unknown_job_is_a_usage_error(store_path: Path) -> None:
    SQLiteStore(store_path).close()
    code, _, err = _cli("compact", "nope", "--store", str(store_path))
    assert code == 2
    assert "no job 'nope'" in err
