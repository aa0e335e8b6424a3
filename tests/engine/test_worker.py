"""``batchain.work``: a worker runs a store's queued and unfinished jobs to their end."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.sandbox import Sandbox
from batchain.states import JobStatus
from tests.engine.conftest import make_openai

CHAIN = f"{Path(__file__).parent / 'crash' / 'chain_for_crash.py'}:chain"


def test_realtime_jobs_are_queued_then_run_by_a_worker(
    sandbox: Sandbox, any_store: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """submit() in realtime mode stores the inputs and runs nothing; a worker runs every
    queued job (three, two at a time), each call billed once."""
    monkeypatch.setenv("CRASH_OPENAI_BASE_URL", sandbox.openai_base_url)
    monkeypatch.setenv("CRASH_PROVIDER", "openai")
    queued = [
        batchain.submit(CHAIN, [{"n": 100 * k + i} for i in range(20)], store=any_store, mode="realtime")
        for k in range(3)
    ]
    assert all(j.status == JobStatus.CREATED and j.counts["pending"] == 20 for j in queued)
    assert sandbox.ledger() == []  # nothing ran
    report = batchain.work(any_store, concurrency=2, poll_interval=0.05, until_idle=True)
    assert report.ended == {j.id: JobStatus.COMPLETED for j in queued} and report.passed_over == {}
    for job in queued:
        done = batchain.Job.open(job.id, store=any_store)
        assert done.counts["succeeded"] == 20 and done.results()[3].output["summary"]
    ledger = sandbox.ledger()
    assert len(ledger) == 3 * 20 * 2 and not sandbox.duplicates()  # two calls an item
    assert {e.tier for e in ledger} == {"realtime"}


def test_a_job_started_from_python_with_a_chain_object_is_passed_over(
    sandbox: Sandbox, any_store: str | Path
) -> None:
    chain = ChatPromptTemplate.from_template("Say {x}") | make_openai(sandbox) | StrOutputParser()
    job = batchain.submit(chain, [{"x": 1}], store=any_store, mode="realtime")
    report = batchain.work(any_store, poll_interval=0.05, until_idle=True)
    assert report.ended == {} and "no chain reference recorded" in report.passed_over[job.id]
    assert sandbox.ledger() == []  # passed over: nothing sent
    # given its chain, it runs
    assert (
        batchain.Job.open(job.id, store=any_store, chain=chain).wait(progress=False).counts["succeeded"] == 1
    )
    assert len(sandbox.ledger()) == 1 and not sandbox.duplicates()


@pytest.mark.parametrize("role", ["runner", "helper"])
def test_a_worker_that_lost_a_jobs_lease_goes_on_working(
    sandbox: Sandbox, any_store: str | Path, monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    """A worker whose run of a job stalled past its lease, or whose help with another
    process's job stalled past its seat (another process took over), does not die: it says
    so, and looks at the job again later, as at a busy one."""
    monkeypatch.setenv("CRASH_OPENAI_BASE_URL", sandbox.openai_base_url)
    monkeypatch.setenv("CRASH_PROVIDER", "openai")
    job = batchain.submit(CHAIN, [{"n": i} for i in range(10)], store=any_store, mode="realtime")
    resume, lost = batchain.Job.aresume, []

    async def stalled_once(self: batchain.Job, *args: object, **kwargs: object) -> batchain.Job:
        if not lost:
            if role == "helper":
                raise batchain.JobBusy(f"job {self.id} is being run by another process")
            lost.append(self.id)
            raise batchain.LeaseLost(f"job {self.id}: another process took over its lease")
        return await resume(self, *args, **kwargs)  # type: ignore[arg-type]

    async def helper_stalled(self: batchain.Job, **kwargs: object) -> int:
        lost.append(self.id)
        raise batchain.LeaseLost(f"job {self.id}: another process took over its seat")

    monkeypatch.setattr(batchain.Job, "aresume", stalled_once)
    monkeypatch.setattr(batchain.Job, "aassist", helper_stalled)
    report = batchain.work(any_store, poll_interval=0.05, until_idle=True)
    assert lost == [job.id] and report.ended == {job.id: JobStatus.COMPLETED}
    assert batchain.Job.open(job.id, store=any_store).counts["succeeded"] == 10
    assert len(sandbox.ledger()) == 10 * 2 and not sandbox.duplicates()
