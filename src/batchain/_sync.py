"""Run a coroutine, or iterate an async iterator, from sync code, also from inside a
running loop (notebooks)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["iterate_sync", "run_sync"]

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end, also from inside a running loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    values: list[T] = []
    errors: list[BaseException] = []

    # the caller's context variables (tracers switched on by a context manager, for one)
    # follow the job into its thread, as they would into asyncio.run's task
    context = contextvars.copy_context()

    def target() -> None:
        try:
            values.append(context.run(asyncio.run, coro))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="batchain-run")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return values[0]


class _Raised:
    """What the background loop raised, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def iterate_sync(make: Callable[[], AsyncGenerator[T, None]], name: str = "batchain-iterate") -> Iterator[T]:
    """Iterate the async generator ``make()`` from sync code: it runs on its own loop in a
    background thread. Leaving early cancels it there (and waits until it has closed)."""
    # unbounded: the producer is paced by the work itself, and a full queue must never
    # block the job's thread while the consumer is gone
    out: queue.Queue[tuple[T] | _Raised | None] = queue.Queue()
    #: the loop and task, once they run; None if the thread ended before (then ``out``
    #: says why): never waited for in vain
    started: queue.Queue[tuple[asyncio.AbstractEventLoop, asyncio.Task[None]] | None] = queue.Queue()

    async def pump() -> None:
        agen = make()
        try:
            async for value in agen:
                out.put((value,))
        finally:
            await agen.aclose()

    async def main() -> None:
        task = asyncio.create_task(pump())
        started.put((asyncio.get_running_loop(), task))
        with contextlib.suppress(asyncio.CancelledError):
            await task

    context = contextvars.copy_context()  # the caller's tracers follow, as in run_sync

    def target() -> None:
        try:
            context.run(asyncio.run, main())
        except BaseException as exc:
            out.put(_Raised(exc))
        finally:
            out.put(None)
            started.put(None)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    running = started.get()
    if running is None:  # the loop never ran the work: its error, if any, is in ``out``
        thread.join()
        while (got := out.get()) is not None:
            if isinstance(got, _Raised):
                raise got.exc
        return
    loop, task = running
    try:
        while (got := out.get()) is not None:
            if isinstance(got, _Raised):
                raise got.exc
            yield got[0]
    finally:
        # a consumer that left early: stop the work now, not at its next item (the loop
        # may have closed meanwhile: then there is nothing to stop)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(task.cancel)
        thread.join()
