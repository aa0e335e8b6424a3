"""Price resolution and every modifier, checked against the catalog's raw rates by hand."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest

from batchain.cost import (
    ANTHROPIC_BATCH_MULTIPLIER,
    ANTHROPIC_CACHE_READ_MULTIPLIER,
    ANTHROPIC_CACHE_WRITE_1H_MULTIPLIER,
    ANTHROPIC_CACHE_WRITE_5M_MULTIPLIER,
    OPENAI_BATCH_MULTIPLIER,
    PriceBook,
    UnknownPriceWarning,
    cost_of,
    list_price_of,
)
from batchain.store.records import Usage
from tests.cost import catalog
from tests.cost.catalog import M

OA, AN = "openai", "anthropic"
MINI, HAIKU = "gpt-4o-mini", "claude-haiku-4-5"


@pytest.fixture
def book() -> PriceBook:
    return PriceBook()


def u(inp: int, out: int, cached: int = 0, written: int = 0) -> Usage:
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cached,
        cache_creation_tokens=written,
        requests=1,
    )


def genai(provider: str, model: str, usage: Usage, w1h: int = 0, batch: bool = False, **ctx: str) -> Decimal:
    """The catalog's own calculator (an independent implementation) for the same usage."""
    context = {"processing": "batch"} if batch else dict(ctx)
    gu = genai_prices.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_creation_tokens,
        cache_write_1h_tokens=w1h,
    )
    return genai_prices.calc_price(gu, model, provider_id=provider, price_context=context or None).total_price


# -- the catalog facts these tests rely on ---------------------------------------------------------


def test_catalog_facts() -> None:
    mini = catalog.standard(OA, MINI)
    assert (mini["input_mtok"], mini["cache_read_mtok"], mini["output_mtok"]) == (
        Decimal("0.15"),
        Decimal("0.075"),
        Decimal("0.6"),
    )
    mini_batch = catalog.batch(OA, MINI)
    assert mini_batch == {"input_mtok": Decimal("0.075"), "output_mtok": Decimal("0.3")}
    haiku = catalog.standard(AN, HAIKU)
    assert haiku["input_mtok"] == 1 and haiku["output_mtok"] == 5
    assert haiku["cache_read_mtok"] == Decimal("0.1")
    assert haiku["cache_write_mtok"] == Decimal("1.25") and haiku["cache_write_1h_mtok"] == 2
    hb = catalog.batch(AN, HAIKU)
    assert hb is not None
    # Anthropic batch: 50% of every standard price, cache included (the documented rule)
    for key, value in hb.items():
        assert value == haiku[key] * ANTHROPIC_BATCH_MULTIPLIER, key


# -- OpenAI ----------------------------------------------------------------------------------------


def test_openai_realtime(book: PriceBook) -> None:
    r = catalog.standard(OA, MINI)
    c = book.cost_of(OA, MINI, u(10_000, 2_000), "realtime")
    assert c.known
    assert c.uncached_input == 10_000 * r["input_mtok"] / M
    assert c.output == 2_000 * r["output_mtok"] / M
    assert c.total == (10_000 * r["input_mtok"] + 2_000 * r["output_mtok"]) / M == Decimal("0.0027")
    assert c.total == genai(OA, MINI, u(10_000, 2_000))


def test_openai_dated_model_name(book: PriceBook) -> None:
    dated = book.cost_of(OA, "gpt-4o-mini-2024-07-18", u(1000, 100), "realtime")
    assert dated.total == book.cost_of(OA, MINI, u(1000, 100), "realtime").total
    assert book.sheet(OA, "gpt-4o-mini-2024-07-18").catalog_model == MINI


def test_openai_batch(book: PriceBook) -> None:
    b = catalog.batch(OA, MINI)
    assert b is not None
    c = book.cost_of(OA, MINI, u(10_000, 2_000), "batch")
    assert c.total == (10_000 * b["input_mtok"] + 2_000 * b["output_mtok"]) / M
    std = catalog.standard(OA, MINI)
    assert b["input_mtok"] == std["input_mtok"] * OPENAI_BATCH_MULTIPLIER  # 50% off
    assert c.total == genai(OA, MINI, u(10_000, 2_000), batch=True)


