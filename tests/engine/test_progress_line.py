"""The live progress line, as pure text: which fields a terminal of a given width keeps,
whole, and what the percent and ETA say for given numbers."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from batchain.engine.progress_line import (
    FIELDS,
    SEPARATOR,
    Field,
    LineState,
    eta_seconds,
    fmt_duration,
    line_fields,
    render_line,
)

#: a realtime job resumed at 300 of 1,000 items: this run did 112 more in 40 s
REALTIME = LineState(
    done=412,
    failed=3,
    total=1000,
    run_done=112,
    elapsed=40.0,
    tokens=45_120,
    cost=Decimal("0.012345"),
    budget=Decimal(5),
    budget_left=Decimal("4.987655"),
    in_flight=8,
    rate_limited=2,
    cached=7,
)
#: a batch job with batches at the provider, due in 12 minutes
BATCH = LineState(
    done=120,
    total=400,
    run_done=20,
    elapsed=30.0,
    tokens=9_000,
    cost=Decimal("0.004"),
    batches={"in progress": 3, "validating": 1, "collected": 12},
    requests_done=900,
    requests_total=4000,
    round=2,
    queued=5,
    batch_mode=True,
    batches_open=True,
    finish_in=720.0,
)


def kept(line: str) -> list[str]:
    return line.split(SEPARATOR)


@pytest.mark.parametrize("state", [REALTIME, BATCH], ids=["realtime", "batch"])
@pytest.mark.parametrize("width", [80, 120, 200])
def test_the_line_fits_and_keeps_whole_fields_in_order(state: LineState, width: int) -> None:
    every = line_fields(state)
    line = render_line(state, width)
    assert len(line) <= width - 1  # the last column stays empty: no wrap
    parts = kept(line)
    # a prefix of the fields, each whole: dropped from the right, least important first
    assert parts == [text for _, text in every[: len(parts)]]
    assert [f for f, _ in every] == sorted((f for f, _ in every), key=FIELDS.index)
    if len(parts) < len(every):  # the next field would not have fit
        assert len(line + SEPARATOR + every[len(parts)][1]) > width - 1


def test_which_fields_each_width_keeps() -> None:
    def fields(state: LineState, width: int) -> list[Field]:
        return [f for f, _ in line_fields(state)][: len(kept(render_line(state, width)))]

    core = [Field.ITEMS, Field.PERCENT, Field.ETA, Field.COST]
    at80 = fields(REALTIME, 80)
    assert at80[:4] == core and Field.TOKENS not in at80 and Field.RATE not in at80
    assert fields(REALTIME, 80) == [*core, Field.BUDGET]
    # 119 columns exactly: the last one stays empty
    assert fields(REALTIME, 120) == [*core, Field.BUDGET, Field.FAILED, Field.RATE, Field.TOKENS]
    assert len(render_line(REALTIME, 120)) == 119
    assert fields(REALTIME, 119) == [*core, Field.BUDGET, Field.FAILED, Field.RATE]
    assert fields(REALTIME, 200) == [f for f, _ in line_fields(REALTIME)]  # everything
    assert fields(BATCH, 80) == core
    assert fields(BATCH, 120) == [*core, Field.BATCHES, Field.RATE]
    assert Field.REQUESTS in fields(BATCH, 200) and Field.QUEUED in fields(BATCH, 200)
    # too narrow for anything but done/total: that field still shows
    assert render_line(REALTIME, 10) == "412/1,000 items"


def test_the_text_of_each_field() -> None:
    text = dict(line_fields(REALTIME))
    assert text[Field.ITEMS] == "412/1,000 items"
    assert text[Field.PERCENT] == "41%"
    # 588 items left at 112 items per 40 s: 210 s
    assert eta_seconds(REALTIME) == pytest.approx(210.0)
    assert text[Field.ETA] == "ETA 3m30s"
    assert text[Field.COST] == "cost $0.012345"
    assert text[Field.BUDGET] == "budget $4.9877 left of $5"
    assert text[Field.FAILED] == "3 failed"
    assert text[Field.RATE] == "2.8 items/s"
    assert text[Field.TOKENS] == "tokens 45,120"
    assert text[Field.IN_FLIGHT] == "8 in flight"
    assert text[Field.RATE_LIMITED] == "2 rate-limited" and text[Field.CACHED] == "7 cache hits"
    batch = dict(line_fields(BATCH))
    assert batch[Field.PERCENT] == "30%"
    assert batch[Field.ETA] == "ETA 12m00s"  # the forecast of the batches, not the pace
    assert batch[Field.BATCHES] == "batches 3 in progress, 1 validating, 12 collected"
    assert batch[Field.REQUESTS] == "requests 900/4,000 at the provider"
    assert batch[Field.ROUND] == "round 2" and batch[Field.QUEUED] == "5 queued"
    assert Field.IN_FLIGHT not in batch and Field.BUDGET not in batch and Field.FAILED not in batch


def test_percent_and_eta_at_the_edges() -> None:
    started = replace(REALTIME, done=300, run_done=0, elapsed=0.5)
    assert dict(line_fields(started))[Field.ETA] == "ETA ?"  # no pace yet
    done = replace(REALTIME, done=1000, elapsed=75.0)
    assert dict(line_fields(done))[Field.PERCENT] == "100%"
    assert dict(line_fields(done))[Field.ETA] == "done in 1m15s"
    assert dict(line_fields(replace(REALTIME, done=999)))[Field.PERCENT] == "99%"  # floored
    unknown_finish = replace(BATCH, finish_in=None)
    assert dict(line_fields(unknown_finish))[Field.ETA] == "ETA ?"
    # waiting for the next batch: the pace of the items so far says nothing
    assert eta_seconds(replace(BATCH, batches_open=False)) is None
    assert eta_seconds(replace(BATCH, batches_open=False, queued=0)) == pytest.approx(280 * 30 / 20)
    assert [fmt_duration(s) for s in (0, 59.4, 61, 3599, 3600 * 5 + 60 * 7, 86400 * 2 + 3600 * 4)] == [
        "0s",
        "59s",
        "1m01s",
        "59m59s",
        "5h07m",
        "2d04h",
    ]


def test_a_stream_shows_the_rows_read_so_far() -> None:
    stream = replace(REALTIME, total=500, total_known=False)
    fields = dict(line_fields(stream))
    assert fields[Field.ITEMS] == "412/500+ items"
    assert Field.PERCENT not in fields and Field.ETA not in fields
    assert dict(line_fields(replace(REALTIME, total=None)))[Field.ITEMS] == "412 items"
    unpriced = replace(REALTIME, unpriced=True)
    assert dict(line_fields(unpriced))[Field.COST] == "cost $0.012345 + unpriced"
    spent = replace(REALTIME, budget_left=Decimal("-0.1"))  # a last call may overshoot a little
    assert dict(line_fields(spent))[Field.BUDGET] == "budget $0.000000 left of $5"
    big = replace(REALTIME, cost=Decimal("123.456"), budget=Decimal("250.5"), budget_left=Decimal("127.044"))
    assert dict(line_fields(big))[Field.COST] == "cost $123.46"
    assert dict(line_fields(big))[Field.BUDGET] == "budget $127.04 left of $250.50"
    assert dict(line_fields(replace(REALTIME, done=999, run_done=999)))[Field.ETA] == "ETA 1s"  # not 0s
