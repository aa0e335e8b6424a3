"""Batch mode at any size: a round is not bounded by the run's window. Items whose calls
are at a provider leave the window and come back, replaying from the store, when their
batch ends; so every call of a stage is at the provider at once, and nothing is paid twice
or lost on the way. These tests use a window far smaller than the dataset to force it."""

from __future__ import annotations

import collections
import itertools
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

import batchain
from batchain.sandbox import Sandbox
from batchain.store import SQLiteStore
from batchain.store.records import BatchRecord
from tests.engine.conftest import make_anthropic, make_openai
from tests.engine.test_accounting import PRICES, priced
from tests.engine.test_batch import run_batch


def one_stage(sb: Sandbox) -> Any:
    return ChatPromptTemplate.from_template("Say something about {x}.") | make_openai(sb) | StrOutputParser()


def three_stages(sb: Sandbox) -> Any:
    """Three stages on three models of two providers (a stage's batches are its model's),
    through the ordinary path: coroutines, a lambda, a parallel step."""
    outline = ChatPromptTemplate.from_template("Outline {x}") | make_openai(sb) | StrOutputParser()
    draft = ChatPromptTemplate.from_template("Draft {outline}") | make_anthropic(sb) | StrOutputParser()
    review = (
        ChatPromptTemplate.from_template("Review {draft}") | make_openai(sb, "gpt-4o") | StrOutputParser()
    )
    return (
        RunnablePassthrough.assign(outline=outline)
        | RunnableLambda(lambda d: {**d, "outline": d["outline"].strip()})
        | RunnablePassthrough.assign(draft=draft)
        | RunnableParallel(review=review, x=lambda d: d["x"])
    )


def staged(sb: Sandbox) -> Any:
    """The same three models as stages of one sequence, each stage's text the next one's
    input: the bulk path, rows replayed from the store stage by stage."""
    text = StrOutputParser()
    return (
        ChatPromptTemplate.from_template("Outline {x}")
        | make_openai(sb)
        | text
        | ChatPromptTemplate.from_template("Draft {outline}")
        | make_anthropic(sb)
        | text
        | ChatPromptTemplate.from_template("Review {draft}")
        | make_openai(sb, "gpt-4o")
        | text
    )


SHAPES = {"one_stage": one_stage, "three_stages": three_stages, "staged": staged}


def batches(store: Path) -> list[BatchRecord]:
    with SQLiteStore(store) as st:
        (job,) = st.list_jobs()
        return st.job_batches(job.id)


def check_stages_overlap(sb: Sandbox, store: Path, models: list[str]) -> None:
    """Each stage's batches were all at the provider before any of them ended: the stage
    went out as one round, not window after window."""
    ended: dict[str, float] = collections.defaultdict(float)
    for e in sb.ledger():
        assert e.batch_id is not None
        ended[e.batch_id] = max(ended[e.batch_id], e.ts)
    by_model: dict[str, list[BatchRecord]] = collections.defaultdict(list)
    for b in batches(store):
        by_model[b.info["model"]].append(b)
    assert sorted(by_model) == sorted(models)
    for model, members in by_model.items():
        assert len(members) >= 3, f"{model}: the window should have split the stage"
        last_created = max(b.created_at for b in members)
        first_end = min(ended[b.provider_batch_id or ""] for b in members)
        assert last_created < first_end, f"{model}: a batch was created after another one ended"


def test_one_stage_goes_out_at_once_on_the_bulk_path(sandbox: Sandbox, store_path: Path) -> None:
    # long enough that a loaded machine still creates every batch of a stage before one ends
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=2.0, batch_finalizing_s=0.01)
    inputs = [{"x": f"topic {i}"} for i in range(120)]
    job = run_batch(one_stage(sandbox), inputs, store_path, poll_min=0.05, window=25)
    assert job.stats["bulk_path"] == "on"
    assert job.counts["succeeded"] == 120
    # rows out of the window end from their batch's answers, not fed again to replay; the
    # last rounds stay (two windows: one is lent while the round before it uploads)
    assert job.stats["items_left_window"] >= 120 - 2 * 25
    assert job.stats["items_finished_out_of_window"] == job.stats["items_left_window"]
    assert job.stats["items_fed_again"] == 0
    check_stages_overlap(sandbox, store_path, ["gpt-4o-mini"])
    assert len(sandbox.ledger()) == 120 and not sandbox.duplicates()
    realtime = batchain.run(one_stage(sandbox), inputs, store=store_path, progress=False, cache=False)
    assert job.outputs() == realtime.outputs()