def test_openai_cached_input_realtime(book: PriceBook) -> None:
    r = catalog.standard(OA, MINI)
    c = book.cost_of(OA, MINI, u(10_000, 500, cached=4_000), "realtime")
    assert c.uncached_input == 6_000 * r["input_mtok"] / M
    assert c.cached_input == 4_000 * r["cache_read_mtok"] / M
    assert c.total == (6_000 * r["input_mtok"] + 4_000 * r["cache_read_mtok"] + 500 * r["output_mtok"]) / M
    assert c.total == genai(OA, MINI, u(10_000, 500, cached=4_000))


def test_openai_cached_input_in_batch(book: PriceBook) -> None:
    # gpt-5: the catalog lists a batch cached rate = 50% of the cached price (stacked: 0.05x base)
    std5, b5 = catalog.standard(OA, "gpt-5"), catalog.batch(OA, "gpt-5")
    assert b5 is not None and b5["cache_read_mtok"] == std5["cache_read_mtok"] / 2
    c5 = book.cost_of(OA, "gpt-5", u(10_000, 500, cached=4_000), "batch")
    assert c5.cached_input == 4_000 * std5["cache_read_mtok"] / 2 / M
    assert (
        c5.total == (6_000 * b5["input_mtok"] + 4_000 * b5["cache_read_mtok"] + 500 * b5["output_mtok"]) / M
    )
    assert c5.total == genai(OA, "gpt-5", u(10_000, 500, cached=4_000), batch=True)

    # gpt-4o-mini: the catalog's batch table has no cached rate; the catalog keeps the standard one
    std, b = catalog.standard(OA, MINI), catalog.batch(OA, MINI)
    assert b is not None and "cache_read_mtok" not in b
    c = book.cost_of(OA, MINI, u(10_000, 500, cached=4_000), "batch")
    assert c.cached_input == 4_000 * std["cache_read_mtok"] / M
    assert c.total == (6_000 * b["input_mtok"] + 4_000 * std["cache_read_mtok"] + 500 * b["output_mtok"]) / M
    assert c.total == genai(OA, MINI, u(10_000, 500, cached=4_000), batch=True)

    # o1-mini: no batch variant at all -> the rule: 50% on input, cached input and output
    so = catalog.standard(OA, "o1-mini")
    assert catalog.batch(OA, "o1-mini") is None
    co = book.cost_of(OA, "o1-mini", u(10_000, 500, cached=4_000), "batch")
    half = Decimal("0.5")
    assert co.cached_input == 4_000 * so["cache_read_mtok"] * half / M
    assert (
        co.total
        == (
            6_000 * so["input_mtok"] * half
            + 4_000 * so["cache_read_mtok"] * half
            + 500 * so["output_mtok"] * half
        )
        / M
    )


def test_openai_flex(book: PriceBook) -> None:
    # gpt-5 has explicit flex prices in the catalog
    f = catalog.variant(OA, "gpt-5", "service_tier", "flex")
    assert f is not None
    c = book.cost_of(OA, "gpt-5", u(10_000, 1_000, cached=2_000), "realtime", "flex")
    assert c.total == (8_000 * f["input_mtok"] + 2_000 * f["cache_read_mtok"] + 1_000 * f["output_mtok"]) / M
    assert c.total == genai(OA, "gpt-5", u(10_000, 1_000, cached=2_000), service_tier="flex")
    std = catalog.standard(OA, "gpt-5")
    assert f["input_mtok"] == std["input_mtok"] / 2 and f["output_mtok"] == std["output_mtok"] / 2
    # gpt-4o-mini has none: flex is "priced at Batch API rates"
    assert catalog.variant(OA, MINI, "service_tier", "flex") is None
    b = catalog.batch(OA, MINI)
    assert b is not None
    cm = book.cost_of(OA, MINI, u(10_000, 1_000), "realtime", "flex")
    assert cm.total == (10_000 * b["input_mtok"] + 1_000 * b["output_mtok"]) / M
    assert any("flex" in n for n in cm.notes)


