"""The capacity ledger's pure decisions, and how provider refusals are recognised."""

from __future__ import annotations

import pytest

from batchain.engine.capacity import LATER_TRIES, Action, Capacity, Size
from batchain.providers.batch import (
    OPENAI_LIMITS,
    BatchLimits,
    Refusal,
    RefusalKind,
    create_refusal,
    openai_refusal,
    openai_view,
)

LANE = "openai|http://x/v1|gpt-4o-mini"
OTHER = "openai|http://x/v1|gpt-4o"
OPENAI_MESSAGE = (
    "Enqueued token limit reached for gpt-4o-mini in organization org-abc. Limit: 2,000,000 "
    "enqueued tokens. Please try submitting an equal or smaller batch after some of your "
    "enqueued batches have completed."
)


def test_openai_token_limit_exceeded_is_a_queue_refusal_with_its_stated_limit() -> None:
    error = {"code": "token_limit_exceeded", "line": None, "message": OPENAI_MESSAGE}
    errors = {"object": "list", "data": [error]}
    refusal = openai_refusal(errors)
    assert refusal == Refusal(RefusalKind.QUEUED_TOKENS, OPENAI_MESSAGE, 2_000_000)
    view = openai_view({"status": "failed", "errors": errors, "request_counts": {}})
    assert view.ended and view.refusal == refusal
    message = "The batch input file has 4 requests, which exceeds the maximum of 3 requests per batch."
    too_many = {"data": [{"code": "too_many_tasks", "message": message}]}
    assert openai_refusal(too_many) == Refusal(RefusalKind.REQUESTS, message, 3)
    # other validation failures are the requests' own: not a refusal for capacity
    assert openai_refusal({"data": [{"code": "invalid_json_line", "message": "bad"}]}) is None
    mixed = {"data": [error, {"code": "model_mismatch", "message": "y"}]}
    assert openai_refusal(mixed) is None
    assert openai_view({"status": "completed", "errors": errors}).refusal is None


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (413, "Request exceeds the maximum allowed number of bytes.", Refusal(RefusalKind.BYTES, "")),
        (400, "Error code: 400 - {'message': 'File is too large.'}", Refusal(RefusalKind.BYTES, "")),
        (
            400,
            "requests: List should have at most 7 items after validation, not 24",
            Refusal(RefusalKind.REQUESTS, "", 7),
        ),
        (
            429,
            "Number of batch requests in the processing queue would exceed your rate limit of 1,000 requests",
            Refusal(RefusalKind.QUEUED_REQUESTS, "", 1000),
        ),
        (429, "Too many batch creation requests", Refusal(RefusalKind.RATE, "")),
        (400, "custom_id: String should have at most 64 characters", None),
        (400, "Missing required parameter: 'input_file_id'.", None),
        (500, "too large", None),
        (None, "connection reset", None),
    ],
)
def test_create_refusals_are_recognised(status: int | None, message: str, expected: Refusal | None) -> None:
    found = create_refusal(status, message)
    if expected is None:
        assert found is None
    else:
        assert found is not None and (found.kind, found.limit) == (expected.kind, expected.limit)
        assert found.message == message


def test_calls_are_admitted_under_the_caps_each_that_fits() -> None:
    cap = Capacity(max_open_batches=2, max_enqueued_tokens=100)
    assert cap.admit(LANE, [40, 70, 30, 50], 0.0) == [0, 2]  # 70 does not fit after 40; 30 does
    cap.opened("b1", LANE, Size(2, 70))
    assert cap.admit(LANE, [40, 30], 0.0) == [1]
    assert cap.admit(OTHER, [90], 0.0) == [0]  # per model
    cap.opened("b2", LANE, Size(1, 10))
    assert not cap.can_open(LANE, 0.0) and cap.admit(LANE, [1], 0.0) == []  # max_open_batches
    assert cap.closed("b1") == Size(2, 70)
    assert cap.admit(LANE, [40, 50, 50], 0.0) == [0, 1]
    assert cap.too_large(100) is None
    assert "max_enqueued_tokens=100" in (cap.too_large(101) or "")


def test_nothing_open_admits_at_least_one_call() -> None:
    cap = Capacity(max_enqueued_tokens=10)
    assert cap.admit(LANE, [50, 60], 0.0) == [0]
    assert Capacity().admit(LANE, [5, 6, 7], 0.0) == [0, 1, 2]


def test_a_queue_refusal_with_others_open_waits_until_one_ends() -> None:
    cap = Capacity()
    cap.opened("b1", LANE, Size(10, 600))
    cap.opened("b2", LANE, Size(10, 400))
    decision = cap.refused(LANE, Size(10, 500), Refusal(RefusalKind.QUEUED_TOKENS, "full"), 0.0)
    assert decision.action is Action.WAIT and "2 open batches" in decision.why
    assert not cap.can_open(LANE, 0.0)  # blocked, although no cap of ours is reached
    cap.closed("b1")
    assert cap.admit(LANE, [300, 300, 300], 0.0) == [0, 1]  # learned: what was open, 1,000


def test_a_queue_refusal_with_a_stated_limit_learns_it() -> None:
    cap = Capacity()
    cap.opened("b1", LANE, Size(10, 600))
    refusal = Refusal(RefusalKind.QUEUED_TOKENS, OPENAI_MESSAGE, 700)
    assert cap.refused(LANE, Size(5, 500), refusal, 0.0).action is Action.WAIT
    cap.closed("b1")
    assert cap.admit(LANE, [300, 300, 300], 0.0) == [0, 1]


