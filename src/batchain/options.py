"""Run options: the closed vocabularies a job is run with.

Both enums are :class:`~enum.StrEnum`, so a member *is* its string: ``Mode.BATCH ==
"batch"``, it is stored in the job store as ``batch``, and plain strings passed by users or
read back from a store compare equal to the members.

This module imports nothing heavy: the command line imports it for ``--help``.
"""

from __future__ import annotations

from enum import StrEnum

from batchain.errors import InvalidOption

__all__ = ["MODES", "Mode", "Tier"]


class Mode(StrEnum):
    """How a job sends its model calls."""

    #: every call now, under the concurrency cap and the provider's rate limits
    REALTIME = "realtime"
    #: every call through the provider's Batch API (half price), round after round
    BATCH = "batch"
    #: urgent items realtime, the others batch; everything realtime near the deadline
    AUTO = "auto"

    @classmethod
    def parse(cls, value: str) -> Mode:
        """The member for ``value`` (a member or its string); :class:`InvalidOption`
        naming the value and the allowed ones otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise InvalidOption(f"mode must be one of {', '.join(MODES)}; got {value!r}") from None


#: the modes' strings, in the order they are documented
MODES: tuple[str, ...] = tuple(m.value for m in Mode)


class Tier(StrEnum):
    """How one call was sent, and so which price list it pays (``calls.tier`` in the store).

    A provider's *service tier* (OpenAI's ``flex``, ``priority``...) is something else: the
    provider's own word, read from each response and kept as the provider says it (see
    :func:`batchain.cost.prices.normalize_service_tier`)."""

    REALTIME = "realtime"
    BATCH = "batch"