def test_openai_priority_and_default_service_tiers(book: PriceBook) -> None:
    p = catalog.variant(OA, MINI, "service_tier", "priority")
    assert p is not None
    c = book.cost_of(OA, MINI, u(10_000, 1_000, cached=3_000), "realtime", "priority")
    assert c.total == (7_000 * p["input_mtok"] + 3_000 * p["cache_read_mtok"] + 1_000 * p["output_mtok"]) / M
    # "default" (what a standard response says) is the list price
    std = book.cost_of(OA, MINI, u(10_000, 1_000), "realtime", "default")
    assert std.total == book.cost_of(OA, MINI, u(10_000, 1_000), "realtime").total


# -- Anthropic -------------------------------------------------------------------------------------


def test_anthropic_realtime(book: PriceBook) -> None:
    r = catalog.standard(AN, HAIKU)
    c = book.cost_of(AN, HAIKU, u(1_000, 500), "realtime")
    assert c.total == (1_000 * r["input_mtok"] + 500 * r["output_mtok"]) / M == Decimal("0.0035")
    assert c.total == genai(AN, HAIKU, u(1_000, 500))
    dated = book.cost_of(AN, "claude-haiku-4-5-20251001", u(1_000, 500), "realtime")
    assert dated.total == c.total


def test_anthropic_batch(book: PriceBook) -> None:
    b = catalog.batch(AN, HAIKU)
    assert b is not None
    c = book.cost_of(AN, HAIKU, u(1_000, 500), "batch")
    assert c.total == (1_000 * b["input_mtok"] + 500 * b["output_mtok"]) / M
    assert c.total == book.cost_of(AN, HAIKU, u(1_000, 500), "realtime").total / 2  # type: ignore[operator]


def test_anthropic_cache_read_in_batch(book: PriceBook) -> None:
    std = catalog.standard(AN, HAIKU)
    c = book.cost_of(AN, HAIKU, u(10_000, 100, cached=8_000), "batch")
    # stacked: 0.1 (cache read) x 0.5 (batch) = 0.05 x base input
    assert c.cached_input == 8_000 * std["input_mtok"] * Decimal("0.05") / M
    b = catalog.batch(AN, HAIKU)
    assert b is not None
    assert c.total == (2_000 * b["input_mtok"] + 8_000 * b["cache_read_mtok"] + 100 * b["output_mtok"]) / M
    assert c.total == genai(AN, HAIKU, u(10_000, 100, cached=8_000), batch=True)


def test_anthropic_cache_writes_5m_and_1h(book: PriceBook) -> None:
    std = catalog.standard(AN, HAIKU)
    usage = u(10_000, 100, cached=1_000, written=3_000)  # 1,000 of the writes with the 1-hour TTL
    c = book.cost_of(AN, HAIKU, usage, "realtime", cache_write_1h_tokens=1_000)
    assert c.cache_write == (2_000 * std["cache_write_mtok"] + 1_000 * std["cache_write_1h_mtok"]) / M
    assert (
        c.cache_write
        == (
            2_000 * std["input_mtok"] * ANTHROPIC_CACHE_WRITE_5M_MULTIPLIER
            + 1_000 * std["input_mtok"] * ANTHROPIC_CACHE_WRITE_1H_MULTIPLIER
        )
        / M
    )
    assert c.uncached_input == 6_000 * std["input_mtok"] / M
    assert c.total == genai(AN, HAIKU, usage, w1h=1_000)
    # in a batch: 5m write 0.625x, 1h write 1.0x base
    cb = book.cost_of(AN, HAIKU, usage, "batch", cache_write_1h_tokens=1_000)
    assert cb.cache_write == (2_000 * std["input_mtok"] * Decimal("0.625") + 1_000 * std["input_mtok"]) / M
    assert cb.total == genai(AN, HAIKU, usage, w1h=1_000, batch=True)


