"""Auto mode's priority levels: where they come from (a field, a function, one level for
the job), how values are read (levels, numbers, CSV strings, booleans), what an unknown
value does (that item fails, naming it; the others finish), and where each level's calls
go, judged by the sandbox ledger."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel

import batchain
from batchain import InvalidOption, InvalidPriority, Priority
from batchain.engine.session import resolve_options
from batchain.priority import DEFAULT_ROUTES, PriorityRule, Route, parse_level, route
from batchain.sandbox import Sandbox
from tests.engine.conftest import accounted, billed, make_anthropic, make_openai, run_job

PROMPT = ChatPromptTemplate.from_template("Reply to ticket {x}.")

H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW


# -- values and rules (no provider) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("high", H),
        (" Normal ", N),
        ("LOW", L),
        (H, H),
        (2, H),
        (1, H),
        (0, N),
        (-1, L),
        (0.5, H),
        ("1", H),  # CSV gives numbers as strings
        ("0", N),
        ("-3", L),
        ("2.0", H),
        (True, H),
        (False, N),
        ("true", H),
        ("False", N),
        (None, None),  # missing: the caller's default (normal)
        ("", None),  # an empty CSV cell
    ],
)
def test_values_read_as_levels(value: Any, level: Priority | None) -> None:
    assert parse_level(value) == level


@pytest.mark.parametrize("value", ["urgentt", "yes", "realtime", "nan", [1], {"level": "high"}, float("nan")])
def test_values_that_are_not_levels(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_level(value)


def test_route_by_level_flex_and_deadline() -> None:
    far = {lvl: route(lvl, deadline_near=False, flex=False) for lvl in Priority}
    assert far == {H: Route.REALTIME, N: Route.BATCH, L: Route.BATCH}  # no flex: normal is batch
    assert route(N, deadline_near=False, flex=True) is Route.FLEX
    assert route(L, deadline_near=False, flex=True) is Route.BATCH
    assert {route(lvl, deadline_near=True, flex=f) for lvl in Priority for f in (True, False)} == {
        Route.REALTIME
    }
    assert (
        route(L, deadline_near=False, flex=False, routes={**DEFAULT_ROUTES, L: Route.REALTIME})
        is Route.REALTIME
    )


def test_a_priority_string_that_is_no_level_is_refused_and_suggests_the_field(
    sandbox: Sandbox, store_path: Path
) -> None:
    chain = PROMPT | make_openai(sandbox) | StrOutputParser()
    with pytest.raises(InvalidOption, match=r"priority 'hgih' is not a level.*priority_field='hgih'"):
        run_job(chain, [{"x": 1}], store_path, mode="auto", priority="hgih")
    with pytest.raises(InvalidOption, match="not both"):
        run_job(chain, [{"x": 1}], store_path, mode="auto", priority="high", priority_field="u")
    with pytest.raises(InvalidOption, match="apply to mode='auto'"):
        run_job(chain, [{"x": 1}], store_path, mode="batch", priority_field="u")
    with pytest.raises(InvalidOption, match=r"auto_routes\['urgent'\]"):
        run_job(chain, [{"x": 1}], store_path, mode="auto", auto_routes={"urgent": "realtime"})
    with pytest.raises(InvalidOption, match="not a level"):
        batchain.wrap(chain, mode="auto", priority="urgent")
    assert not sandbox.ledger() and not store_path.exists()  # refused before a job existed


def test_an_item_error_names_the_item_field_value_and_levels() -> None:
    rule = PriorityRule.of(None, "urgency")
    assert rule is not None
    assert rule.level_of(0, {"urgency": "low"}) is L
    assert rule.level_of(1, {"other": 1}) is N  # a missing field is normal
    with pytest.raises(InvalidPriority) as bad:
        rule.level_of(7, {"urgency": "urgentt"})
    message = str(bad.value)
    assert "item 7" in message and "'urgency'" in message and "'urgentt'" in message
    assert "high, normal, low" in message
    with pytest.raises(InvalidPriority, match="item 2: priority_field 'urgency' needs a dict input; got str"):
        rule.level_of(2, "just text")


def test_stored_options_keep_the_rule_and_an_old_field_name_resumes_as_a_field() -> None:
    stored = {
        "mode": "auto",
        "priority": None,
        "priority_field": "urgency",
        "auto_routes": {"low": "realtime"},
    }
    options = resolve_options(stored, {})
    assert (options.priority_field, options.auto_routes) == ("urgency", {"low": "realtime"})
    # before levels, `priority` named the field of urgent items: a stored job keeps working
    old = resolve_options({"mode": "auto", "priority": "urgent"}, {})
    assert (old.priority, old.priority_field) == (None, "urgent")
    assert resolve_options({"mode": "auto", "priority": "high"}, {}).priority == "high"


# -- over the sandbox --------------------------------------------------------------------------


def tiers_by_item(sb: Sandbox, store: Path, job: batchain.Job) -> dict[int, list[str]]:
    """Each item's paid calls, by the tier the sandbox billed them at."""
    tier_of = {e.request_hash: e.tier for e in sb.ledger()}
    con = sqlite3.connect(store)
    rows = con.execute(
        "SELECT j.item_idx, c.request_hash FROM job_calls j JOIN calls c ON c.key = j.key"
        " WHERE j.job_id = ? AND j.source = 'paid'",
        (job.id,),
    ).fetchall()
    con.close()
    out: dict[int, list[str]] = {}
    for idx, request_hash in rows:
        out.setdefault(idx, []).append(tier_of[request_hash])
    return out


