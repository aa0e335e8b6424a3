"""The circuit breaker's rules, without HTTP (the chaos tests drive it over real sockets)."""

from __future__ import annotations

import asyncio

import pytest

from batchain.engine.breaker import Breakers, BreakerState, host_of
from batchain.errors import HostUnreachable

HOST = "http://api.example:443"


def _breakers(opened: list[HostUnreachable]) -> Breakers:
    return Breakers("job-1", opened.append, threshold=3, window=30.0, probe_delay=0.01)


def test_failures_in_a_row_trip_it_and_an_answer_resets_the_count() -> None:
    async def main() -> None:
        opened: list[HostUnreachable] = []
        b = _breakers(opened)
        b.unreached(HOST, "Connection refused")
        b.unreached(HOST, "Connection refused")
        b.reached(HOST)  # any answer, an HTTP error too: reachable
        b.unreached(HOST, "Connection refused")
        b.unreached(HOST, "Connection refused")
        assert b.state(HOST) is BreakerState.CLOSED
        b.unreached(HOST, "Connection refused")
        assert b.state(HOST) is BreakerState.PROBING
        assert not opened

    asyncio.run(main())


def test_a_probe_that_reaches_the_host_lets_everyone_go() -> None:
    async def main() -> None:
        b = _breakers([])
        b.unreached(HOST, "x", attempts=3)
        probe = asyncio.create_task(b.admit(HOST))
        waiter = asyncio.create_task(b.admit(HOST))
        assert await probe is True  # the first request after the trip is the probe
        assert not waiter.done()  # the others wait for its outcome
        b.reached(HOST, probe=True)
        assert await waiter is False
        assert b.state(HOST) is BreakerState.CLOSED

    asyncio.run(main())


def test_a_failed_probe_opens_it_once_and_nothing_more_goes() -> None:
    async def main() -> None:
        opened: list[HostUnreachable] = []
        b = _breakers(opened)
        b.unreached(HOST, "Connection refused", attempts=3)
        assert await b.admit(HOST) is True
        waiter = asyncio.create_task(b.admit(HOST))
        await asyncio.sleep(0)
        b.unreached(HOST, "Connection refused", probe=True)
        with pytest.raises(HostUnreachable):
            await waiter
        with pytest.raises(HostUnreachable) as caught:
            await b.admit(HOST)
        assert len(opened) == 1 and opened[0] is caught.value
        assert caught.value.host == HOST and "job-1 is paused" in str(caught.value)
        assert "Connection refused, 4 times in" in str(caught.value)
        assert await b.admit("http://other:80") is False  # other hosts are not affected

    asyncio.run(main())


def test_host_of_a_client_is_scheme_host_and_port_only() -> None:
    class Client:
        base_url = "https://user:secret@api.example.com/v1/deployments/x?key=sk-1"

    assert host_of(Client()) == "https://api.example.com:443"
    Client.base_url = "http://[::1]:8080/v1"
    assert host_of(Client()) == "http://[::1]:8080"
    assert host_of(object()) is None
