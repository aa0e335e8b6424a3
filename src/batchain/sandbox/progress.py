"""When batch items are due: items complete progressively across the processing window.

Item ``k`` (0-based, in processing order) is due at ``start + duration * (k + 1) / total``,
so cancelling or expiring midway leaves partial results.  Pure arithmetic, so
processing never depends on how often anyone polls.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Schedule"]


@dataclass(frozen=True, slots=True)
class Schedule:
    start: float
    duration: float
    total: int

    @property
    def end(self) -> float:
        return self.start + self.duration

    def due(self, now: float) -> int:
        """How many items should have finished by ``now``."""
        if now < self.start:
            return 0
        if self.duration <= 0 or now >= self.end:
            return self.total
        return min(self.total, int(self.total * (now - self.start) / self.duration))

    def time_of(self, count: int) -> float:
        """When the first ``count`` items are due."""
        if self.total == 0 or self.duration <= 0:
            return self.start
        return self.start + self.duration * count / self.total
