"""Several processes on one realtime job's items (:mod:`batchain.engine.claims`): the job's
runner and helpers take chunks of items, each item ends with one result, and a helper that
lost its seat writes nothing more while its chunks are run by the others."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.engine.lifecycle import JobLifecycle, RunControl
from batchain.errors import InvalidOption, LeaseLost
from batchain.sandbox import Sandbox
from batchain.states import JobStatus
from batchain.store import JobRecord, open_store
from batchain.store.claims import is_lease_holder
from tests import preloaded
from tests.engine.conftest import make_openai

N = 400
CONCURRENCY = 4


def _chain(sandbox: Sandbox) -> Any:
    return ChatPromptTemplate.from_template("Tag note {id}") | make_openai(sandbox) | StrOutputParser()


def _helpers(store: str | Path, job_id: str) -> list[str]:
    """The seats of helpers holding chunks (not the lease holder's)."""
    with open_store(store) as st:
        return [r.runner for r in st.job_runners(job_id) if not is_lease_holder(r.runner) and r.chunks]


async def _until(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
    return found


def test_a_helper_runs_chunks_of_a_job_another_run_holds(sandbox: Sandbox, any_store: str | Path) -> None:
    sandbox.configure(latency_ms=20)
    chain = _chain(sandbox)
    job = batchain.submit(
        chain, [{"id": i} for i in range(N)], store=any_store, mode="realtime", max_concurrency=CONCURRENCY
    )

    async def both() -> int:
        runner = asyncio.create_task(
            batchain.Job.open(job.id, store=any_store, chain=chain).aresume(progress=False)
        )
        await _until(
            lambda: batchain.Job.open(job.id, store=any_store).status == JobStatus.RUNNING, "the run"
        )
        helped = await batchain.Job.open(job.id, store=any_store, chain=chain).aassist()
        await runner
        return helped

    helped = asyncio.run(both())
    done = batchain.Job.open(job.id, store=any_store)
    assert done.status == JobStatus.COMPLETED and done.counts["succeeded"] == N
    assert 0 < helped < N, helped  # both ran chunks of it
    assert sum(done.record.stats["runners"].values()) == N
    assert [r.output for r in done.results()][:3] and all(r.output for r in done.results())
    ledger = sandbox.ledger()
    assert len(ledger) == N and not sandbox.duplicates(), "a request was billed twice"
    with open_store(any_store) as st:
        assert st.job_runners(job.id) == []  # every seat and chunk given back


def test_a_helper_that_lost_its_seat_writes_nothing_and_the_runner_finishes(
    sandbox: Sandbox, any_store: str | Path
) -> None:
    """A helper stalled past its seat (freed by another process, as a lapsed one is): its
    next write is refused and it stops; the runner takes its chunks and runs the items
    without a result. Only calls it had on the wire may be billed twice."""
    sandbox.configure(latency_ms=20)
    chain = _chain(sandbox)
    job = batchain.submit(
        chain, [{"id": i} for i in range(N)], store=any_store, mode="realtime", max_concurrency=CONCURRENCY
    )

    async def both() -> BaseException | None:
        runner = asyncio.create_task(
            batchain.Job.open(job.id, store=any_store, chain=chain).aresume(progress=False)
        )
        await _until(
            lambda: batchain.Job.open(job.id, store=any_store).status == JobStatus.RUNNING, "the run"
        )
        helper = asyncio.create_task(batchain.Job.open(job.id, store=any_store, chain=chain).aassist())
        seat = (await _until(lambda: _helpers(any_store, job.id), "a helper's chunk"))[0]
        with open_store(any_store) as st:  # what another process does to a seat that lapsed
            st._write("DELETE FROM job_runners WHERE runner=?", (seat,))  # type: ignore[attr-defined]
            st.commit()
        lost = None
        try:
            await helper
        except LeaseLost as exc:
            lost = exc
        await runner
        return lost

    lost = asyncio.run(both())
    assert lost is not None and "seat among the job's runners" in str(lost)
    done = batchain.Job.open(job.id, store=any_store)
    assert done.status == JobStatus.COMPLETED and done.counts["succeeded"] == N
    ledger = sandbox.ledger()
    twice = sum(k - 1 for k in sandbox.duplicates().values())
    assert twice <= CONCURRENCY, f"{twice} billed twice: more than the helper had on the wire"
    assert len(ledger) == N + twice


def test_items_read_from_the_inputs_are_the_readers(sandbox: Sandbox, any_store: str | Path) -> None:
    """A run reading its inputs holds the chunks it reads: a helper finds nothing to take
    (the items are not stored before it), and nothing runs twice."""
    sandbox.configure(latency_ms=5)
    chain = _chain(sandbox)

    async def inputs() -> Any:
        for i in range(N):
            if i % 50 == 0:
                await asyncio.sleep(0.05)
            yield {"id": i}

    async def both() -> int:
        runner = asyncio.create_task(
            batchain.arun(chain, inputs(), store=any_store, job_id="read", progress=False, max_concurrency=4)
        )
        await _until(lambda: _has_items(any_store, "read"), "the first items")
        helped = await batchain.Job.open("read", store=any_store, chain=chain).aassist()
        await runner
        return helped

    assert asyncio.run(both()) == 0
    done = batchain.Job.open("read", store=any_store)
    assert done.status == JobStatus.COMPLETED and done.counts["succeeded"] == N
    assert len(sandbox.ledger()) == N and not sandbox.duplicates()


def _has_items(store: str | Path, job_id: str) -> bool:
    with open_store(store) as st:
        return st.get_job(job_id) is not None and sum(st.item_counts(job_id).values()) > 0


def test_a_batch_job_is_not_shared(sandbox: Sandbox, any_store: str | Path) -> None:
    chain = _chain(sandbox)
    job = batchain.submit(chain, [{"id": 1}], store=any_store)
    with pytest.raises(InvalidOption, match="batch mode sends its calls through provider batches"):
        batchain.Job.open(job.id, store=any_store, chain=chain).assist()
    budget = batchain.submit(chain, [{"id": 1}], store=any_store, mode="realtime", budget=1.0)
    with pytest.raises(InvalidOption, match="budget"):
        batchain.Job.open(budget.id, store=any_store, chain=chain).assist()


def test_a_helpers_count_noted_while_the_holder_leaves_is_kept(any_store: str | Path) -> None:
    """The lease holder's stats are made before it leaves; a helper that notes its items in
    between keeps them (the holder once wrote back runners read before the helper's note)."""
    with open_store(any_store) as st:
        now = time.time()
        st.create_job(JobRecord("j", JobStatus.CREATED, "realtime", now, now))
        st.record_job_stats("j", {"sent": 1}, runner="earlier:1", items=5)
        st.commit()
        holder = JobLifecycle(st, "j")
        holder.enter()
        before = st.get_job("j")
        assert before is not None
        stale = {**before.stats, "sent": 9}  # read before the helper's note, as _stats() is
        JobLifecycle(st, "j").note_items("helper:2", 7)
        holder.leave(RunControl(), stale, "holder:3", 11)
        job = st.get_job("j")
        assert job is not None
        assert job.stats["runners"] == {"earlier:1": 5, "helper:2": 7, "holder:3": 11}
        assert job.stats["sent"] == 9  # the rest of the stats are the holder's


_NOTER = """
import sys, time
from pathlib import Path
from batchain.store import open_store

where, me, go, rounds = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
with open_store(where) as st:
    while not go.exists():
        time.sleep(0.001)
    for n in range(rounds):
        # half like a helper leaving (stats kept), half like a holder (stats replaced)
        st.record_job_stats("j", {"by": me} if n % 2 else None, runner=me, items=1)
        st.commit()
"""


def test_processes_noting_their_items_together_lose_no_count(any_store: str | Path, tmp_path: Path) -> None:
    """Every count added by processes writing the job's stats at once is kept: the read and
    the write are one step under the store's write lock, on both backends."""
    with open_store(any_store) as st:
        now = time.time()
        st.create_job(JobRecord("j", JobStatus.CREATED, "realtime", now, now))
        st.commit()
    script, go, rounds = tmp_path / "noter.py", tmp_path / "go", 40
    script.write_text(_NOTER)
    children = [preloaded.popen([script, str(any_store), f"p{me}", go, str(rounds)]) for me in range(3)]
    go.touch()
    assert [c.wait(120) for c in children] == [0, 0, 0], [c.communicate() for c in children]
    with open_store(any_store) as st:
        job = st.get_job("j")
        assert job is not None and job.stats["runners"] == {f"p{me}": rounds for me in range(3)}
