from __future__ import annotations

import pytest

from batchain.sandbox.directives import NO_DIRECTIVES, parse_directives
from batchain.sandbox.lifecycle import (
    ANTHROPIC_TRANSITIONS,
    OPENAI_TRANSITIONS,
    AnthropicStatus,
    IllegalTransition,
    OpenAIStatus,
    is_terminal,
    transition,
)
from batchain.sandbox.multipart import MultipartError, parse_multipart
from batchain.sandbox.progress import Schedule

OS = OpenAIStatus
A = AnthropicStatus


def test_openai_table() -> None:
    assert set(OPENAI_TRANSITIONS) == set(OpenAIStatus)
    assert transition(OS.VALIDATING, OS.IN_PROGRESS) is OS.IN_PROGRESS
    assert transition(OS.FINALIZING, OS.EXPIRED) is OS.EXPIRED
    for terminal in (OS.COMPLETED, OS.FAILED, OS.EXPIRED, OS.CANCELLED):
        assert is_terminal(terminal)
        with pytest.raises(IllegalTransition):
            transition(terminal, OS.CANCELLING)
    with pytest.raises(IllegalTransition):
        transition(OS.VALIDATING, OS.COMPLETED)
    with pytest.raises(IllegalTransition):
        transition(OS.CANCELLING, OS.COMPLETED)


def test_anthropic_table() -> None:
    assert set(ANTHROPIC_TRANSITIONS) == set(AnthropicStatus)
    assert transition(A.IN_PROGRESS, A.CANCELING) is A.CANCELING
    assert transition(A.CANCELING, A.ENDED) is A.ENDED
    assert is_terminal(A.ENDED) and not is_terminal(A.CANCELING)
    with pytest.raises(IllegalTransition):
        transition(A.ENDED, A.IN_PROGRESS)


def test_schedule() -> None:
    schedule = Schedule(10.0, 2.0, 100)
    assert schedule.due(9.0) == 0 and schedule.due(11.0) == 50 and schedule.due(13.0) == 100
    assert schedule.time_of(25) == 10.5
    assert Schedule(10.0, 0.0, 5).due(10.0) == 5


def test_directives() -> None:
    assert parse_directives("nothing here") is NO_DIRECTIVES
    found = parse_directives('{"c":"x [[fail:503]] [[latency:20.5]] [[flaky:2]]"}')
    assert (found.fail, found.latency_ms, found.flaky) == (503, 20.5, 2)
    assert parse_directives("[[unknown:1]]") is NO_DIRECTIVES


def test_multipart() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\nline1\r\nline2\r\n--XyZ--\r\n"
    )
    parts = parse_multipart(body, 'multipart/form-data; boundary="XyZ"')
    assert [(p.name, p.filename, p.data) for p in parts] == [
        ("purpose", None, b"batch"),
        ("file", "a.jsonl", b"line1\r\nline2"),
    ]
    with pytest.raises(MultipartError):
        parse_multipart(body, "application/json")
    with pytest.raises(MultipartError):
        parse_multipart(b"garbage", "multipart/form-data; boundary=XyZ")
