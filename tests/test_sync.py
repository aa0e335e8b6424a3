"""Sync wrappers over the async engine: iterating from sync code never waits in vain."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Coroutine
from typing import Any

import pytest

from batchain import _sync


async def _count(n: int) -> AsyncGenerator[int, None]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


def test_iterate_sync_yields_every_value_and_stops_early() -> None:
    assert list(_sync.iterate_sync(lambda: _count(5))) == [0, 1, 2, 3, 4]
    it = _sync.iterate_sync(lambda: _count(1000))
    assert next(it) == 0
    it.close()  # leaving early cancels the work and joins its thread
    assert not any(t.name == "batchain-iterate" for t in threading.enumerate())


def test_a_loop_that_never_starts_raises_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_run(main: Coroutine[Any, Any, None]) -> None:
        main.close()
        raise RuntimeError("no event loop for you")

    monkeypatch.setattr(_sync.asyncio, "run", broken_run)
    done: list[BaseException] = []

    def consume() -> None:
        try:
            list(_sync.iterate_sync(lambda: _count(3)))
        except RuntimeError as exc:
            done.append(exc)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "iterate_sync waited forever for a loop that never ran"
    assert [str(e) for e in done] == ["no event loop for you"]
