"""Run a coroutine to the end from sync code, also from inside a running loop (notebooks)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

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
