"""The feeder alone: what it says about the run's end while it holds items."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from batchain.engine.feed import Feeder, Returns, Row, Window
from batchain.engine.lifecycle import RunControl


class _Inputs:
    """No new inputs; evicted items come back as rows with no wait."""

    async def items(self, inputs: Any, **_: Any) -> AsyncIterator[Row]:
        rows: tuple[Row, ...] = ()
        for row in rows:
            yield row

    def returned(self, idxs: list[int], *, waits: bool = False) -> Iterator[Row]:
        for idx in idxs:
            yield idx, {"x": idx}, None


def test_items_taken_back_keep_the_run_from_ending_until_they_are_admitted() -> None:
    """Nine items come back from an ended batch into a window of eight, and each ends at
    admission (a cancelling run: their calls go nowhere). Between the two chunks the feeder
    yields, holding the ninth: it is neither waiting nor live, and the run must not end
    there (it did: the cancel left it pending)."""

    async def scenario() -> list[int]:
        changed, control = asyncio.Event(), RunControl()
        window = Window(8, control, changed)
        returns = Returns(live=set(), changed=changed)
        admitted: list[int] = []

        class Bulk:
            async def park_resumed(self) -> tuple[set[str], int]:
                return set(), 0

            async def add(self, rows: list[Row]) -> None:
                admitted.extend(idx for idx, _, _ in rows)
                for _ in rows:
                    window.release()  # the item ended at once

        feeder = Feeder(_Inputs(), window, control, changed, lambda i, v: None, Bulk(), returns)
        feeding = asyncio.create_task(feeder.feed(None))
        ended_early = []
        for _ in range(1000):
            await asyncio.sleep(0)
            if feeder.exhausted and len(admitted) == 0:
                for idx in range(9):
                    returns.keep(idx, "ended")  # a batch no longer live: ready at once
            elif feeder.finished and len(admitted) < 9:
                ended_early.append(len(admitted))
            if len(admitted) == 9:
                break
        feeding.cancel()
        assert admitted == list(range(9))
        return ended_early

    assert asyncio.run(scenario()) == []
