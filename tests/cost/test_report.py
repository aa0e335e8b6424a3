"""``job_cost`` against real jobs on the sandbox: tokens equal the ledger, cost equals the
ledger priced by hand from the catalog's raw rates, dedup and cache hits are "avoided"."""

from __future__ import annotations

import io
import json
import warnings
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel
from rich.console import Console

import batchain
from batchain.cost import JobCost, PriceBook, job_cost, render_table, to_json
from batchain.sandbox import Sandbox
from batchain.sandbox.ledger import LedgerEntry
from batchain.store import SQLiteStore
from tests.cost import catalog
from tests.cost.catalog import M
from tests.cost.conftest import make_anthropic, make_openai

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
UNIQUE = 16
#: 20 inputs, 4 of them (20%) repeating earlier ones; prompt length grows with i
INPUTS = [{"x": "word " * (i + 1)} for i in range(UNIQUE)] + [{"x": "word " * (i + 1)} for i in range(4)]


def chain(sb: Sandbox) -> Any:
    openai = make_openai(sb, MODELS["openai"])
    anthropic = make_anthropic(sb, MODELS["anthropic"])
    # long enough to be cached: OpenAI caches 1,024+ tokens, Anthropic's Haiku 4.5 4,096+
    system = "You answer in one short sentence. " * 600
    # OpenAI caches the system prefix automatically (the sandbox too); Anthropic needs cache_control
    p_openai = ChatPromptTemplate.from_messages([("system", system), ("user", "Say {x}")])
    cached_system = SystemMessage(
        content=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    )
    p_anthropic = ChatPromptTemplate.from_messages([cached_system, ("user", "Say {x}")])
    return RunnableParallel(
        o=p_openai | openai | StrOutputParser(), a=p_anthropic | anthropic | StrOutputParser()
    )


def run(sb: Sandbox, store: Path, mode: str) -> batchain.Job:
    return batchain.run(chain(sb), INPUTS, mode=mode, store=store, progress=False, poll_min=0.02)


def ledger_tokens(
    entries: Iterable[LedgerEntry],
) -> dict[tuple[str, str, str], tuple[int, int, int, int, int]]:
    out: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for e in entries:
        t = out[(e.provider, e.model, e.tier)]
        t[0] += 1
        t[1] += e.input_tokens
        t[2] += e.cached_tokens
        t[3] += e.cache_creation_tokens
        t[4] += e.output_tokens
    return {k: (v[0], v[1], v[2], v[3], v[4]) for k, v in out.items()}


def report_tokens(report: JobCost) -> dict[tuple[str, str, str], tuple[int, int, int, int, int]]:
    return {
        (x.provider, x.model, x.tier): (
            x.calls,
            x.usage.input_tokens,
            x.usage.cache_read_tokens,
            x.usage.cache_creation_tokens,
            x.usage.output_tokens,
        )
        for x in report.lines
    }


def hand_price(e: LedgerEntry, tier: str) -> Decimal:
    """One ledger entry priced from the catalog's raw rates (sandbox writes are 5-minute writes)."""
    std = catalog.standard(e.provider, e.model)
    rates = dict(std)
    if tier == "batch":
        batch = catalog.batch(e.provider, e.model)
        assert batch is not None
        rates.update(batch)  # the catalog's batch rates; keys it lacks keep the standard rate
    uncached = e.input_tokens - e.cached_tokens - e.cache_creation_tokens
    total = uncached * rates["input_mtok"] + e.cached_tokens * rates["cache_read_mtok"]
    total += e.output_tokens * rates["output_mtok"]
    if e.cache_creation_tokens:
        total += e.cache_creation_tokens * rates["cache_write_mtok"]
    return total / M


