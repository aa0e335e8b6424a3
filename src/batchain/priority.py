"""Auto mode's priorities: each item's level (:class:`Priority`), where it comes from
(:class:`PriorityRule`: one level for the job, an input field, or a function of the input),
and where a call of an item at that level goes (:func:`route`, to a :class:`Route`).

A level is ``high``, ``normal`` or ``low`` (any case), a number (positive: high, 0:
normal, negative: low; CSV gives numbers as strings, read as numbers) or a boolean (true:
high, false: normal; also the strings ``true``/``false``). A missing value (no such field,
``None``, an empty CSV cell) is ``normal``. Anything else is an error that names it: for a
job-wide level, :class:`~batchain.errors.InvalidOption` before anything runs; for one
item, :class:`~batchain.errors.InvalidPriority`, that item's error (the others run on).

This module imports nothing heavy: the command line imports it for ``--help``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from batchain.errors import InvalidOption, InvalidPriority

__all__ = [
    "ALLOWED",
    "DEFAULT_ROUTES",
    "Priority",
    "PriorityRule",
    "Route",
    "auto_routes",
    "parse_level",
    "route",
]


class Priority(StrEnum):
    """How soon an item is wanted (auto mode)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Route(StrEnum):
    """Where auto mode sends one call."""

    #: now, at full price
    REALTIME = "realtime"
    #: OpenAI's flex tier where the model offers it (batch price, a slower synchronous call)
    FLEX = "flex"
    #: through the provider's Batch API
    BATCH = "batch"


#: auto mode's routes by level; ``flex`` falls to ``batch`` where a call cannot use it
DEFAULT_ROUTES: Mapping[Priority, Route] = {
    Priority.HIGH: Route.REALTIME,
    Priority.NORMAL: Route.FLEX,
    Priority.LOW: Route.BATCH,
}

_LEVELS = frozenset(p.value for p in Priority)
_ROUTES = frozenset(r.value for r in Route)

#: what a priority may be, as error messages say it
ALLOWED = "high, normal, low, a number (positive: high, 0: normal, negative: low) or true/false"


def route(
    level: Priority,
    *,
    deadline_near: bool,
    flex: bool,
    routes: Mapping[Priority, Route] = DEFAULT_ROUTES,
) -> Route:
    """Where a call of an item at ``level`` goes: realtime once the deadline is near
    (nothing more may wait on a provider), else the level's route, with flex falling to
    batch when the call cannot use it (``flex`` false)."""
    if deadline_near:
        return Route.REALTIME
    chosen = routes[level]
    if chosen is Route.FLEX and not flex:
        return Route.BATCH
    return chosen


def parse_level(value: Any) -> Priority | None:
    """The level ``value`` means; None if it is missing (``None``, an empty string);
    ``ValueError`` if it means none."""
    if value is None:
        return None
    if isinstance(value, Priority):
        return value
    if isinstance(value, bool):
        return Priority.HIGH if value else Priority.NORMAL
    if isinstance(value, int | float):
        return _by_sign(float(value))
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip().lower()
    if not text:
        return None
    if text in _LEVELS:
        return Priority(text)
    if text in ("true", "false"):
        return Priority.HIGH if text == "true" else Priority.NORMAL
    try:
        number = float(text)  # CSV gives numbers as strings
    except ValueError:
        raise ValueError(value) from None
    return _by_sign(number)


def _by_sign(number: float) -> Priority:
    if math.isnan(number):
        raise ValueError(number)
    return Priority.HIGH if number > 0 else Priority.LOW if number < 0 else Priority.NORMAL


def auto_routes(given: Mapping[str, str] | None) -> dict[Priority, Route]:
    """``auto_routes`` (level -> route, for the levels to change) over the default;
    :class:`InvalidOption` naming a key or value it does not know."""
    routes = dict(DEFAULT_ROUTES)
    if given is None:
        return routes
    if not isinstance(given, Mapping):
        raise InvalidOption("auto_routes must map levels (high, normal, low) to realtime, flex or batch")
    for level, where in given.items():
        if level not in _LEVELS or where not in _ROUTES:
            raise InvalidOption(
                f"auto_routes[{level!r}] = {where!r}: levels are high, normal, low; routes are "
                "realtime, flex, batch"
            )
        routes[Priority(level)] = Route(where)
    return routes


@dataclass(frozen=True, slots=True)
class PriorityRule:
    """Where each item's level comes from: one ``level`` for every item, an input
    ``field``, or a ``function`` of the input (exactly one of them)."""

    level: Priority | None = None
    field: str | None = None
    function: Callable[[Any], Any] | None = None

    @classmethod
    def of(cls, priority: Any, priority_field: str | None) -> PriorityRule | None:
        """The rule for ``priority`` (a level or a function) and ``priority_field``; None
        if neither is given. :class:`InvalidOption` for a value that is neither, or both."""
        if priority is not None and priority_field is not None:
            raise InvalidOption("give priority= (a level or a function) or priority_field=, not both")
        if priority_field is not None:
            if not isinstance(priority_field, str) or not priority_field:
                raise InvalidOption(
                    f"priority_field must be the name of an input field; got {priority_field!r}"
                )
            return cls(field=priority_field)
        if priority is None:
            return None
        if callable(priority):
            return cls(function=priority)
        try:
            level = parse_level(priority)
        except ValueError:
            hint = (
                f"; for an input field, use priority_field={priority!r}" if isinstance(priority, str) else ""
            )
            raise InvalidOption(f"priority {priority!r} is not a level: use {ALLOWED}{hint}") from None
        return cls(level=level or Priority.NORMAL)

    def level_of(self, idx: int, value: Any) -> Priority:
        """Item ``idx``'s level, from its input ``value``; :class:`InvalidPriority` naming
        the item, where the value came from, the value and what is allowed."""
        if self.level is not None:
            return self.level
        if self.function is not None:
            name = getattr(self.function, "__name__", "function")
            try:
                got = self.function(value)
            except Exception as exc:
                raise InvalidPriority(
                    f"item {idx}: priority function {name} raised {type(exc).__name__}: {exc}"
                ) from exc
            return self._parsed(idx, got, f"priority function {name} returned")
        assert self.field is not None
        if not isinstance(value, Mapping):
            raise InvalidPriority(
                f"item {idx}: priority_field {self.field!r} needs a dict input; got {type(value).__name__}"
            )
        return self._parsed(idx, value.get(self.field), f"priority_field {self.field!r} is")

    @staticmethod
    def _parsed(idx: int, got: Any, said: str) -> Priority:
        try:
            return parse_level(got) or Priority.NORMAL
        except ValueError:
            raise InvalidPriority(f"item {idx}: {said} {got!r}, not a level: use {ALLOWED}") from None
