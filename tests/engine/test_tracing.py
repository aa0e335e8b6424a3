"""Tracing however it is switched on: a context manager (``collect_runs``, and any hook
registered with langchain-core's ``register_configure_hook``, as LangSmith's
``tracing_v2_enabled`` is) sees every item's run, in every mode, on every path, also when
``run()`` is called from inside a running event loop (a notebook)."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from pathlib import Path

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers.context import collect_runs, register_configure_hook
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler

import batchain
from batchain.sandbox import Sandbox
from tests.engine.conftest import accounted, billed, make_openai

#: a tracer switched on by a context variable, as a LangSmith-style integration does
_tracer_var: ContextVar[RunCollectorCallbackHandler | None] = ContextVar("test_tracer", default=None)
register_configure_hook(_tracer_var, inheritable=True)


def chain(sandbox: Sandbox) -> object:
    return ChatPromptTemplate.from_template("Trace {x}") | make_openai(sandbox) | StrOutputParser()


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_collect_runs_sees_every_item(sandbox: Sandbox, store_path: Path, mode: str) -> None:
    sb = sandbox
    items = [{"x": f"{mode} {i}"} for i in range(5)]
    with collect_runs() as runs:
        job = batchain.run(chain(sb), items, mode=mode, store=store_path, progress=False, poll_min=0.05)
    assert job.counts["succeeded"] == 5
    top = [r for r in runs.traced_runs if r.parent_run_id is None]
    assert len(top) == 5, job.stats.get("fast_path")
    assert sorted((r.outputs or {})["output"] for r in top) == sorted(job.outputs())
    assert str(job.stats["fast_path"]).startswith("off: tracing is on")
    assert sum(billed(sb).values()) == 5 and not sb.duplicates()
    assert accounted(job) == billed(sb)


def test_a_configure_hook_tracer_sees_runs_from_inside_a_running_loop(
    sandbox: Sandbox, store_path: Path
) -> None:
    sb = sandbox
    tracer = RunCollectorCallbackHandler()

    async def notebook_cell() -> batchain.Job:
        # run() from a coroutine goes through a thread of its own: the context must follow
        return batchain.run(chain(sb), [{"x": i} for i in range(3)], store=store_path, progress=False)

    token = _tracer_var.set(tracer)
    try:
        job = asyncio.run(notebook_cell())
    finally:
        _tracer_var.reset(token)
    assert job.counts["succeeded"] == 3
    assert len([r for r in tracer.traced_runs if r.parent_run_id is None]) == 3
    assert accounted(job) == billed(sb) and not sb.duplicates()


def test_without_a_tracer_the_fast_path_stays_on(sandbox: Sandbox, store_path: Path) -> None:
    sb = sandbox
    job = batchain.run(chain(sb), [{"x": "plain"}], store=store_path, progress=False)
    assert job.stats["fast_path"] == "on"


def test_collect_runs_sees_the_items_of_as_completed(sandbox: Sandbox, store_path: Path) -> None:
    # as_completed runs its job on a loop in a thread of its own, even from plain sync code
    with collect_runs() as runs:
        got = list(batchain.as_completed(chain(sandbox), [{"x": i} for i in range(3)], store=store_path))
    assert len(got) == 3
    assert len([r for r in runs.traced_runs if r.parent_run_id is None]) == 3
    assert sum(billed(sandbox).values()) == 3 and not sandbox.duplicates()