def smallest_prompts(entries: list[LedgerEntry], provider: str, n: int) -> list[LedgerEntry]:
    """The ledger entries of inputs 0..n-1 (their prompts are the n shortest)."""
    mine = sorted((e for e in entries if e.provider == provider), key=lambda e: e.input_tokens)
    return mine[:n]


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_job_cost_matches_the_ledger(sb: Sandbox, tmp_path: Path, mode: str) -> None:
    store = tmp_path / "s.sqlite"
    job = run(sb, store, mode)
    assert job.counts["succeeded"] == len(INPUTS)
    ledger = sb.ledger()
    assert not sb.duplicates()
    assert len(ledger) == 2 * UNIQUE  # duplicates were not billed
    assert {e.tier for e in ledger} == {mode}
    # the sandbox really produced cached tokens and (Anthropic) cache writes
    assert any(e.cached_tokens for e in ledger if e.provider == "openai")
    assert any(e.cache_creation_tokens for e in ledger if e.provider == "anthropic")
    if mode == "realtime":
        assert any(e.cached_tokens for e in ledger if e.provider == "anthropic")
    else:  # the requests of one batch run in parallel: each writes the user's marked prefix
        assert all(e.cache_creation_tokens for e in ledger if e.provider == "anthropic")

    report = job_cost(store, job.id, PriceBook())
    assert report.mode == mode and report.complete
    # tokens per (provider, model, tier) equal the ledger's exactly
    assert report_tokens(report) == ledger_tokens(ledger)
    # cost equals the ledger's tokens priced by hand; list price is the realtime price
    for line in report.lines:
        mine = [e for e in ledger if (e.provider, e.model) == (line.provider, line.model)]
        assert line.cost.total == sum(hand_price(e, mode) for e in mine)
        assert line.list_cost.total == sum(hand_price(e, "realtime") for e in mine)
    assert report.paid == sum(hand_price(e, mode) for e in ledger)
    assert report.list_price == sum(hand_price(e, "realtime") for e in ledger)
    if mode == "batch":
        assert report.savings == report.list_price - report.paid > 0
        assert [len(r.batches) for r in report.rounds] == [2]  # one round, a batch per provider
        assert report.rounds[0].cost == report.paid
    else:
        assert report.savings == 0 and not report.rounds

    # 20% duplicates: 4 reuses per model, avoided at the realtime list price of the reused call
    assert report.paid_calls == 2 * UNIQUE
    assert report.shared_calls + report.cache_hits == 2 * 4
    assert report.replayed_calls == 0
    for provider, model in MODELS.items():
        lines = [a for a in report.avoided_lines if a.provider == provider]
        reused = smallest_prompts(ledger, provider, 4)
        assert lines and all(a.model == model and a.source in ("shared", "cache") for a in lines)
        assert sum(a.calls for a in lines) == 4
        assert sum(a.usage.input_tokens for a in lines) == sum(e.input_tokens for e in reused)
        assert sum(a.usage.cache_read_tokens for a in lines) == sum(e.cached_tokens for e in reused)
        assert sum(a.usage.output_tokens for a in lines) == sum(e.output_tokens for e in reused)
        assert sum(a.list_cost.total or 0 for a in lines) == sum(hand_price(e, "realtime") for e in reused)
    assert report.avoided == sum(
        hand_price(e, "realtime") for p in MODELS for e in smallest_prompts(ledger, p, 4)
    )
    assert report.failed_calls == 0 and report.failed_items == 0

    # groupings
    assert set(report.by_model()) == {(p, m) for p, m in MODELS.items()}
    assert set(report.by_tier()) == {mode}
    assert report.by_tier()[mode].cost.total == report.paid

    # JSON and table render
    data = to_json(report)
    assert data == report.to_json()
    json.dumps(data)
    assert Decimal(data["paid"]) == report.paid
    assert data["paid_calls"] == 2 * UNIQUE and data["complete"] is True
    out = io.StringIO()
    Console(file=out, width=200).print(report.table())
    assert "gpt-4o-mini" in out.getvalue() and "total" in out.getvalue()


def test_the_table_fits_80_columns_with_every_number_whole(sb: Sandbox, tmp_path: Path) -> None:
    """At 80 columns (a default terminal) the report drops columns, in order (empty cache
    columns, then the list price), and wraps names: no cost or count is ever cut short."""
    store = tmp_path / "s.sqlite"
    report = job_cost(store, run(sb, store, "batch").id, PriceBook())
    assert report.paid_calls == len(sb.ledger()) and not sb.duplicates()
    wide, narrow = io.StringIO(), io.StringIO()
    Console(file=wide, width=200).print(render_table(report, width=200))
    Console(file=narrow, width=80).print(render_table(report, width=80))
    assert "list price" in wide.getvalue() and "list price" not in narrow.getvalue()
    text = narrow.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for line in report.lines:
        assert f"${line.cost.total:,.6f}" in text and f"${line.savings:,.6f}" in text
    assert f"${report.paid:,.6f}" in text and f"{report.paid_calls:,}" in text


