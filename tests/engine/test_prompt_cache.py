"""Batch mode and the providers' prompt caches, judged by the sandbox ledger: calls that
share a long system prompt are grouped, Anthropic's are marked after one priming batch, the
cost equals the ledger priced here, nothing is billed twice, and the answers are those of
the same job without caching."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

import batchain
from batchain.errors import InvalidOption
from batchain.providers.base import body_hash, canonical_json, clean_body_json, hash_of
from batchain.providers.promptcache import anthropic_mark
from batchain.sandbox import LedgerEntry, Sandbox
from batchain.sandbox.ledger import request_hash
from tests.engine.conftest import make_anthropic, make_openai, run_job

MODEL = "claude-haiku-4-5"  # caches prefixes of 4,096 tokens and more
#: USD per million tokens; Anthropic's batch halves every one of them
PRICES = {
    f"anthropic/{MODEL}": {
        "input": 1,
        "cache_read": 0.1,
        "cache_write_5m": 1.25,
        "cache_write_1h": 2,
        "output": 5,
    }
}
LONG = "Follow the house style guide for every answer you give. " * 600  # ~6,600 tokens
SHORT = "Follow the house style guide. " * 200  # ~1,000 tokens: under the minimum


def priced(e: LedgerEntry) -> Decimal:
    """The ledger entry's cost from its own tokens, at the rates above."""
    w1h = e.cache_write_1h_tokens
    w5m = e.cache_creation_tokens - w1h
    plain = e.input_tokens - e.cached_tokens - e.cache_creation_tokens
    cost = (
        Decimal(plain) * 1
        + Decimal(e.cached_tokens) * Decimal("0.1")
        + Decimal(w5m) * Decimal("1.25")
        + Decimal(w1h) * 2
        + Decimal(e.output_tokens) * 5
    ) / 10**6
    return cost / 2 if e.tier == "batch" else cost


def uncached(e: LedgerEntry) -> Decimal:
    """The same call with nothing read from or written to a cache."""
    cost = (Decimal(e.input_tokens) * 1 + Decimal(e.output_tokens) * 5) / 10**6
    return cost / 2 if e.tier == "batch" else cost


def chain(sb: Sandbox, system: str) -> Any:
    prompt = ChatPromptTemplate.from_messages([("system", system), ("human", "Item {i}: summarize it")])
    return prompt | make_anthropic(sb, MODEL) | StrOutputParser()


def batches(entries: list[LedgerEntry]) -> dict[str, list[LedgerEntry]]:
    out: dict[str, list[LedgerEntry]] = defaultdict(list)
    for e in entries:
        out[str(e.batch_id)].append(e)
    return dict(out)


def stored_hashes(path: Path) -> set[str]:
    with sqlite3.connect(path) as con:
        return {r[0] for r in con.execute("SELECT request_hash FROM calls WHERE status = 'succeeded'")}


@pytest.fixture
def quick(sandbox: Sandbox) -> Sandbox:
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    return sandbox


def test_a_long_shared_prompt_is_written_once_by_a_priming_batch_and_read_by_the_rest(
    quick: Sandbox, tmp_path: Path
) -> None:
    items = [{"i": n} for n in range(20)]
    cached_path = tmp_path / "cached.sqlite"
    job = run_job(chain(quick, LONG), items, cached_path, mode="batch", prices=PRICES)
    assert job.status.value == "completed"
    ledger = quick.ledger()
    assert len(ledger) == 20 and not quick.duplicates()
    writes = [e for e in ledger if e.cache_creation_tokens]
    reads = [e for e in ledger if e.cached_tokens]
    # one write, with the 1-hour TTL, by a batch of its own that ran first; 19 reads after
    assert len(writes) == 1 and writes[0].cache_write_1h_tokens == writes[0].cache_creation_tokens
    assert len(reads) == 19 and {e.cached_tokens for e in reads} == {writes[0].cache_creation_tokens}
    by_batch = batches(ledger)
    assert len(by_batch) == 2 and by_batch[str(writes[0].batch_id)] == writes
    assert max(e.ts for e in writes) < min(e.ts for e in reads)
    assert (job.stats["prompt_cache_primed"], job.stats["prompt_cache_marked"]) == (1, 20)
    # the cost is the ledger's, priced here; the marks changed no call's hash
    report = job.report()
    assert report.paid == sum(map(priced, ledger))
    assert report.cache_saved == sum(map(uncached, ledger)) - sum(map(priced, ledger)) > 0
    assert stored_hashes(cached_path) == {e.request_hash for e in ledger}
    caption = str(report.table().caption)
    assert "prompt cache: " in caption and "tokens read" in caption

    # the same job without caching: the same requests, the same answers, no cache tokens
    quick.reset()
    plain_path = tmp_path / "plain.sqlite"
    plain = run_job(chain(quick, LONG), items, plain_path, mode="batch", prices=PRICES, prompt_cache="off")
    again = quick.ledger()
    assert plain.outputs() == job.outputs()
    assert {e.request_hash for e in again} == {e.request_hash for e in ledger}
    assert not any(e.cached_tokens or e.cache_creation_tokens for e in again)
    assert len(batches(again)) == 1 and not quick.duplicates()
    assert plain.report().cache_saved == 0
    assert (plain.stats["prompt_cache_primed"], plain.stats["prompt_cache_marked"]) == (0, 0)
    assert plain.report().paid == sum(map(priced, again)) > report.paid