def assert_ledger_is_the_accounting(sb: Sandbox, job: batchain.Job) -> None:
    assert not sb.duplicates()  # nothing billed twice
    assert accounted(job) == billed(sb)  # nothing escaped batchain's accounting


#: an input field's values, and where each item's calls go
LEVELS: list[tuple[Any, str]] = [
    ("high", "realtime"),
    ("normal", "batch"),
    ("low", "batch"),
    (2, "realtime"),
    (-1, "batch"),
    ("1", "realtime"),
    ("0", "batch"),
    (True, "realtime"),
    (None, "batch"),
    ("", "batch"),
]


def test_levels_from_a_field_route_each_items_calls(fast: Sandbox, store_path: Path) -> None:
    chain = PROMPT | RunnableParallel(
        gpt=make_openai(fast) | StrOutputParser(), claude=make_anthropic(fast) | StrOutputParser()
    )
    inputs: list[dict[str, Any]] = [{"x": i, "urgency": v} for i, (v, _) in enumerate(LEVELS)]
    inputs.append({"x": len(inputs)})  # no such field: normal
    job = run_job(chain, inputs, store_path, mode="auto", priority_field="urgency")
    assert job.counts["succeeded"] == len(inputs), job.errors()
    expected = [tier for _, tier in LEVELS] + ["batch"]
    assert tiers_by_item(fast, store_path, job) == {i: [t, t] for i, t in enumerate(expected)}
    assert_ledger_is_the_accounting(fast, job)


def test_an_unknown_value_fails_that_item_alone(fast: Sandbox, store_path: Path) -> None:
    chain = PROMPT | make_openai(fast) | StrOutputParser()
    inputs = [{"x": 0, "urgency": "high"}, {"x": 1, "urgency": "urgentt"}, {"x": 2, "urgency": "low"}]
    job = run_job(chain, inputs, store_path, mode="auto", priority_field="urgency")
    assert job.counts["succeeded"] == 2 and job.counts["failed"] == 1
    (bad,) = job.errors()
    assert bad.index == 1 and bad.error is not None
    assert bad.error["type"] == "InvalidPriority" and bad.error["where"] == "priority"
    message = bad.error["message"]
    assert "item 1" in message and "'urgency'" in message and "'urgentt'" in message
    assert "high, normal, low" in message
    assert tiers_by_item(fast, store_path, job) == {0: ["realtime"], 2: ["batch"]}  # nothing sent for it
    assert_ledger_is_the_accounting(fast, job)
    # a level given to the retry replaces the stored field: the item runs, nothing else again
    job.retry(priority="high", progress=False, poll_min=0.02)
    assert job.counts["succeeded"] == 3
    assert tiers_by_item(fast, store_path, job) == {0: ["realtime"], 1: ["realtime"], 2: ["batch"]}
    assert_ledger_is_the_accounting(fast, job)


def test_levels_from_a_function_and_a_function_that_raises(fast: Sandbox, store_path: Path) -> None:
    chain = PROMPT | make_openai(fast) | StrOutputParser()

    def level(row: dict[str, int]) -> str | int:
        if row["x"] == 3:
            raise KeyError("tier")
        return "high" if row["x"] == 0 else -1

    job = run_job(chain, [{"x": i} for i in range(5)], store_path, mode="auto", priority=level)
    assert job.counts["succeeded"] == 4
    (bad,) = job.errors()
    assert bad.index == 3 and bad.error is not None
    assert bad.error["message"] == "item 3: priority function level raised KeyError: 'tier'"
    assert tiers_by_item(fast, store_path, job) == {0: ["realtime"], 1: ["batch"], 2: ["batch"], 4: ["batch"]}
    assert_ledger_is_the_accounting(fast, job)
    # a function cannot be stored: a resume without it is refused, not silently all-normal
    with pytest.raises(InvalidOption, match="priority function"):
        batchain.Job.open(job.id, store=store_path, chain=chain).resume(progress=False)