def test_second_identical_job_is_all_cache_hits(sb: Sandbox, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    first = run(sb, store, "batch")
    billed = sb.ledger()
    second = run(sb, store, "realtime")
    assert sb.ledger() == billed  # nothing new billed

    report = job_cost(second)  # a Job works too
    assert report.job_id == second.id
    assert report.lines == () and report.paid == 0 and report.paid_calls == 0
    assert report.cache_hits == 2 * len(INPUTS)
    assert {a.source for a in report.avoided_lines} == {"cache"}
    # every item's call avoided at list price: the 32 billed requests + the 4 duplicates per model
    expected: Decimal = sum((hand_price(e, "realtime") for e in billed), Decimal(0))
    expected += sum(hand_price(e, "realtime") for p in MODELS for e in smallest_prompts(billed, p, 4))
    assert report.avoided == expected
    assert report.avoided_by_source == {"cache": expected}

    # the first job is unchanged by the second
    again = job_cost(store, first.id)
    assert again.paid == sum(hand_price(e, "batch") for e in billed)
    assert first.report().paid == again.paid == first.cost  # the Job shortcuts


def test_per_item_costs(sb: Sandbox, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    job = run(sb, store, "realtime")
    report = job_cost(store, job.id, per_item=True)
    assert report.items is not None and len(report.items) == len(INPUTS)
    assert sum(i.cost or 0 for i in report.items.values()) == report.paid
    assert sum(i.avoided or 0 for i in report.items.values()) == report.avoided
    assert sum(i.paid_calls for i in report.items.values()) == report.paid_calls
    # each duplicate item paid for nothing, or its twin did: 2 calls reused per duplicated pair
    assert sum(i.reused_calls for i in report.items.values()) == 8
    assert "items" in to_json(report)


def test_unknown_model_is_listed_not_zero(sb: Sandbox, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    model = make_openai(sb, "gpt-sandbox-unpriced")
    with pytest.warns(UserWarning, match="gpt-sandbox-unpriced") as warned:  # before the run
        job = batchain.run(
            ChatPromptTemplate.from_template("Say {x}") | model,
            [{"x": i} for i in range(3)],
            store=store,
            progress=False,
        )
    assert job.counts["succeeded"] == 3
    assert len([w for w in warned if "gpt-sandbox-unpriced" in str(w.message)]) == 1
    with warnings.catch_warnings():  # named once per process: the report lists it instead
        warnings.simplefilter("error")
        report = job_cost(store, job.id, PriceBook())
    assert not report.complete
    assert report.unknown_models == (("openai", "gpt-sandbox-unpriced"),)
    (line,) = report.unknown
    assert line.calls == 3 and line.cost.total is None
    assert report.paid == 0  # known part only; the unknown line is listed, not counted as zero
    assert to_json(report)["unknown_models"] == ["openai/gpt-sandbox-unpriced"]
    out = io.StringIO()
    Console(file=out, width=200).print(render_table(report))
    assert "unknown" in out.getvalue()


def test_rounds_from_the_store(sb: Sandbox, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    job = batchain.run(
        chain(sb), INPUTS, mode="batch", store=store, progress=False, poll_min=0.02, max_batch_size=5
    )
    report = job_cost(store, job.id)
    (rnd,) = report.rounds
    with SQLiteStore(store) as st:
        n_batches = len(st.job_batches(job.id))
    assert len(rnd.batches) == n_batches == 2 * 4  # 16 calls per provider in batches of 5
    assert rnd.calls == report.paid_calls
    assert sum(b.cost.total or 0 for b in rnd.batches) == report.paid
    by_batch: dict[str, int] = defaultdict(int)
    for e in sb.ledger():
        by_batch[e.batch_id or ""] += 1
    assert sorted(b.calls for b in rnd.batches) == sorted(by_batch.values())


def test_two_rounds_are_inferred(sb: Sandbox, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    model = make_openai(sb)
    first = ChatPromptTemplate.from_template("Say {x}") | model | StrOutputParser()
    second = ChatPromptTemplate.from_template("Summarise: {y}") | model | StrOutputParser()
    chain = first | (lambda y: {"y": y}) | second
    inputs = [{"x": f"topic {i}"} for i in range(6)]
    job = batchain.run(chain, inputs, mode="batch", store=store, progress=False, poll_min=0.02)
    assert job.counts["succeeded"] == 6
    report = job_cost(store, job.id)
    assert [r.round for r in report.rounds] == [1, 2]
    assert [r.calls for r in report.rounds] == [6, 6]
    ledger = sb.ledger()
    first_batch = min(ledger, key=lambda e: e.ts).batch_id
    assert report.rounds[0].batches[0].provider_batch_id == first_batch
    assert sum((r.cost or Decimal(0)) for r in report.rounds) == report.paid
    assert report.paid == sum(hand_price(e, "batch") for e in ledger)


def test_missing_job(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        job_cost(tmp_path / "empty.sqlite", "job-nope")