@pytest.mark.parametrize("shape", ["three_stages", "staged"])
def test_three_stages_go_out_as_three_rounds(sandbox: Sandbox, store_path: Path, shape: str) -> None:
    # long enough that a loaded machine still creates every batch of a stage before one ends
    # (2 s was not, on a slow machine under CI: off the bulk path, a later stage's items come
    # back through the window one by one, each replaying the stages before it from the
    # store, and the third stage's 5 batches were created over 2.4 s with nothing else
    # running; 8 s leaves room for a machine twice as loaded)
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=8.0, batch_finalizing_s=0.01)
    inputs = [{"x": f"topic {i}"} for i in range(60)]
    job = run_batch(SHAPES[shape](sandbox), inputs, store_path, poll_min=0.05, window=12)
    assert job.counts["succeeded"] == 60
    assert job.stats["bulk_path"].startswith("on: 3 stages" if shape == "staged" else "off:")
    # items out of the window come back to replay their chains up to the next call
    assert job.stats["items_fed_again"] == job.stats["items_left_window"] >= 48 * 3
    assert job.stats["items_finished_out_of_window"] == 0
    check_stages_overlap(sandbox, store_path, ["gpt-4o-mini", "claude-haiku-4-5", "gpt-4o"])
    assert len(sandbox.ledger()) == 180 and not sandbox.duplicates()
    realtime = batchain.run(SHAPES[shape](sandbox), inputs, store=store_path, progress=False, cache=False)
    assert job.outputs() == realtime.outputs()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_cost_and_links_stay_exact_when_items_leave_the_window(
    fast: Sandbox, store_path: Path, shape: str
) -> None:
    chain = SHAPES[shape](fast)
    # 20% duplicates: shared calls, and items whose calls were answered while they were out
    rows = [{"x": f"story {i % 32}"} for i in range(40)]
    job = run_batch(chain, rows, store_path, window=6, prices=PRICES)
    assert job.counts["succeeded"] == 40
    ledger = fast.ledger()
    assert not fast.duplicates() and {e.tier for e in ledger} == {"batch"}
    con = sqlite3.connect(store_path)
    cost = dict(con.execute("SELECT request_hash, cost FROM calls WHERE status = 'succeeded'").fetchall())
    assert len(cost) == len(ledger)  # every billed request is one stored call, and back
    for e in ledger:  # priced here independently (gpt-4o has no rate in this test's table)
        assert e.model == "gpt-4o" or Decimal(cost[e.request_hash]) == priced(e)
    assert job.cost == sum(Decimal(c) for c in cost.values()) == job.report().paid
    # every billed call is one paid call of the job, linked to the item it was made for;
    # each duplicate item reuses each of its calls once (shared in flight, or replayed),
    # and an item that came back replaying its own paid calls adds no link
    stages = 1 if shape == "one_stage" else 3
    links = con.execute(
        "SELECT j.item_idx, j.source, COUNT(*) FROM job_calls j JOIN calls c ON c.key = j.key"
        " WHERE c.status = 'succeeded' GROUP BY 1, 2"
    ).fetchall()
    per_item = collections.Counter()
    for idx, _, n in links:
        per_item[idx] += n
    assert set(per_item.values()) == {stages}
    assert sum(n for _, source, n in links if source == "paid") == len(ledger) == 32 * stages
    assert sum(n for idx, source, n in links if source != "paid") == 8 * stages
    assert job.call_stats["paid"] == len(ledger)


def test_failures_and_retries_reach_items_that_left_the_window(fast: Sandbox, store_path: Path) -> None:
    inputs = [{"x": "[[flaky:1]] a"}, {"x": "[[fail:400]] b"}, {"x": "c"}, {"x": "d"}]
    job = run_batch(one_stage(fast), inputs, store_path, window=1)
    assert [r.status.value for r in job.results()] == ["succeeded", "failed", "succeeded", "succeeded"]
    err = job.errors()[0].error
    assert err is not None and err["type"] == "BatchCallError" and "openai" in err["message"]
    assert job.stats["calls_requeued"] == 1
    assert len(fast.ledger()) == 3 and not fast.duplicates()  # the failed call is not sent again


@pytest.mark.parametrize("shape", ["three_stages", "staged"])
def test_random_errors_and_dropped_results_with_a_tiny_window(
    fast: Sandbox, store_path: Path, shape: str
) -> None:
    fast.configure(batch_item_error_rate=0.2, batch_drop_rate=0.2)
    inputs = [{"x": i} for i in range(30)]
    job = run_batch(SHAPES[shape](fast), inputs, store_path, window=4, max_retries=12)
    assert job.counts["succeeded"] == 30
    assert not fast.duplicates() and len(fast.ledger()) == 90
    fast.configure(batch_item_error_rate=0.0, batch_drop_rate=0.0)
    again = batchain.run(SHAPES[shape](fast), inputs, store=store_path, progress=False, cache=False)
    assert job.outputs() == again.outputs()  # never shifted onto the wrong item


