"""Run options: what a caller can set for a job (limits, batch policy, auto policy, budget).

Stored with the job (:meth:`RunOptions.to_record`), so a resume in another process runs
with the same options; ``callbacks`` and a ``priority`` function cannot be stored and are
passed again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunOptions"]


@dataclass(slots=True)
class RunOptions:
    mode: str = "realtime"
    max_concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 6
    timeout: float = 120.0
    cache: bool = True
    #: items running at once: realtime 4 x max_concurrency (at least 256), batch 50,000
    window: int | None = None
    progress: bool = True
    #: threads for sync steps (sync lambdas calling models hold one while they wait)
    threads: int = 256
    #: batch mode: first and longest wait between polls of a provider batch (seconds)
    poll_min: float = 1.0
    poll_max: float = 60.0
    #: batch mode: most requests in one provider batch (the provider's own limit applies too)
    max_batch_size: int | None = None
    #: batch mode: "realtime" lets models without a Batch API adapter run at full price
    fallback: str | None = None
    #: auto mode: an input field, or a function of the input; urgent (> 0 / true) items
    #: run realtime, the others batch
    priority: Any = None
    #: auto mode: epoch seconds by which everything should be done; ``deadline_margin``
    #: seconds before it, calls still at a provider are cancelled there and sent realtime
    deadline: float | None = None
    deadline_margin: float = 300.0
    #: a hard cap in USD across realtime and batch (None: no cap)
    budget: float | None = None
    #: price overrides: a dict, or the path of a JSON/TOML/YAML file (see batchain.cost)
    prices: Any = None
    callbacks: list[Any] = field(default_factory=list)

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    def to_record(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "callbacks"}
        if not isinstance(d["priority"], str | None):
            d["priority"] = None  # a function cannot be stored: pass it again on resume
        return d

    def is_urgent(self, value: Any) -> bool:
        """Auto mode: does this item run realtime? (priority > 0, or a true value)"""
        p = self.priority
        if p is None:
            return False
        try:
            got = p(value) if callable(p) else value.get(p) if isinstance(value, dict) else None
        except Exception:  # a priority that cannot be computed is not urgent
            return False
        if isinstance(got, bool) or got is None:
            return bool(got)
        if isinstance(got, int | float):
            return got > 0
        text = str(got).strip().lower()
        try:
            return float(text) > 0  # CSV gives numbers as strings
        except ValueError:
            return text in ("true", "yes", "y", "urgent", "high", "realtime")
