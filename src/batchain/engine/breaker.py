"""Circuit breakers, one per provider host (``scheme://host:port`` of the client's base URL).

A host that refuses connections, does not resolve, or accepts none in time will not answer
the next request either; retrying every call against it only burns the retries and then
fails the items (issue 12, case 12: 4,455 attempts in 59 s, 512 items failed, and a message
that did not name the host). So connection attempts that fail this way, ``threshold`` of
them in a row within ``window`` seconds, trip the host's breaker: the calls to it wait, and
after ``probe_delay`` one request goes as a probe. If the probe reaches the host, the
breaker closes and everyone goes on; if not, it opens: nothing more is sent to the host,
no item fails for it, and the job pauses with one line naming the host
(:class:`~batchain.errors.HostUnreachable`). A call whose own retries run out on an
unreachable host opens the breaker at once instead of failing.

Any answer from the host, an HTTP error included, proves it reachable and resets its count.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from batchain.errors import HostUnreachable
from batchain.providers._sdk import unreachable
from batchain.providers.base import redact

__all__ = ["BreakerState", "Breakers", "host_of", "reason_of"]

#: connection attempts failing in a row, within WINDOW_S seconds, that trip a breaker
THRESHOLD = 5
WINDOW_S = 30.0
#: how long a tripped breaker waits before its probe
PROBE_DELAY_S = 1.0


def host_of(client: Any) -> str | None:
    """``scheme://host:port`` of an SDK client's base URL (no credentials, no path), or
    None when the client has none."""
    base = getattr(client, "base_url", None)
    return None if base is None else _host_of_url(str(base))


@functools.lru_cache(maxsize=64)
def _host_of_url(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{host}:{port}"


def reason_of(exc: BaseException) -> str:
    """Why a connection failed, in a few words: the system's reason when there is one
    (``Connection refused``, ``Name or service not known``), else what the failure says."""
    inner = unreachable(exc) or exc
    seen: set[int] = set()
    cause: BaseException | None = inner
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno and cause.strerror:
            return os.strerror(cause.errno) if cause.errno > 0 else str(cause.strerror)
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(inner).split()) or type(inner).__name__
    return redact(text)[:120]


class BreakerState(Enum):
    CLOSED = "closed"  # requests go
    PROBING = "probing"  # tripped: one probe goes, the others wait for its outcome
    OPEN = "open"  # the host is unreachable: nothing goes, the job pauses


@dataclass(slots=True)
class _Breaker:
    host: str
    state: BreakerState = BreakerState.CLOSED
    #: failed connection attempts in a row, since ``since`` (monotonic)
    failures: int = 0
    since: float = 0.0
    reason: str = ""
    probe_sent: bool = False
    #: the probe's outcome (True: the host answered), for the calls waiting on it
    outcome: asyncio.Future[bool] | None = None
    error: HostUnreachable | None = None


class Breakers:
    """The breakers of one job's hosts. ``on_open`` is told once, when one opens."""

    def __init__(
        self,
        job_id: str,
        on_open: Callable[[HostUnreachable], None],
        *,
        threshold: int = THRESHOLD,
        window: float = WINDOW_S,
        probe_delay: float = PROBE_DELAY_S,
    ) -> None:
        self.job_id = job_id
        self.on_open = on_open
        self.threshold = threshold
        self.window = window
        self.probe_delay = probe_delay
        self._hosts: dict[str, _Breaker] = {}

    def state(self, host: str) -> BreakerState:
        b = self._hosts.get(host)
        return BreakerState.CLOSED if b is None else b.state

    async def admit(self, host: str | None) -> bool:
        """Before a request to ``host``: returns when it may go (True if it is the probe);
        raises :class:`HostUnreachable` once the host's breaker is open."""
        if host is None:
            return False
        while True:
            b = self._hosts.get(host)
            if b is None or b.state is BreakerState.CLOSED:
                return False
            if b.state is BreakerState.OPEN:
                assert b.error is not None
                raise b.error
            if not b.probe_sent:
                b.probe_sent = True
                await asyncio.sleep(self.probe_delay)
                return True
            assert b.outcome is not None
            await asyncio.shield(b.outcome)

    def reached(self, host: str | None, probe: bool = False) -> None:
        """The host answered (whatever the answer): it is reachable."""
        if host is None:
            return
        b = self._hosts.get(host)
        if b is None or b.state is BreakerState.OPEN:
            return
        b.failures = 0
        if b.state is BreakerState.PROBING:
            b.state = BreakerState.CLOSED
            self._settle(b, True)

    def unreached(self, host: str | None, reason: str, *, probe: bool = False, attempts: int = 1) -> None:
        """``attempts`` connection attempts to the host failed (refused, not resolved, or
        no connection in time)."""
        if host is None:
            return
        b = self._hosts.setdefault(host, _Breaker(host))
        if b.state is BreakerState.OPEN:
            return
        now = time.monotonic()
        if b.failures == 0 or now - b.since > self.window:
            b.failures, b.since = 0, now
        b.failures += attempts
        b.reason = reason
        if b.state is BreakerState.PROBING and probe:
            self.give_up(host, reason)
        elif b.state is BreakerState.CLOSED and b.failures >= self.threshold:
            b.state = BreakerState.PROBING
            b.probe_sent = False
            b.outcome = asyncio.get_running_loop().create_future()

    def probe_abandoned(self, host: str | None) -> None:
        """The probe ended without an answer either way (the job is stopping, say): the
        next request probes instead."""
        b = self._hosts.get(host) if host is not None else None
        if b is not None and b.state is BreakerState.PROBING:
            b.probe_sent = False
            # wake those waiting for the outcome: one of them probes now
            old, b.outcome = b.outcome, asyncio.get_running_loop().create_future()
            if old is not None and not old.done():
                old.set_result(False)

    def give_up(self, host: str, reason: str) -> HostUnreachable:
        """Open the host's breaker: nothing more goes to it, and the job pauses."""
        b = self._hosts.setdefault(host, _Breaker(host, failures=1, since=time.monotonic()))
        if b.error is not None:
            return b.error
        b.state = BreakerState.OPEN
        took = time.monotonic() - b.since
        times = "once" if b.failures == 1 else f"{b.failures} times in {took:.1f} s"
        b.error = HostUnreachable(host, self.job_id, f"{reason}, {times}")
        self._settle(b, False)
        self.on_open(b.error)
        return b.error

    @staticmethod
    def _settle(b: _Breaker, reachable: bool) -> None:
        if b.outcome is not None and not b.outcome.done():
            b.outcome.set_result(reachable)
        b.outcome = None