def test_anthropic_rules_fill_missing_cache_prices() -> None:
    # a model the catalog does not know, added by the user with only input/output prices
    book = PriceBook({"anthropic/claude-inhouse": {"input": 2, "output": 10}})
    usage = u(10_000, 100, cached=4_000, written=2_000)
    c = book.cost_of(AN, "claude-inhouse", usage, "realtime", cache_write_1h_tokens=500)
    two = Decimal(2)
    assert c.cached_input == 4_000 * two * ANTHROPIC_CACHE_READ_MULTIPLIER / M
    assert c.cache_write == (1_500 * two * Decimal("1.25") + 500 * two * Decimal(2)) / M
    cb = book.cost_of(AN, "claude-inhouse", usage, "batch", cache_write_1h_tokens=500)
    assert cb.total == c.total / 2  # type: ignore[operator]


def test_long_context_tier(book: PriceBook) -> None:
    std = book.sheet(AN, "claude-sonnet-4-5")
    assert std.thresholds == (200_000,)
    small = book.cost_of(AN, "claude-sonnet-4-5", u(100_000, 1_000), "realtime")
    big = book.cost_of(AN, "claude-sonnet-4-5", u(300_000, 1_000), "realtime")
    assert small.total == genai(AN, "claude-sonnet-4-5", u(100_000, 1_000))
    assert big.total == genai(AN, "claude-sonnet-4-5", u(300_000, 1_000))
    assert big.uncached_input == 300_000 * Decimal(6) / M  # all tokens at the >200k rate


# -- overrides -------------------------------------------------------------------------------------


def test_overrides_from_a_dict() -> None:
    book = PriceBook(
        {
            "openai/gpt-4o-mini": {"input": "0.10", "batch": {"cached_input": 0.02}},
            "my-finetune": {"input": 1, "output": 2},
        }
    )
    std = catalog.standard(OA, MINI)
    c = book.cost_of(OA, "gpt-4o-mini-2024-07-18", u(10_000, 1_000, cached=2_000), "realtime")
    assert c.uncached_input == 8_000 * Decimal("0.10") / M  # overridden
    assert c.cached_input == 2_000 * std["cache_read_mtok"] / M  # kept from the catalog
    assert c.output == 1_000 * std["output_mtok"] / M
    cb = book.cost_of(OA, MINI, u(10_000, 1_000, cached=2_000), "batch")
    assert cb.uncached_input == 8_000 * Decimal("0.05") / M  # the rule re-applied to the override
    assert cb.cached_input == 2_000 * Decimal("0.02") / M  # explicit batch rate, as given
    added = book.cost_of("generic", "my-finetune", u(1_000, 1_000), "realtime")
    assert added.known and added.total == Decimal("0.003")
    assert book.sheet("generic", "my-finetune").provenance["input"] == "override my-finetune"


@pytest.mark.parametrize("suffix", [".json", ".toml", ".yaml"])
def test_overrides_from_a_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"prices{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"models": {"anthropic/claude-haiku-4-5": {"input": 0.8, "output": 4}}}))
    elif suffix == ".toml":
        path.write_text('["anthropic/claude-haiku-4-5"]\ninput = 0.8\noutput = 4\n')
    else:
        pytest.importorskip("yaml")
        path.write_text("anthropic/claude-haiku-4-5:\n  input: 0.8\n  output: 4\n")
    book = PriceBook.from_file(path)
    c = book.cost_of(AN, HAIKU, u(10_000, 1_000, cached=5_000), "realtime")
    assert c.uncached_input == 5_000 * Decimal("0.8") / M
    assert c.cached_input == 5_000 * Decimal("0.8") * Decimal("0.1") / M  # Anthropic rule follows the input
    assert c.output == 1_000 * Decimal(4) / M