def test_a_prompt_under_the_model_minimum_is_sent_as_built(quick: Sandbox, tmp_path: Path) -> None:
    job = run_job(chain(quick, SHORT), [{"i": n} for n in range(20)], tmp_path / "s.sqlite", mode="batch")
    ledger = quick.ledger()
    assert job.status.value == "completed" and len(ledger) == 20 and not quick.duplicates()
    assert len(batches(ledger)) == 1  # nothing primed: one batch
    assert not any(e.cached_tokens or e.cache_creation_tokens for e in ledger)


def test_a_primer_that_wrote_nothing_leaves_the_rest_unmarked(quick: Sandbox, tmp_path: Path) -> None:
    # long words: estimated over the minimum (~4 characters a token), far under it in fact
    wordy = "Incomprehensibilities notwithstanding, " * 500
    job = run_job(chain(quick, wordy), [{"i": n} for n in range(10)], tmp_path / "w.sqlite", mode="batch")
    ledger = quick.ledger()
    assert job.status.value == "completed" and len(ledger) == 10 and not quick.duplicates()
    assert sorted(map(len, batches(ledger).values())) == [1, 9]  # primed, in vain
    assert not any(e.cached_tokens or e.cache_creation_tokens for e in ledger)
    assert (job.stats["prompt_cache_primed"], job.stats["prompt_cache_marked"]) == (1, 1)


def test_the_users_own_cache_control_is_left_as_it_is(quick: Sandbox, tmp_path: Path) -> None:
    marked = {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}

    def messages(row: dict[str, int]) -> list[Any]:
        return [SystemMessage(content=[marked]), HumanMessage(content=f"Item {row['i']}")]

    own = RunnableLambda(messages) | make_anthropic(quick, MODEL) | StrOutputParser()
    job = run_job(own, [{"i": n} for n in range(8)], tmp_path / "own.sqlite", mode="batch", prices=PRICES)
    ledger = quick.ledger()
    assert job.status.value == "completed" and len(ledger) == 8 and not quick.duplicates()
    # not primed, not re-marked: one batch whose requests (in parallel) each write 5-minute
    assert len(batches(ledger)) == 1
    assert all(e.cache_creation_tokens and not e.cache_write_1h_tokens for e in ledger)
    assert job.report().paid == sum(map(priced, ledger))