def test_submit_puts_every_input_at_the_provider(fast: Sandbox, store_path: Path) -> None:
    fast.configure(batch_processing_s=0.5)
    job = batchain.submit(
        one_stage(fast), ({"x": i} for i in range(25)), store=store_path, poll_min=0.02, window=10
    )
    assert job.status == batchain.JobStatus.WAITING
    assert sum(b.n_calls for b in batches(store_path)) == 25  # not only the first window's
    again = batchain.Job.open(job.id, store=store_path, chain=one_stage(fast))
    again.wait()
    assert again.counts["succeeded"] == 25
    assert len(fast.ledger()) == 25 and not fast.duplicates()
    # every item waited on a batch the resumed run took as a whole: each ends from its
    # batch's answers; none is read, built and replayed again
    assert again.stats["items_finished_out_of_window"] == 25
    assert again.stats["items_fed_again"] == 0 and again.stats["paid"] == 25


@pytest.mark.parametrize("shape", ["three_stages", "staged"])
def test_poll_advances_every_item_of_a_stage(fast: Sandbox, store_path: Path, shape: str) -> None:
    fast.configure(batch_processing_s=0.2)
    chain = SHAPES[shape](fast)
    job = batchain.submit(chain, [{"x": i} for i in range(20)], store=store_path, poll_min=0.02, window=5)
    reopened = batchain.Job.open(job.id, store=store_path, chain=chain)
    for _ in range(300):
        if reopened.poll() == batchain.JobStatus.COMPLETED:
            break
    assert reopened.counts["succeeded"] == 20
    assert len(fast.ledger()) == 60 and not fast.duplicates()


@pytest.mark.parametrize("shape", ["three_stages", "staged"])
def test_a_crash_between_rounds_resumes_without_paying_twice(
    fast: Sandbox, store_path: Path, shape: str
) -> None:
    """Items out of the window are only rows in the store: a new process finds them there."""
    fast.configure(batch_processing_s=0.3)
    chain = SHAPES[shape](fast)
    job = batchain.submit(chain, [{"x": i} for i in range(30)], store=store_path, poll_min=0.02, window=4)
    # a different process would open the job from the store alone: so does this one
    resumed = batchain.Job.open(job.id, store=store_path, chain=SHAPES[shape](fast))
    resumed.wait()
    assert resumed.counts["succeeded"] == 30
    assert len(fast.ledger()) == 90 and not fast.duplicates()
    hashes = collections.Counter(e.request_hash for e in fast.ledger())
    assert max(hashes.values()) == 1


@pytest.mark.parametrize("shape", list(SHAPES))
def test_items_come_back_while_inputs_are_still_read(fast: Sandbox, store_path: Path, shape: str) -> None:
    """Batches end while the feeder still reads inputs: returning items and new ones share
    the window's places, and none holds a place without being parked (that would hang)."""
    chain = SHAPES[shape](fast)
    inputs = [{"x": i} for i in range(40)]
    job = run_batch(chain, inputs, store_path, poll_min=0.01, window=2)
    assert job.counts["succeeded"] == 40
    stages = 1 if shape == "one_stage" else 3
    assert len(fast.ledger()) == 40 * stages and not fast.duplicates()


def test_batches_note_that_their_calls_were_linked_when_parked(fast: Sandbox, store_path: Path) -> None:
    """A batch notes in its info that its calls were linked to their items when parked, so
    collecting it writes no links. One an older build left, without the note, has its
    answered calls linked as they are collected: once each, whoever collects."""
    fast.configure(batch_processing_s=0.3)
    for name, older in (("a.sqlite", False), ("b.sqlite", True)):
        store = store_path.with_name(name)
        rows = [{"x": f"{name} {i}"} for i in range(12)]
        job = batchain.submit(one_stage(fast), rows, store=store, poll_min=0.02)
        con = sqlite3.connect(store)
        assert [json.loads(i)["linked"] for (i,) in con.execute("SELECT info FROM provider_batches")] == [
            "at park"
        ]
        if older:
            with con:
                con.execute("UPDATE provider_batches SET info = json_remove(info, '$.linked')")
        again = batchain.Job.open(job.id, store=store, chain=one_stage(fast))
        again.wait()
        assert again.counts["succeeded"] == 12
        links = con.execute("SELECT item_idx, source FROM job_calls ORDER BY item_idx").fetchall()
        assert links == [(i, "paid") for i in range(12)]
        assert again.call_stats["paid"] == 12
    assert len(fast.ledger()) == 24 and not fast.duplicates()


