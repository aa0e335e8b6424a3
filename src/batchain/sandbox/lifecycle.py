"""Batch status tables: every state and allowed transition, enforced in one function.

OpenAI::

    validating -> in_progress -> finalizing -> completed
    validating -> failed                                  (input file failed validation)
    in_progress -> finalizing -> expired                  (expiry; partial results)
    validating | in_progress | finalizing -> cancelling -> cancelled

Anthropic (``processing_status``)::

    in_progress -> ended
    in_progress -> canceling -> ended
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

__all__ = [
    "ANTHROPIC_TRANSITIONS",
    "OPENAI_TRANSITIONS",
    "AnthropicStatus",
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

S = TypeVar("S", OpenAIStatus, AnthropicStatus)


class IllegalTransition(RuntimeError):
    def __init__(self, current: enum.Enum, target: enum.Enum) -> None:
        super().__init__(f"illegal batch transition {current.value} -> {target.value}")
        self.current = current
        self.target = target


def transition(current: S, target: S) -> S:
    """Return ``target`` if the status table allows ``current -> target``, else raise."""
    allowed: frozenset[enum.Enum]
    if isinstance(current, OpenAIStatus):
        allowed = frozenset(OPENAI_TRANSITIONS[current])
    else:
        allowed = frozenset(ANTHROPIC_TRANSITIONS[current])
    if target not in allowed:
        raise IllegalTransition(current, target)
    return target


def is_terminal(status: OpenAIStatus | AnthropicStatus) -> bool:
    if isinstance(status, OpenAIStatus):
        return not OPENAI_TRANSITIONS[status]
    return not ANTHROPIC_TRANSITIONS[status]
