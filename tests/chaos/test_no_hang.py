"""Every wait has an end (issue 12, case 5): sync lambdas that call a model in batch mode,
more of them than there are threads, finish instead of deadlocking."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.runnables import RunnableLambda

import batchain
from batchain.sandbox import Sandbox
from tests.engine.conftest import make_openai


@pytest.mark.timeout(120)
def test_sync_lambdas_calling_a_model_outnumbering_the_threads_finish(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    gpt = make_openai(sandbox)

    def describe(row: dict[str, int]) -> str:
        return str(gpt.invoke(f"Describe thing {row['n']}").content)

    rows = [{"n": i} for i in range(12)]
    job = batchain.run(
        RunnableLambda(describe), rows, mode="batch", threads=4, store=tmp_path / "s.sqlite", progress=False
    )
    assert job.counts["succeeded"] == 12
    assert len(sandbox.ledger()) == 12 and {e.tier for e in sandbox.ledger()} == {"batch"}
    assert not sandbox.duplicates()
    assert job.stats["rounds"] >= 3  # four threads: a round of at most four calls at a time


@pytest.mark.timeout(120)
def test_sync_lambdas_calling_a_model_in_realtime_outnumbering_the_threads_finish(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Every thread waits on a model call whose request needs the loop's executor (the
    SDK's first request asks for the platform in a thread): that work must not queue
    behind the sync steps (it did, and the run hung)."""
    gpt = make_openai(sandbox)

    def describe(row: dict[str, int]) -> str:
        return str(gpt.invoke(f"Describe thing {row['n']}").content)

    rows = [{"n": i} for i in range(24)]
    job = batchain.run(RunnableLambda(describe), rows, threads=4, store=tmp_path / "s.sqlite", progress=False)
    assert job.counts["succeeded"] == 24
    assert len(sandbox.ledger()) == 24 and not sandbox.duplicates()