def test_two_prompts_each_primed_once_and_grouped_into_their_own_batches(
    quick: Sandbox, tmp_path: Path
) -> None:
    other = "Answer in the voice of a patient librarian, citing sources. " * 700  # longer
    model = make_anthropic(quick, MODEL)

    def messages(row: dict[str, int]) -> list[Any]:
        system = LONG if row["i"] % 2 else other  # interleaved: adjacent calls differ
        return [SystemMessage(content=system), HumanMessage(content=f"Item {row['i']}")]

    two = RunnableLambda(messages) | model | StrOutputParser()
    job = run_job(
        two,
        [{"i": n} for n in range(20)],
        tmp_path / "two.sqlite",
        mode="batch",
        max_batch_size=9,
        prices=PRICES,
    )
    ledger = quick.ledger()
    assert job.status.value == "completed" and len(ledger) == 20 and not quick.duplicates()
    by_batch = batches(ledger)
    priming = [b for b in by_batch.values() if any(e.cache_creation_tokens for e in b)]
    # one priming batch: one request per prompt, each writing its own prefix
    assert len(priming) == 1 and len(priming[0]) == 2
    sizes = {e.cache_creation_tokens for e in priming[0]}
    assert len(sizes) == 2
    rest = [b for b in by_batch.values() if b is not priming[0]]
    # 18 reads in batches of at most 9: each batch holds the calls of one prompt only
    assert sorted(len(b) for b in rest) == [9, 9]
    assert sorted(e.cached_tokens for b in rest for e in b) == sorted([*sizes] * 9)
    assert all(len({e.cached_tokens for e in b}) == 1 for b in rest)
    assert job.report().paid == sum(map(priced, ledger))


OPENAI_PRICES = {
    "openai/gpt-4o-mini": {
        "input": 0.15,
        "cache_read": 0.075,
        "output": 0.6,
        "batch": {"input": 0.075, "cache_read": 0.0375, "output": 0.3},
    }
}


@pytest.mark.parametrize("setting", ["auto", "off"])
def test_openai_calls_sharing_a_prompt_go_in_the_same_batches(
    quick: Sandbox, tmp_path: Path, setting: str
) -> None:
    other = "Answer in the voice of a patient librarian, citing sources. " * 700  # longer

    def messages(row: dict[str, int]) -> list[Any]:
        system = LONG if row["i"] % 2 else other  # interleaved: adjacent calls differ
        return [SystemMessage(content=system), HumanMessage(content=f"Item {row['i']}")]

    two = RunnableLambda(messages) | make_openai(quick) | StrOutputParser()
    items = [{"i": n} for n in range(20)]
    path = tmp_path / f"{setting}.sqlite"
    job = run_job(
        two, items, path, mode="batch", max_batch_size=10, prices=OPENAI_PRICES, prompt_cache=setting
    )
    ledger = quick.ledger()
    assert job.status.value == "completed" and len(ledger) == 20 and not quick.duplicates()
    # which prompt a call had, from its size (the two differ by over 1,000 tokens)
    prompts = [{e.input_tokens > 7800 for e in b} for b in batches(ledger).values()]
    assert len(prompts) == 2
    if setting == "auto":  # each prompt in one batch: written once, read by the other 9
        assert sorted(map(len, prompts)) == [1, 1] and prompts[0] != prompts[1]
        assert sum(1 for e in ledger if e.cached_tokens) == 18
    else:  # as they came: both prompts in each batch
        assert all(len(p) == 2 for p in prompts)
    assert job.report().paid == sum(map(priced_openai, ledger))
    assert stored_hashes(path) == {e.request_hash for e in ledger}


def priced_openai(e: LedgerEntry) -> Decimal:
    cost = (
        Decimal(e.input_tokens - e.cached_tokens) * Decimal("0.15")
        + Decimal(e.cached_tokens) * Decimal("0.075")
        + Decimal(e.output_tokens) * Decimal("0.6")
    ) / 10**6
    return cost / 2 if e.tier == "batch" else cost


def test_prompt_cache_takes_auto_or_off() -> None:
    with pytest.raises(InvalidOption, match="prompt_cache must be one of auto, off; got 'on'"):
        batchain.run(RunnableLambda(lambda x: x), [1], mode="batch", prompt_cache="on")


@pytest.mark.parametrize(
    "system",
    [
        "Be brief.",
        [{"type": "text", "text": "Be brief."}],
        [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Cite sources."}],
        [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    ],
)
def test_a_marked_body_hashes_as_the_unmarked_one_here_and_in_the_ledger(system: Any) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 8,
        "system": system,
        "messages": [{"role": "user", "content": "hi"}],
    }
    marked = anthropic_mark(body)
    assert marked != body and '"ttl":"1h"' in canonical_json(marked["system"])
    assert body_hash(marked) == body_hash(body) == request_hash(marked) == request_hash(body)
    text = clean_body_json(body)
    assert hash_of(body, text) == body_hash(body)
    assert request_hash({**body, "system": "Be curt."}) != request_hash(body)
