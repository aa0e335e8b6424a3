"""Batch mode for ``prompt | model [| parser]`` chains without a coroutine per item.

In batch mode an item of such a chain does one thing: it makes one model call and waits
for the provider batch that answers it. The ordinary path keeps a task per item for that
wait; over tens of thousands of items the tasks, futures and LangChain objects cost more
than everything else the client does. Here an item is a row: its request comes from the
chain's :class:`~batchain.chains.fastpath.RequestTemplate`, its call is looked up, shared or
parked in bulk, and when the call's answer arrives the model's own parser and the chain's
output parser turn it into the item's output.

The rules are the ordinary path's: the same request, key and store records; an answered
call replays, an identical call in flight is shared, a call an earlier run put in a batch
is found there, never sent again. Items the template cannot build go the ordinary way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchain.chains.fastpath import RequestTemplate
from batchain.engine.batching import BatchCoordinator, CallCancelled, Parked
from batchain.engine.calls import CallManager, finish_result, must_begin
from batchain.providers.base import Body, CallRequest, ProviderAdapter
from batchain.states import CallStatus
from batchain.store.records import CallRecord
from batchain.store.sqlite import SQLiteStore

__all__ = ["BulkItems", "Wait"]

#: how an item ends: (idx, input, output, exception), the exception None on success
Settle = Callable[[int, Any, Any, BaseException | None], None]
#: an item the bulk path hands back to the ordinary path
Spill = Callable[[int, Any], None]
#: the call an earlier run noted an item waits for: its key, and its record if stored
Wait = tuple[str, CallRecord | None]


def _settled_elsewhere(record: CallRecord | None) -> bool:
    """Is this call answered, or in a provider batch (or on its way to one)? Then its
    request need not be built again to wait for it."""
    if record is None:
        return False
    if record.status == CallStatus.SUCCEEDED:
        return bool(record.response)
    return record.batch_id is not None and record.status in (CallStatus.PENDING, CallStatus.SUBMITTED)


@dataclass(slots=True)
class _Entry:
    """A call of this run and the items waiting on it (more than one when shared)."""

    request: CallRequest
    adapter: ProviderAdapter
    items: list[tuple[int, Any]]


class _Waiter:
    """The :class:`~batchain.engine.batching.Waiter` of a bulk call: hands the answer to its items."""

    __slots__ = ("_done", "_key", "_owner")

    def __init__(self, owner: BulkItems, key: str) -> None:
        self._owner = owner
        self._key = key
        self._done = False

    def done(self) -> bool:
        return self._done

    def answer(self, text: str, data: Any) -> None:
        self._done = True
        self._owner.resolved(self._key, text, data, None)

    def fail(self, exc: BaseException) -> None:
        self._done = True
        self._owner.resolved(self._key, None, None, exc)


class BulkItems:
    """The items of one batch-mode run of a templated chain, as rows instead of tasks."""

    def __init__(
        self,
        *,
        template: RequestTemplate,
        calls: CallManager,
        batch: BatchCoordinator,
        store: SQLiteStore,
        job_id: str,
        settle: Settle,
        spill: Spill,
        stubs: bool = True,
    ) -> None:
        #: whether calls found by key may skip rebuilding their request (off under a
        #: budget, whose reservations need each request's size)
        self.stubs = stubs
        self.template = template
        self.calls = calls
        self.batch = batch
        self.store = store
        self.job_id = job_id
        self.settle = settle
        self.spill = spill
        #: calls of this run that have not been answered, by key
        self.entries: dict[str, _Entry] = {}
        #: items waiting on those calls
        self.outstanding = 0

    async def add(self, rows: list[tuple[int, Any, Wait | None]]) -> None:
        """Start ``rows`` (``(idx, input, wait)``): find, share, replay or park each call.

        ``wait`` is the call an earlier run noted the item waits for, with its record: when
        that call is answered or at a provider, the item's request is not built again."""
        built: list[tuple[int, Any, ProviderAdapter, CallRequest, CallRecord | None, bool]] = []
        for idx, value, wait in rows:
            if wait is not None and self.stubs and _settled_elsewhere(wait[1]):
                key, record = wait
                built.append((idx, value, self.template.adapter, self.template.stub(key), record, True))
                continue
            try:
                adapter, request = self.template.build(value)
            except Exception as exc:  # the prompt rejects the input: the item's error
                self.settle(idx, value, None, exc)
                continue
            if not adapter.batchable:
                self.spill(idx, value)  # e.g. an API without a batch endpoint
                continue
            built.append((idx, value, adapter, request, None, False))
        lookup = [r.key for _, _, _, r, _, stub in built if not stub and r.key not in self.entries]
        stored = self.store.get_calls(lookup)
        fresh: list[Parked] = []
        resumed: list[tuple[Parked, str]] = []
        begin: list[tuple[str, str, str, str, str]] = []
        waits: list[tuple[int, str]] = []
        for idx, value, adapter, request, known, stub in built:
            key = request.key
            if not stub:
                waits.append((idx, key))
            entry = self.entries.get(key)
            if entry is not None:
                entry.items.append((idx, value))
                self.outstanding += 1
                self.calls.share(key, idx)
                continue
            record = known if stub else stored.get(key)
            answer = self.calls.replayed(record, idx)
            if answer is not None:
                self._finish(idx, value, adapter, request, answer)
                continue
            if must_begin(record):
                begin.append((key, request.provider, request.model, request.endpoint, request.body_hash))
                record = None
            self.entries[key] = _Entry(request, adapter, [(idx, value)])
            self.outstanding += 1
            parked = Parked(
                request,
                adapter,
                self.calls.client_for(adapter, self.template.fast.model),
                _Waiter(self, key),
                idx,
                attempts=record.attempts if record is not None else 0,
                rebuild=self._rebuilder(value) if stub else None,
            )
            if record is not None and record.batch_id is not None:
                resumed.append((parked, record.batch_id))
            else:
                fresh.append(parked)
        if begin:
            self.store.begin_calls(begin, self.job_id)
        if waits:
            self.store.set_waits(self.job_id, waits)
        self.store.commit_soon()
        self.batch.park_new(fresh)
        for parked, uid in resumed:
            await self.batch.park(parked, uid)

    def _rebuilder(self, value: Any) -> Callable[[], CallRequest]:
        return lambda: self.template.build(value)[1]

    def resolved(self, key: str, text: str | None, data: Any, exc: BaseException | None) -> None:
        """A parked call got its answer (or its error): finish every item waiting on it."""
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        for n, (idx, value) in enumerate(entry.items):
            self.outstanding -= 1
            if text is None:
                self.settle(idx, value, None, exc or CallCancelled("no answer"))
            else:
                # the parsed body serves one item; items sharing the call parse their own
                # copy, so no two outputs share mutable parts
                body = data if n == 0 and data is not None else text
                self._finish(idx, value, entry.adapter, entry.request, body)

    def _finish(
        self, idx: int, value: Any, adapter: ProviderAdapter, request: CallRequest, body: Body
    ) -> None:
        fast = self.template.fast
        try:
            result = adapter.parse(fast.model, request, body)
            finish_result(fast.model, result, None)
            generations = result.generations
            output = fast.parse(generations[0].message, generations)
        except Exception as exc:  # the model's or the chain's parser rejects the answer
            self.settle(idx, value, None, exc)
        else:
            self.settle(idx, value, output, None)
