"""Item results: how an item ends (an output, or an error that says where it came from),
written to the store in one statement per loop iteration, and told to a listener."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchain import serialize
from batchain.engine.batching import CallCancelled
from batchain.errors import StoreError
from batchain.providers.base import redact
from batchain.states import IllegalTransition, ItemStatus
from batchain.store.base import Store

__all__ = ["ItemEvent", "ItemListener", "Results", "error_dict", "error_json"]

log = logging.getLogger("batchain.engine.results")


@dataclass(frozen=True, slots=True)
class ItemEvent:
    idx: int
    status: ItemStatus
    input: Any
    output: Any
    error: dict[str, Any] | None
    #: the exception itself, for a listener in this process (the store keeps ``error``)
    exception: BaseException | None = None


ItemListener = Callable[[ItemEvent], None]


def error_dict(exc: BaseException, where: str) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": redact(str(exc)), "where": where}


def error_json(exc: BaseException, where: str) -> str:
    return json.dumps(error_dict(exc, where))


class Results:
    """Records how each item of a run ended."""

    def __init__(self, store: Store, job_id: str, listener: ItemListener | None) -> None:
        self.store = store
        self.job_id = job_id
        self.listener = listener
        self.done = 0
        self.failed = 0
        #: items finished in this loop iteration, written together (see flush)
        self._finished: list[tuple[int, ItemStatus, str | None, str | None]] = []

    @property
    def ended(self) -> int:
        """Items this run ended, succeeded or failed (its count among the job's runners)."""
        return self.done + self.failed

    def output(self, idx: int, value: Any, output: Any) -> None:
        """The item succeeded with ``output`` (or fails if the output cannot be stored)."""
        try:
            text = serialize.dumps(output)
        except serialize.Unserializable as exc:
            self._record(idx, value, ItemStatus.FAILED, None, error_dict(exc, "output"), exception=exc)
        else:
            self._record(idx, value, ItemStatus.SUCCEEDED, text, None, output)

    def error(self, idx: int, value: Any, exc: BaseException, where: str = "chain") -> None:
        """The item ends with ``exc`` (raised in ``where``: its chain, or its priority):
        cancelled with the job, else failed."""
        if isinstance(exc, CallCancelled):
            self._record(idx, value, ItemStatus.CANCELLED, None, error_dict(exc, "cancel"), exception=exc)
        else:
            self._record(idx, value, ItemStatus.FAILED, None, error_dict(exc, where), exception=exc)

    def _record(
        self,
        idx: int,
        value: Any,
        status: ItemStatus,
        text: str | None,
        error: dict[str, Any] | None,
        output: Any = None,
        *,
        exception: BaseException | None = None,
    ) -> None:
        if not self._finished:
            asyncio.get_running_loop().call_soon(self._flush_soon)
        self._finished.append((idx, status, text, json.dumps(error) if error is not None else None))
        if status == ItemStatus.SUCCEEDED:
            self.done += 1
        else:
            self.failed += 1
        if self.listener is not None:
            self.listener(ItemEvent(idx, status, value, output, error, exception))

    def _flush_soon(self) -> None:
        """:meth:`flush` at the end of a loop iteration. A store failure is not raised here,
        where nobody would catch it: the store tells the run, which stops, and the items stay
        pending in the store, to run again on resume."""
        with contextlib.suppress(StoreError):
            self.flush()

    def flush(self) -> None:
        """Write the items finished in this loop iteration, in one statement per status."""
        rows, self._finished = self._finished, []
        if not rows:
            return
        try:
            self.store.finish_items(self.job_id, rows)
        except IllegalTransition as exc:  # an item finished twice: a bug, but keep the rest
            log.error("%s", exc)
        self.store.commit_soon()
