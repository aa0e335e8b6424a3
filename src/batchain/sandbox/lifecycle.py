"""Batch status tables: every state and allowed transition, enforced in one function.

OpenAI::

    validating -> in_progress -> finalizing -> completed
    validating -> failed                                  (input file failed validation)
    in_progress -> finalizing -> expired                  (expiry; partial results)
    validating | in_progress | finalizing -> cancelling -> cancelled

Anthropic (``processing_status``)::

    in_progress -> ended
    in_progress -> canceling -> ended

Gemini (``metadata.state``; no cancelling state: a cancelled batch keeps its state
until it ends)::

    BATCH_STATE_PENDING -> BATCH_STATE_RUNNING -> BATCH_STATE_SUCCEEDED
    BATCH_STATE_PENDING -> BATCH_STATE_FAILED                  (input failed validation)
    BATCH_STATE_RUNNING -> BATCH_STATE_EXPIRED                 (expiry; partial results)
    BATCH_STATE_PENDING | BATCH_STATE_RUNNING -> BATCH_STATE_CANCELLED
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

__all__ = [
    "ANTHROPIC_TRANSITIONS",
    "GEMINI_TRANSITIONS",
    "OPENAI_TRANSITIONS",
    "AnthropicStatus",
    "GeminiState",
    "IllegalTransition",
    "OpenAIStatus",
    "is_terminal",
    "transition",
]


class OpenAIStatus(enum.StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class AnthropicStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    CANCELING = "canceling"
    ENDED = "ended"


class GeminiState(enum.StrEnum):
    PENDING = "BATCH_STATE_PENDING"
    RUNNING = "BATCH_STATE_RUNNING"
    SUCCEEDED = "BATCH_STATE_SUCCEEDED"
    FAILED = "BATCH_STATE_FAILED"
    CANCELLED = "BATCH_STATE_CANCELLED"
    EXPIRED = "BATCH_STATE_EXPIRED"


_O = OpenAIStatus
OPENAI_TRANSITIONS: Mapping[OpenAIStatus, frozenset[OpenAIStatus]] = {
    _O.VALIDATING: frozenset({_O.IN_PROGRESS, _O.FAILED, _O.CANCELLING}),
    _O.IN_PROGRESS: frozenset({_O.FINALIZING, _O.EXPIRED, _O.CANCELLING}),
    _O.FINALIZING: frozenset({_O.COMPLETED, _O.EXPIRED, _O.CANCELLING}),
    _O.CANCELLING: frozenset({_O.CANCELLED}),
    _O.FAILED: frozenset(),
    _O.COMPLETED: frozenset(),
    _O.EXPIRED: frozenset(),
    _O.CANCELLED: frozenset(),
}

_A = AnthropicStatus
ANTHROPIC_TRANSITIONS: Mapping[AnthropicStatus, frozenset[AnthropicStatus]] = {
    _A.IN_PROGRESS: frozenset({_A.CANCELING, _A.ENDED}),
    _A.CANCELING: frozenset({_A.ENDED}),
    _A.ENDED: frozenset(),
}

_G = GeminiState
GEMINI_TRANSITIONS: Mapping[GeminiState, frozenset[GeminiState]] = {
    _G.PENDING: frozenset({_G.RUNNING, _G.FAILED, _G.CANCELLED}),
    _G.RUNNING: frozenset({_G.SUCCEEDED, _G.EXPIRED, _G.CANCELLED}),
    _G.SUCCEEDED: frozenset(),
    _G.FAILED: frozenset(),
    _G.CANCELLED: frozenset(),
    _G.EXPIRED: frozenset(),
}

S = TypeVar("S", OpenAIStatus, AnthropicStatus, GeminiState)


def _allowed(current: OpenAIStatus | AnthropicStatus | GeminiState) -> frozenset[enum.Enum]:
    if isinstance(current, OpenAIStatus):
        return OPENAI_TRANSITIONS[current]
    if isinstance(current, GeminiState):
        return GEMINI_TRANSITIONS[current]
    return ANTHROPIC_TRANSITIONS[current]


class IllegalTransition(RuntimeError):
    def __init__(self, current: enum.Enum, target: enum.Enum) -> None:
        super().__init__(f"illegal batch transition {current.value} -> {target.value}")
        self.current = current
        self.target = target


def transition(current: S, target: S) -> S:
    """Return ``target`` if the status table allows ``current -> target``, else raise."""
    if target not in _allowed(current):
        raise IllegalTransition(current, target)
    return target


def is_terminal(status: OpenAIStatus | AnthropicStatus | GeminiState) -> bool:
    return not _allowed(status)
