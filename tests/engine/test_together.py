"""The questions item coroutines ask in one turn of the event loop are answered together
(``calls._Together``): each asker gets its own answer or the error, none waits forever,
and a cancelled asker's answer is handed back (a call it was to send fails its sharers)."""

from __future__ import annotations

import asyncio

import pytest

from batchain.engine.calls import _Together


def test_questions_of_one_turn_are_answered_in_one_call() -> None:
    calls: list[list[int]] = []

    async def answer(questions: list[int]) -> list[int]:
        calls.append(questions)
        return [q * 10 for q in questions]

    async def main() -> list[int]:
        together: _Together[int, int] = _Together(answer, "t")
        return list(await asyncio.gather(*(together.ask(q) for q in range(5))))

    assert asyncio.run(main()) == [0, 10, 20, 30, 40]
    assert calls == [[0, 1, 2, 3, 4]]


def test_an_error_reaches_every_asker_and_the_next_turn_is_asked_anew() -> None:
    async def answer(questions: list[int]) -> list[int]:
        if 0 in questions:
            raise RuntimeError("store unreachable")
        return questions

    async def main() -> None:
        together: _Together[int, int] = _Together(answer, "t")
        results = await asyncio.gather(together.ask(0), together.ask(1), return_exceptions=True)
        assert [str(r) for r in results] == ["store unreachable"] * 2
        assert await asyncio.wait_for(together.ask(2), 5) == 2

    asyncio.run(main())


def test_a_cancelled_asker_is_left_out_or_its_answer_handed_back() -> None:
    asked: list[list[str]] = []
    abandoned: list[str] = []

    async def main() -> None:
        gate = asyncio.Event()

        async def answer(questions: list[str]) -> list[str]:
            asked.append(questions)
            await gate.wait()  # an admit that awaits (a resumed call being parked)
            return [q.upper() for q in questions]

        together: _Together[str, str] = _Together(answer, "t", lambda a, _exc: abandoned.append(a))
        early, kept, during = (asyncio.ensure_future(together.ask(q)) for q in ("early", "kept", "during"))
        await asyncio.sleep(0)  # all three are queued; the turn's answer runs next
        early.cancel()  # queued, cancelled before its turn: left out
        await asyncio.sleep(0.01)
        during.cancel()  # while the answers are being found: handed back once found
        gate.set()
        assert await asyncio.wait_for(kept, 5) == "KEPT"
        with pytest.raises(asyncio.CancelledError):
            await early
        with pytest.raises(asyncio.CancelledError):
            await during

    asyncio.run(main())
    assert asked == [["kept", "during"]]
    assert abandoned == ["DURING"]