@pytest.mark.parametrize(("level", "tier"), [("high", "realtime"), (Priority.LOW, "batch"), (1, "realtime")])
def test_one_level_for_the_whole_job(fast: Sandbox, store_path: Path, level: Any, tier: str) -> None:
    chain = PROMPT | make_openai(fast) | StrOutputParser()
    job = run_job(chain, [{"x": i} for i in range(4)], store_path, mode="auto", priority=level)
    assert job.counts["succeeded"] == 4
    assert billed(fast, "tier") == {(tier,): 4}
    assert_ledger_is_the_accounting(fast, job)


def test_auto_routes_changes_where_a_level_goes(fast: Sandbox, store_path: Path) -> None:
    chain = PROMPT | make_openai(fast) | StrOutputParser()
    inputs = [{"x": i, "u": "low" if i % 2 else "high"} for i in range(4)]
    job = run_job(
        chain,
        inputs,
        store_path,
        mode="auto",
        priority_field="u",
        auto_routes={"high": "batch", "low": "realtime"},
    )
    assert tiers_by_item(fast, store_path, job) == {
        0: ["batch"],
        1: ["realtime"],
        2: ["batch"],
        3: ["realtime"],
    }
    assert_ledger_is_the_accounting(fast, job)


def test_near_the_deadline_every_level_goes_realtime(sandbox: Sandbox, store_path: Path) -> None:
    # the margin is already reached: nothing may wait on a provider batch
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=30.0, batch_finalizing_s=0.01)
    chain = PROMPT | make_openai(sandbox) | StrOutputParser()
    inputs = [{"x": i, "u": ["low", "normal", "high"][i % 3]} for i in range(6)]
    job = run_job(
        chain, inputs, store_path, mode="auto", priority_field="u", deadline=1.0, deadline_margin=60
    )
    assert job.counts["succeeded"] == 6
    assert billed(sandbox, "tier") == {("realtime",): 6}
    assert_ledger_is_the_accounting(sandbox, job)


def test_a_resumed_job_routes_by_its_stored_field(fast: Sandbox, store_path: Path) -> None:
    chain = PROMPT | make_openai(fast) | StrOutputParser()
    rows = [{"x": i, "u": "high" if i % 2 else "low"} for i in range(6)]

    def first_three() -> Iterator[dict[str, Any]]:
        yield from rows[:3]
        raise RuntimeError("the input source broke")

    with pytest.raises(RuntimeError, match="input source broke"):
        run_job(chain, first_three(), store_path, mode="auto", priority_field="u", job_id="job-prio")
    job = batchain.Job.open("job-prio", store=store_path, chain=chain)
    job.resume(rows, progress=False)  # no priority option: the stored field routes the rest
    assert job.counts["succeeded"] == 6
    assert tiers_by_item(fast, store_path, job) == {i: ["realtime" if i % 2 else "batch"] for i in range(6)}
    assert_ledger_is_the_accounting(fast, job)


def test_normal_items_go_flex_where_the_model_offers_it(fast: Sandbox, store_path: Path) -> None:
    # gpt-5-mini offers OpenAI's flex tier, claude-haiku-4-5 has none: a normal item's
    # OpenAI call goes flex (batch price, answered now) and its Anthropic call to a batch
    fast.configure(flex_latency_ms=0, flex_latency_jitter_ms=0)
    chain = PROMPT | RunnableParallel(
        gpt=make_openai(fast, "gpt-5-mini") | StrOutputParser(),
        claude=make_anthropic(fast) | StrOutputParser(),
    )
    levels = ["high", "normal", "low", "normal"]
    inputs = [{"x": i, "u": u} for i, u in enumerate(levels)]
    job = run_job(chain, inputs, store_path, mode="auto", priority_field="u")
    assert job.counts["succeeded"] == 4, job.errors()
    tiers = {i: sorted(t) for i, t in tiers_by_item(fast, store_path, job).items()}
    assert tiers == {
        0: ["realtime", "realtime"],
        1: ["batch", "flex"],
        2: ["batch", "batch"],
        3: ["batch", "flex"],
    }
    assert billed(fast) == accounted(job) and not fast.duplicates()
    assert_ledger_is_the_accounting(fast, job)
    # with flex routed away, normal falls to batch
    fast.reset()
    fast.configure(flex_latency_ms=0, flex_latency_jitter_ms=0)
    again = run_job(
        chain,
        inputs,
        store_path.with_name("b.sqlite"),
        mode="auto",
        priority_field="u",
        auto_routes={"normal": "batch"},
    )
    assert again.counts["succeeded"] == 4
    assert ("gpt-5-mini", "flex") not in billed(fast)
