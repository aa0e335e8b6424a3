"""Detached batch jobs prime Anthropic's prompt cache too (issue 15), judged by the sandbox
ledger: ``submit`` sends the primer and leaves; a later run, in a fresh ``Job.open`` or
another process (killed halfway, even), sends the calls it held marked, once. And a
budget reserves what a marked call may cost: writing its prompt to the cache."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.cost.prices import PriceBook
from batchain.engine.budget import Budget
from batchain.engine.calls import build_request
from batchain.sandbox import LedgerEntry, Sandbox
from tests import preloaded
from tests.engine.conftest import make_anthropic
from tests.engine.test_prompt_cache import MODEL, PRICES, batches, priced

CRASH = Path(__file__).parent / "crash"
#: every item shares its ~6,600-token system prompt (claude-haiku-4-5 caches from 4,096)
CHAIN = f"{CRASH / 'cached_chain.py'}:chain"
N = 12


@pytest.fixture
def quick(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    monkeypatch.setenv("CRASH_ANTHROPIC_BASE_URL", sandbox.anthropic_base_url)
    return sandbox


def prefixes(path: Path) -> list[tuple[str, str]]:
    """The job's prompt prefixes as the store keeps them: (status, priming batch)."""
    with sqlite3.connect(path) as con:
        return [(r[0], r[1]) for r in con.execute("SELECT status, batch_id FROM prompt_prefixes")]


def submit(path: Path, job_id: str) -> batchain.Job:
    items = [{"n": i} for i in range(N)]
    return batchain.submit(CHAIN, items, store=path, job_id=job_id, prices=PRICES, poll_min=0.02)


def assert_primed_once(sb: Sandbox, job: batchain.Job) -> None:
    """One write, by a batch of its own that ran first; every other call read it; nothing
    billed twice; the job's cost is the ledger's."""
    ledger = sb.ledger()
    assert job.status.value == "completed" and len(ledger) == N and not sb.duplicates()
    writes = [e for e in ledger if e.cache_creation_tokens]
    reads = [e for e in ledger if e.cached_tokens]
    assert len(writes) == 1 and writes[0].cache_write_1h_tokens == writes[0].cache_creation_tokens
    assert len(reads) == N - 1 and {e.cached_tokens for e in reads} == {writes[0].cache_creation_tokens}
    assert batches(ledger)[str(writes[0].batch_id)] == writes
    assert max(e.ts for e in writes) < min(e.ts for e in reads)
    assert job.report().paid == sum(map(priced, ledger))
    assert job.counts["succeeded"] == N


def test_a_submitted_job_primes_and_a_fresh_open_sends_the_rest_marked(
    quick: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "detached.sqlite"
    job = submit(path, "detached")
    # submit left once the primer was at the provider: the rest wait for a later run
    rows = prefixes(path)
    assert len(rows) == 1 and rows[0][0] == "priming"
    with sqlite3.connect(path) as con:
        sizes = [r[0] for r in con.execute("SELECT n_calls FROM provider_batches")]
    assert sizes == [1] and job.status.value == "waiting"

    again = batchain.Job.open(job.id, store=path)
    again.wait(progress=False)
    assert_primed_once(quick, again)
    assert prefixes(path) == [("written", rows[0][1])]


def test_polls_send_the_held_calls_once_the_priming_batch_ended(quick: Sandbox, tmp_path: Path) -> None:
    path = tmp_path / "polled.sqlite"
    job = submit(path, "polled")
    for _ in range(200):  # each poll a fresh handle, as `batchain poll` in a new process
        job = batchain.Job.open("polled", store=path)
        if job.poll(progress=False).value == "completed":
            break
        time.sleep(0.02)
    assert_primed_once(quick, job)


def _resume_in_child(
    sb: Sandbox, path: Path, job_id: str, failpoint: str
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CRASH_ANTHROPIC_BASE_URL=sb.anthropic_base_url, BATCHAIN_FAILPOINT=failpoint)
    args = [str(CRASH / "run_job.py"), str(path), job_id, str(N), "resume", CHAIN, "batch"]
    return preloaded.run(args, env=env, text=True, timeout=120)


@pytest.mark.timeout(180)
def test_a_run_killed_after_the_priming_batch_ended_leaves_nothing_to_send_twice(
    quick: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "killed.sqlite"
    submit(path, "killed")
    # another process collects the priming batch, then dies before sending the calls it held
    child = _resume_in_child(quick, path, "killed", "prompt_cache_released")
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert len(quick.ledger()) == 1 and prefixes(path)[0][0] == "written"

    job = batchain.Job.open("killed", store=path)
    job.wait(progress=False)
    assert_primed_once(quick, job)


#: ~4.3 characters a token (4,900 tokens): writing it to the cache (2x input) costs more
#: than the budget's unmarked worst case (2.5 bytes a token at 1x input)
DENSE = "Be brief and cite one source. " * 700
DENSE_PROMPT = ChatPromptTemplate.from_messages([("system", DENSE), ("human", "Item {n}: summarize it")])


def _worst_cases(model: Any) -> tuple[Decimal, Decimal]:
    """What the budget reserves for one call of the dense chain: unmarked, and marked."""
    messages = DENSE_PROMPT.invoke({"n": 0}).to_messages()
    _, request = build_request(model, messages, None, {}, "")
    budget = Budget(Decimal(1), Decimal(0), PriceBook(PRICES))
    return budget.worst_case(request, "batch"), budget.worst_case(request, "batch", cache_write=True)


def ledger_cost(entries: list[LedgerEntry]) -> Decimal:
    return sum(map(priced, entries), Decimal(0))


def test_a_budget_reserves_the_cache_write_a_primer_may_pay(quick: Sandbox, tmp_path: Path) -> None:
    model = make_anthropic(quick, MODEL, max_tokens=64)
    chain = DENSE_PROMPT | model | StrOutputParser()
    unmarked, marked = _worst_cases(model)
    # fits an unmarked call's worst case (and a rounding), not a marked one's
    budget = unmarked + Decimal("0.000001")
    assert marked > budget
    path = tmp_path / "budget.sqlite"
    items: list[Any] = [{"n": i} for i in range(N)]
    kw: dict[str, Any] = dict(mode="batch", prices=PRICES, poll_min=0.02, progress=False)
    job = batchain.run(chain, items, store=path, budget=float(budget), **kw)
    assert ledger_cost(quick.ledger()) <= budget
    assert job.status.value == "paused" and "budget exhausted" in (job.record.note or "")

    # with room for the primer's write and the reads, it primes, and stays within the budget
    more = marked * N
    job.resume(items, budget=float(more), **kw)
    assert_primed_once(quick, job)
    assert ledger_cost(quick.ledger()) <= more
    assert job.store.job_spent(job.id) == ledger_cost(quick.ledger())