def test_a_job_collects_garbage_less_often_and_restores_the_collector(store_path: Path) -> None:
    """While a job runs, the cyclic collector leaves the objects from before it alone and
    waits for more new objects between passes (a many-item job otherwise spends a third of
    its CPU collecting); afterwards the program's own settings are back."""
    import gc

    before = gc.get_threshold()
    seen: list[tuple[tuple[int, int, int], int]] = []

    def look(x: int) -> int:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        return x

    job = batchain.run(RunnableLambda(look), [1, 2, 3], store=store_path, mode="realtime", progress=False)
    assert job.outputs() == [1, 2, 3]
    assert all(t[0] >= 200_000 and t[2] >= 100 and frozen > 0 for t, frozen in seen)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0

    gc.set_threshold(300_000, 5, 5)  # a program's own setting, higher than a job's for young objects
    try:
        batchain.run(RunnableLambda(look), [4], store=store_path, mode="realtime", progress=False)
        assert seen[-1][0] == (300_000, 20, 100)
        assert gc.get_threshold() == (300_000, 5, 5)
    finally:
        gc.set_threshold(*before)


def test_the_next_round_is_built_while_a_round_uploads(sandbox: Sandbox, store_path: Path) -> None:
    # a provider that takes a while to receive each batch's input: the client builds the
    # next round meanwhile instead of waiting for the upload
    sandbox.configure(
        batch_validating_s=0.01, batch_processing_s=0.5, batch_finalizing_s=0.01, upload_latency_ms=400
    )
    inputs = [{"x": f"topic {i}"} for i in range(100)]
    job = run_batch(one_stage(sandbox), inputs, store_path, poll_min=0.05, window=20)
    assert job.counts["succeeded"] == 100
    assert job.stats["batches_created"] >= 4
    # every round after the first was built, in whole or in part, during the one before's upload
    assert job.stats["items_built_during_uploads"] >= 20
    assert len(sandbox.ledger()) == 100 and not sandbox.duplicates()
    realtime = batchain.run(one_stage(sandbox), inputs, store=store_path, progress=False, cache=False)
    assert job.outputs() == realtime.outputs()


def test_item_coroutines_ask_the_store_together_not_once_per_call(
    fast: Sandbox, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calls item coroutines reach in one turn of the event loop are looked up in one
    query, and the deliveries of a batch's answers are checked in one: a store across the
    network (PostgreSQL) costs a round trip per turn, not a few per call."""
    from batchain.store.sql import SQLStore

    asked: collections.Counter[str] = collections.Counter()
    for name in ("get_calls", "first_deliveries"):
        original = getattr(SQLStore, name)

        def counted(self: SQLStore, *args: Any, _name: str = name, _f: Any = original, **kw: Any) -> Any:
            asked[_name] += 1
            return _f(self, *args, **kw)

        monkeypatch.setattr(SQLStore, name, counted)
    inputs = [{"x": f"topic {i}"} for i in range(120)]
    job = run_batch(three_stages(fast), inputs, store_path, window=1000)
    assert job.counts["succeeded"] == 120
    # each item asks for 6 calls (its 3 stages, and the earlier stages again each time it
    # comes back from a batch): asked one at a time, that was 360 queries of each kind
    assert asked["get_calls"] <= 30 and asked["first_deliveries"] <= 30, asked
    assert len(fast.ledger()) == 360 and not fast.duplicates()


def test_the_store_commits_between_chunks_of_rows(
    fast: Sandbox, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window of rows is chunks of work that need not wait for anything: between two
    chunks the store commits, so a shared store's write lock passes to other processes in
    turn, and the lease is renewed (before, one loop iteration took a whole window: at
    200,000 items on PostgreSQL, another worker waited out the lock's 30 s)."""
    from batchain.engine.bulk import BulkItems
    from batchain.store.connection import SharedConnection

    events: list[str] = []
    add, group_commit = BulkItems.add, SharedConnection._group_commit

    async def spied_add(self: BulkItems, rows: Any) -> None:
        events.append("add")
        await add(self, rows)

    def spied_commit(self: SharedConnection, loop: Any) -> None:
        events.append("commit")
        group_commit(self, loop)

    monkeypatch.setattr(BulkItems, "add", spied_add)
    monkeypatch.setattr(SharedConnection, "_group_commit", spied_commit)
    job = run_batch(staged(fast), [{"x": i} for i in range(3500)], store_path)
    assert job.counts["succeeded"] == 3500
    assert len(fast.ledger()) == 3500 * 3 and not fast.duplicates()
    adds = [n for n, e in enumerate(events) if e == "add"]
    assert len(adds) >= 4 * 3  # 4 chunks, fed again after each of 3 stages
    assert all("commit" in events[a:b] for a, b in itertools.pairwise(adds)), events