def test_bad_overrides_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown key"):
        PriceBook({"gpt-4o-mini": {"inptu": 1}})
    with pytest.raises(ValueError, match="non-negative"):
        PriceBook({"gpt-4o-mini": {"input": -1}})
    with pytest.raises(ValueError, match="number"):
        PriceBook({"gpt-4o-mini": {"input": "cheap"}})


def test_overrides_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import batchain.cost.prices as prices

    path = tmp_path / "p.json"
    path.write_text(json.dumps({"nothing-like-it": {"input": 3, "output": 3}}))
    monkeypatch.setenv("BATCHAIN_PRICES", str(path))
    monkeypatch.setattr(prices, "_default", None)
    assert cost_of("generic", "nothing-like-it", u(1_000_000, 0)).total == 3


# -- unknown models --------------------------------------------------------------------------------


def test_unknown_model_is_unknown_not_zero(book: PriceBook) -> None:
    with pytest.warns(UnknownPriceWarning, match="no-such-model"):
        c = book.cost_of(OA, "no-such-model", u(1_000, 1_000), "batch")
    assert not c.known and c.total is None
    assert c.uncached_input is None and c.output is None
    assert book.rates(OA, "no-such-model") is None
    with warnings.catch_warnings():  # warned once per model per process
        warnings.simplefilter("error")
        book.cost_of(OA, "no-such-model", u(1, 1), "realtime")


def test_list_price_is_realtime_standard(book: PriceBook) -> None:
    usage = u(10_000, 1_000, cached=2_000)
    assert book.list_price_of(OA, MINI, usage).total == book.cost_of(OA, MINI, usage, "realtime").total
    assert list_price_of(OA, MINI, usage, pricebook=book).total == book.cost_of(OA, MINI, usage).total
    assert book.cost_of(OA, MINI, usage, "batch").total < book.list_price_of(OA, MINI, usage).total  # type: ignore[operator]


def test_rates_and_provenance(book: PriceBook) -> None:
    r = book.rates(AN, HAIKU, "batch")
    assert r is not None
    assert (r.input, r.cache_read, r.cache_write_5m, r.cache_write_1h, r.output) == (
        Decimal("0.5"),
        Decimal("0.05"),
        Decimal("0.625"),
        Decimal("1"),
        Decimal("2.5"),
    )
    sheet = book.sheet(OA, MINI, "batch")
    assert "batch variant" in sheet.provenance["input"]
    assert "standard cached rate" in sheet.provenance["cache_read"]


def test_cost_addition() -> None:
    book = PriceBook()
    a = book.cost_of(OA, MINI, u(1_000, 100), "realtime")
    b = book.cost_of(OA, MINI, u(2_000, 100), "batch")
    s = a + b
    assert s.total == a.total + b.total  # type: ignore[operator]
    assert s.tier == "*" and s.usage.input_tokens == 3_000
    with pytest.warns(UnknownPriceWarning):
        x = book.cost_of(OA, "zzz-unknown", u(1, 1))
    assert (a + x).total is None and not (a + x).known


def test_cost_of_call_reads_the_response(book: PriceBook) -> None:
    usage = u(10_000, 100, cached=1_000, written=3_000)
    body = {
        "usage": {"cache_creation": {"ephemeral_5m_input_tokens": 2_000, "ephemeral_1h_input_tokens": 1_000}}
    }
    assert (
        book.cost_of_call(AN, HAIKU, usage, "realtime", json.dumps(body)).total
        == book.cost_of(AN, HAIKU, usage, "realtime", cache_write_1h_tokens=1_000).total
        == genai(AN, HAIKU, usage, w1h=1_000)
    )
    flex = {"service_tier": "flex", "usage": {}}
    assert (
        book.cost_of_call(OA, "gpt-5", u(1_000, 10), "realtime", flex).total
        == book.cost_of(OA, "gpt-5", u(1_000, 10), "realtime", "flex").total
    )
    assert book.cost_of_call(OA, MINI, u(1_000, 10), "realtime", "not json").total == (
        book.cost_of(OA, MINI, u(1_000, 10)).total
    )