def test_a_queue_refusal_with_nothing_open_splits_and_a_lone_request_fails() -> None:
    cap = Capacity()
    decision = cap.refused(LANE, Size(30, 3000), Refusal(RefusalKind.QUEUED_TOKENS, "full"), 0.0)
    assert decision.action is Action.SPLIT
    assert cap.admit(LANE, [100] * 30, 0.0) == list(range(15))  # halved: 1,500
    lone = cap.refused(LANE, Size(1, 5000), Refusal(RefusalKind.QUEUED_TOKENS, "over", 2000), 0.0)
    assert lone.action is Action.FAIL and "over" in lone.why
    # a lone request that fits the stated limit: other work holds the queue, so it waits
    held = cap.refused(LANE, Size(1, 500), Refusal(RefusalKind.QUEUED_TOKENS, "full", 2000), 10.0)
    assert held.action is Action.LATER
    assert cap.ready_in(LANE, 10.0) == pytest.approx(1.0) and not cap.can_open(LANE, 10.5)


def test_queued_requests_refusals_cap_requests() -> None:
    cap = Capacity()
    refusal = Refusal(RefusalKind.QUEUED_REQUESTS, "queue", 8)
    assert cap.refused(LANE, Size(20, 200), refusal, 0.0).action is Action.SPLIT
    assert cap.admit(LANE, [1] * 20, 0.0) == list(range(8))
    cap.opened("b1", LANE, Size(8, 8))
    assert cap.admit(LANE, [1] * 12, 0.0) == []  # the queue holds 8: nothing more goes


def test_size_refusals_shrink_the_batches() -> None:
    cap = Capacity()
    assert cap.limits(LANE, OPENAI_LIMITS) == OPENAI_LIMITS
    assert cap.refused(LANE, Size(24, 0, 5000), Refusal(RefusalKind.BYTES, "big"), 0.0).action is Action.SPLIT
    assert cap.limits(LANE, OPENAI_LIMITS) == BatchLimits(
        OPENAI_LIMITS.max_requests, 2500, OPENAI_LIMITS.max_inputs
    )
    stated = Refusal(RefusalKind.REQUESTS, "at most 7 items", 7)
    assert cap.refused(LANE, Size(24, 0, 100), stated, 0.0).action is Action.SPLIT
    assert cap.limits(LANE, OPENAI_LIMITS) == BatchLimits(7, 2500, OPENAI_LIMITS.max_inputs)
    unstated = Refusal(RefusalKind.REQUESTS, "too many", None)
    cap.refused(LANE, Size(6, 0, 100), unstated, 0.0)
    assert cap.limits(LANE, OPENAI_LIMITS).max_requests == 3
    alone = cap.refused(LANE, Size(1, 0, 9000), Refusal(RefusalKind.BYTES, "File is too large."), 0.0)
    assert alone.action is Action.FAIL and "File is too large." in alone.why


def test_rate_refusals_back_off_and_honour_retry_after() -> None:
    cap = Capacity(backoff_min=1.0, backoff_max=4.0)
    rate = Refusal(RefusalKind.RATE, "slow down")
    delays = [cap.refused(LANE, Size(5, 50), rate, 0.0).delay for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 4.0]
    assert cap.refused(LANE, Size(5, 50), rate, 0.0, retry_after=30.0).delay == 30.0
    assert cap.ready_in(LANE, 10.0) == 20.0
    cap.opened("b1", LANE, Size(5, 50))  # a create went through: the back-off starts over
    assert cap.refused(LANE, Size(5, 50), rate, 100.0).delay == 1.0


def test_describe_names_what_is_open_and_the_caps() -> None:
    cap = Capacity(max_open_batches=3, max_enqueued_tokens=1000)
    cap.opened("b1", LANE, Size(4, 40))
    cap.hold("b2", LANE, 12)
    cap.hold("b2", LANE, 13)
    text = cap.describe(LANE)
    assert "2 open (6 requests, ~65 tokens)" in text
    assert "max_open_batches=3" in text and "cap ~1,000 enqueued tokens" in text
    assert cap.held(LANE, 5) and not cap.held(LANE, 5) and cap.held(LANE, 0)


def test_a_refused_batch_of_unknown_size_learns_only_the_stated_limit() -> None:
    cap = Capacity()
    cap.hold("b1", LANE, 12)
    cap.hold("b1", LANE, None)  # re-attached by key alone: its tokens are not known
    size = cap.closed("b1")
    assert size == Size(2, 12, 0, counted=False)
    refusal = Refusal(RefusalKind.QUEUED_TOKENS, "full", 100)
    assert cap.refused(LANE, size, refusal, 0.0).action is Action.SPLIT
    assert cap.admit(LANE, [40, 40, 40], 0.0) == [0, 1]  # the stated 100, not half of 12


def test_waiting_a_while_ends_in_a_pause_when_nothing_of_the_job_is_open() -> None:
    cap = Capacity(backoff_min=1.0, backoff_max=2.0)
    rate = Refusal(RefusalKind.RATE, "429: slow down")
    actions = [cap.refused(LANE, Size(5, 50), rate, 0.0).action for _ in range(LATER_TRIES + 1)]
    assert actions == [Action.LATER] * LATER_TRIES + [Action.PAUSE]
    pause = cap.refused(LANE, Size(5, 50), rate, 0.0)
    assert pause.action is Action.PAUSE and "slow down" in pause.why and cap.ready_in(LANE, 0.0) == 2.0
    # with a batch of the job open, it waits on (that batch will end); its end starts afresh
    cap.opened("b1", LANE, Size(1, 1))
    cap.refused(LANE, Size(5, 50), rate, 0.0)
    assert all(cap.refused(LANE, Size(5, 50), rate, 0.0).action is Action.LATER for _ in range(20))
    cap.closed("b1")
    assert cap.refused(LANE, Size(5, 50), rate, 0.0).action is Action.LATER
