"""Fault directives embedded in prompt text.

Directives are matched anywhere in the request body (so in any message text) and act
identically in realtime requests and inside batches, which makes per-item fault tests
deterministic:

``[[fail:400]]``   permanent failure with the provider's error body for that status
                   (any 4xx/5xx works: 400, 401, 404, 429, 500, 503, 529...)
``[[latency:200]]`` realtime latency in milliseconds for this request
``[[flaky:N]]``    the first N times this exact request hash is seen, fail with a 500
                   (realtime) or an errored/500 item (batch); afterwards succeed
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["NO_DIRECTIVES", "Directives", "parse_directives"]

_RE = re.compile(r"\[\[(fail|latency|flaky):(\d+(?:\.\d+)?)\]\]")


@dataclass(frozen=True, slots=True)
class Directives:
    fail: int | None = None
    latency_ms: float | None = None
    flaky: int | None = None


NO_DIRECTIVES = Directives()


def parse_directives(text: str) -> Directives:
    """Directives found in ``text`` (typically the request's canonical JSON)."""
    if "[[" not in text:
        return NO_DIRECTIVES
    fail: int | None = None
    latency: float | None = None
    flaky: int | None = None
    for name, value in _RE.findall(text):
        if name == "fail" and fail is None:
            fail = int(float(value))
        elif name == "latency" and latency is None:
            latency = float(value)
        elif name == "flaky" and flaky is None:
            flaky = int(float(value))
    if fail is None and latency is None and flaky is None:
        return NO_DIRECTIVES
    return Directives(fail=fail, latency_ms=latency, flaky=flaky)
