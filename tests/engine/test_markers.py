"""An answer is delivered unmarked (paid, to a ``CostTracker``) exactly once per item and
call that item paid for: the first time it reaches the item's chain, in whatever run.
Every later delivery of it is marked ``replay``. So a tracker attached to a batch-mode run
whose items leave the window, or the trackers of a job's runs together, count what the
sandbox's ledger billed: nothing free that was paid, nothing paid twice."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.output_parsers import BaseOutputParser, StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

import batchain
from batchain.cost import CostTracker
from batchain.options import Tier
from batchain.sandbox import Sandbox
from batchain.store import SQLiteStore
from batchain.store.sqlite import SCHEMA_VERSION
from tests.engine.conftest import Sources, make_openai, run_job
from tests.engine.test_any_size import one_stage, three_stages


def told_rows(store: Path, job_id: str) -> int:
    con = sqlite3.connect(store)
    try:
        return int(con.execute("SELECT COUNT(*) FROM told WHERE job_id=?", (job_id,)).fetchone()[0])
    finally:
        con.close()


def test_evicted_items_count_their_own_answers_as_paid_once(fast: Sandbox, store_path: Path) -> None:
    """One stage, a window of 3: most items leave it while their calls are at the provider
    and come back to their own answers, which they have never seen: paid, unmarked."""
    sources, tracker = Sources(), CostTracker(tier=Tier.BATCH)
    job = run_job(
        one_stage(fast), [{"x": i} for i in range(12)], store_path, mode="batch", window=3,
        config={"callbacks": [sources, tracker]},
    )  # fmt: skip
    assert job.counts["succeeded"] == 12
    assert job.stats["items_left_window"] >= 6 and job.stats["items_fed_again"] > 0
    assert len(fast.ledger()) == 12 and not fast.duplicates()
    assert sources.seen == [None] * 12
    assert tracker.requests == 12 and tracker.cache_hits == 0
    assert tracker.complete and tracker.total_cost == job.report().paid > 0
    assert told_rows(store_path, job.id) == 12


def test_three_stages_replay_earlier_stages_marked(fast: Sandbox, store_path: Path) -> None:
    """Three stages, a tiny window: an item fed again after stage 2 replays stage 1's answer
    a second time. Only the first delivery of each call is paid; the rest say ``replay``."""
    # batches that outlast the window's turn: on a loaded machine a 70 ms batch was collected
    # before some items left the window, so fewer were fed again
    fast.configure(batch_processing_s=0.3)
    sources, tracker = Sources(), CostTracker(tier=Tier.BATCH)
    n = 10
    job = run_job(
        three_stages(fast), [{"x": f"topic {i}"} for i in range(n)], store_path, mode="batch", window=3,
        config={"callbacks": [sources, tracker]},
    )  # fmt: skip
    assert job.counts["succeeded"] == n
    assert job.stats["items_fed_again"] > n
    assert len(fast.ledger()) == 3 * n and not fast.duplicates()
    counts = Counter(sources.seen)
    assert counts[None] == 3 * n  # every call once, unmarked
    assert counts["replay"] > 0 and set(counts) == {None, "replay"}
    assert tracker.requests == 3 * n and tracker.cache_hits == counts["replay"]
    assert tracker.complete and tracker.total_cost == job.report().paid > 0


def test_a_tracker_told_no_tier_prices_each_answer_at_its_calls_tier(fast: Sandbox, store_path: Path) -> None:
    """Inside a job each paid answer tells callbacks its call's tier: a ``CostTracker``
    given none prices an auto-mode job that sends half its items realtime and half in a
    batch exactly as the report does (a tier given to it would be right for half only)."""
    tracker, sources = CostTracker(), Sources()
    rows = [{"x": f"topic {i}", "u": "high" if i % 2 else "low"} for i in range(8)]
    job = run_job(
        three_stages(fast), rows, store_path, mode="auto", priority_field="u", window=3,
        config={"callbacks": [tracker, sources]},
    )  # fmt: skip
    assert job.counts["succeeded"] == 8
    tiers = Counter(e.tier for e in fast.ledger())
    assert tiers == Counter({"realtime": 12, "batch": 12}) and not fast.duplicates()
    assert tracker.requests == 24 and tracker.cache_hits == Counter(sources.seen)["replay"]
    assert tracker.complete and tracker.total_cost == job.report().paid > 0
    # the note wins over a tier given: a tracker told realtime prices batch answers as batch
    as_realtime = CostTracker(tier=Tier.REALTIME)
    job = run_job(
        one_stage(fast), [{"x": "once more"}], store_path.with_name("b.sqlite"), mode="batch",
        config={"callbacks": [as_realtime]},
    )  # fmt: skip
    assert as_realtime.requests == 1 and as_realtime.total_cost == job.report().paid > 0
    assert len(fast.ledger()) == 25 and not fast.duplicates()


def test_duplicates_in_batch_mode_are_paid_once(fast: Sandbox, store_path: Path) -> None:
    """Identical items share one call: the item that paid for it is told it unmarked, the
    other ``shared`` or ``replay``, whether or not they left the window meanwhile."""
    sources, tracker = Sources(), CostTracker(tier=Tier.BATCH)
    rows = [{"x": f"topic {i % 5}"} for i in range(10)]
    job = run_job(
        one_stage(fast), rows, store_path, mode="batch", window=2, config={"callbacks": [sources, tracker]}
    )
    assert job.counts["succeeded"] == 10
    assert len(fast.ledger()) == 5 and not fast.duplicates()
    counts = Counter(sources.seen)
    assert counts[None] == 5 and counts["shared"] + counts["replay"] == 5
    assert tracker.requests == 5 and tracker.total_cost == job.report().paid > 0


def two_stages(sb: Sandbox, fail: list[bool] | set[str]) -> Any:
    """Two calls an item; between them a step that fails while ``fail`` holds True (a
    list), or for the items whose ``x`` it holds (a set)."""

    def gate(d: dict[str, Any]) -> dict[str, Any]:
        down = d["x"] in fail if isinstance(fail, set) else bool(fail and fail[0])
        if down:
            raise RuntimeError("stage two is down")
        return d

    first = ChatPromptTemplate.from_template("Outline {x}") | make_openai(sb) | StrOutputParser()
    second = (
        ChatPromptTemplate.from_template("Draft {outline}") | make_openai(sb, "gpt-4o") | StrOutputParser()
    )
    return (
        RunnablePassthrough.assign(outline=first)
        | RunnableLambda(gate)
        | RunnablePassthrough.assign(draft=second)
    )


def test_a_retry_in_a_new_run_counts_each_call_once(sandbox: Sandbox, store_path: Path) -> None:
    """A realtime job whose second stage fails: its first run paid (and told) stage one.
    The retry, with a tracker of its own, replays stage one marked and pays stage two:
    the two trackers together are the ledger."""
    fail = [True]
    first, second = CostTracker(), CostTracker()
    sources = Sources()
    inputs = [{"x": f"topic {i}"} for i in range(6)]
    job = run_job(two_stages(sandbox, fail), inputs, store_path, config={"callbacks": [first]})
    assert job.counts["failed"] == 6 and first.requests == 6
    fail[0] = False
    job = batchain.Job.open(job.id, store=store_path, chain=two_stages(sandbox, fail))
    job.retry(progress=False, config={"callbacks": [second, sources]})
    assert job.counts["succeeded"] == 6
    assert Counter(sources.seen) == Counter({"replay": 6, None: 6})
    assert len(sandbox.ledger()) == 12 and not sandbox.duplicates()
    assert first.requests + second.requests == 12
    assert first.total_cost + second.total_cost == job.report().paid > 0


def test_answers_first_delivered_by_a_later_run_are_paid_there(fast: Sandbox, store_path: Path) -> None:
    """``submit`` parks every call and returns before any answer: the run that waits for
    them (another process, in effect) is the first to deliver them, so its tracker counts
    them paid; a second wait replays nothing, as the job is done."""
    fast.configure(batch_processing_s=0.3)
    submitting, waiting = CostTracker(tier=Tier.BATCH), CostTracker(tier=Tier.BATCH)
    chain = one_stage(fast)
    job = batchain.submit(
        chain, [{"x": i} for i in range(8)], store=store_path, poll_min=0.02, window=3,
        config={"callbacks": [submitting]},
    )  # fmt: skip
    resumed = batchain.Job.open(job.id, store=store_path, chain=one_stage(fast))
    resumed.wait(progress=False, poll_min=0.02, config={"callbacks": [waiting]})
    assert resumed.counts["succeeded"] == 8
    assert len(fast.ledger()) == 8 and not fast.duplicates()
    assert submitting.requests + waiting.requests == 8
    assert submitting.total_cost + waiting.total_cost == resumed.report().paid > 0


def test_compaction_drops_told_rows(fast: Sandbox, store_path: Path) -> None:
    job = run_job(
        one_stage(fast), [{"x": i} for i in range(4)], store_path, mode="batch", window=1,
        config={"callbacks": [CostTracker(tier=Tier.BATCH)]},
    )  # fmt: skip
    assert told_rows(store_path, job.id) == 4
    done = job.compact()
    assert done.compacted and done.told == 4
    assert told_rows(store_path, job.id) == 0
    assert len(fast.ledger()) == 4 and not fast.duplicates()


def test_compaction_keeps_the_told_rows_a_retry_reads(sandbox: Sandbox, store_path: Path) -> None:
    """Compaction drops the told rows of succeeded items (never fed again) and keeps a
    failed item's: the retry after it replays the failed items' paid stage one marked, so
    the trackers of the two runs together are still the ledger."""
    down = {"topic 1", "topic 3"}
    first, second, sources = CostTracker(), CostTracker(), Sources()
    inputs = [{"x": f"topic {i}"} for i in range(4)]
    job = run_job(two_stages(sandbox, down), inputs, store_path, config={"callbacks": [first]})
    assert (job.counts["succeeded"], job.counts["failed"]) == (2, 2)
    assert told_rows(store_path, job.id) == 2 * 2 + 2 * 1  # both stages told; stage one only
    done = job.compact()
    assert done.compacted and done.told == 4
    assert told_rows(store_path, job.id) == 2
    down.clear()
    job = batchain.Job.open(job.id, store=store_path, chain=two_stages(sandbox, down))
    job.retry(progress=False, config={"callbacks": [second, sources]})
    assert job.counts["succeeded"] == 4
    assert Counter(sources.seen) == Counter({"replay": 2, None: 2})
    assert len(sandbox.ledger()) == 8 and not sandbox.duplicates()
    assert (first.requests, second.requests) == (6, 2)
    assert first.total_cost + second.total_cost == job.report().paid > 0


def test_a_bulk_row_whose_parser_fails_is_told(fast: Sandbox, store_path: Path) -> None:
    """The bulk path notes a told answer only for a row that fails (a succeeded row is
    never fed again): its retry replays the answer marked."""
    chain = ChatPromptTemplate.from_template("Say {x}") | make_openai(fast) | Rejecting()
    job = run_job(chain, [{"x": i} for i in range(5)], store_path, mode="batch")
    assert job.stats["bulk_path"] == "on" and job.counts["failed"] == 5
    assert told_rows(store_path, job.id) == 5
    sources = Sources()
    job.retry(progress=False, poll_min=0.02, config={"callbacks": [sources]})
    assert sources.seen == ["replay"] * 5
    assert len(fast.ledger()) == 5 and not fast.duplicates()


class Rejecting(BaseOutputParser[str]):
    """An output parser that rejects every answer."""

    def parse(self, text: str) -> str:
        raise OutputParserException("not this answer")


def test_a_schema_3_store_without_told_gets_it_on_open(store_path: Path) -> None:
    with SQLiteStore(store_path):
        pass
    con = sqlite3.connect(store_path)
    con.execute("DROP TABLE told")  # as a store of the build before this table
    con.commit()
    con.close()
    with SQLiteStore(store_path) as store:
        assert store.first_deliveries("j", [(0, "k")]) == set()
    con = sqlite3.connect(store_path)
    try:
        assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert con.execute("SELECT COUNT(*) FROM told").fetchone() == (0,)
    finally:
        con.close()
