from __future__ import annotations

import pytest

from batchain.sandbox.limits import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_unlimited() -> None:
    limiter = RateLimiter()
    assert not limiter.enabled
    decision = limiter.admit("openai", "m", 10**9)
    assert decision.allowed and decision.requests is None and decision.tokens is None


def test_rpm_bucket_is_one_second_of_capacity_starting_full() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=600, clock=clock)  # 10 per second, burst of 10
    results = [limiter.admit("openai", "m", 1).allowed for _ in range(11)]
    assert results == [True] * 10 + [False]
    denied = limiter.admit("openai", "m", 1)
    assert denied.exceeded == "requests"
    assert denied.retry_after_s == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.admit("openai", "m", 1).allowed
    # per (provider, model)
    assert limiter.admit("openai", "other", 1).allowed
    assert limiter.admit("anthropic", "m", 1).allowed


def test_views_report_limit_remaining_reset() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=600, tpm=6000, clock=clock)
    decision = limiter.admit("openai", "m", 50)
    assert decision.requests is not None and decision.tokens is not None
    assert decision.requests.limit == 600 and decision.requests.remaining == 540
    assert decision.requests.reset_s == pytest.approx(0.1)
    assert decision.tokens.remaining == 3000  # 50 of 100 tokens used
    assert decision.tokens.reset_s == pytest.approx(0.5)


def test_tpm_debt_and_too_large() -> None:
    clock = Clock()
    limiter = RateLimiter(tpm=600, clock=clock)  # 10 tokens/s, capacity 10
    assert limiter.admit("openai", "m", 50).allowed  # full bucket admits a big request
    denied = limiter.admit("openai", "m", 5)
    assert not denied.allowed and denied.exceeded == "tokens"
    assert denied.retry_after_s == pytest.approx(4.5)  # pay back 40 debt + 5
    too_large = limiter.admit("openai", "m", 601)
    assert too_large.too_large and not too_large.allowed


def test_low_rpm_has_capacity_one() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=30, clock=clock)
    assert limiter.admit("openai", "m", 1).allowed
    denied = limiter.admit("openai", "m", 1)
    assert denied.retry_after_s == pytest.approx(2.0)


def test_configure_resets_buckets() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=60, clock=clock)
    limiter.admit("openai", "m", 1)
    assert not limiter.admit("openai", "m", 1).allowed
    limiter.configure(rpm=120, tpm=None)
    assert limiter.admit("openai", "m", 1).allowed
