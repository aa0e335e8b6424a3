"""Batch mode for ``prompt | model [| parser]`` chains, and sequences of them, without a
coroutine per item.

In batch mode an item of such a chain does one thing per stage: it makes one model call
and waits for the provider batch that answers it. The ordinary path keeps a task per item
for that wait, and replays an evicted item through LangChain's machinery; over tens of
thousands of items the tasks, futures and LangChain objects cost more than everything else
the client does. Here an item is a row: its request comes from its stage's
:class:`~batchain.chains.fastpath.RequestTemplate`, its call is looked up, shared or parked
in bulk, and when the call's answer arrives the model's own parser and the stage's output
parser turn it into the stage's output: the item's, or the next stage's input.

The rules are the ordinary path's: the same requests, keys and store records; an answered
call replays, an identical call in flight is shared, a call an earlier run put in a batch
is found there, never sent again. An item of a later stage that left the window is fed
again from its first stage, replayed from the store stage by stage, a chunk at a time, as
the ordinary path replays a chain. Items a template cannot build go the ordinary way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from batchain import serialize
from batchain.chains.fastpath import RequestTemplate, TextShortcut
from batchain.engine.batching import CHAIN_CHANGED, BatchCallError, BatchCoordinator, CallCancelled, Evicted
from batchain.engine.calls import Admission, CallManager, Subscriber, Verdict, parse_answer
from batchain.engine.lccache import Source, mark
from batchain.providers.base import Body, CallRequest, ProviderAdapter
from batchain.states import CallStatus
from batchain.store.base import Store
from batchain.store.records import CallRecord

if TYPE_CHECKING:  # feed imports this module
    from batchain.engine.feed import Returns

__all__ = ["BulkItems", "Stored", "Wait"]

#: how an item ends: (idx, input, output, exception), the exception None on success
Settle = Callable[[int, Any, Any, BaseException | None], None]
#: an item the bulk path hands back to the ordinary path
Spill = Callable[[int, Any], None]
#: an item whose call is at a provider leaves the window: (idx, uid of the provider batch)
Evict = Callable[[int, str], None]
#: the call an earlier run noted an item waits for: its key, and its record if stored
Wait = tuple[str, CallRecord | None]


class Stored:
    """A stored item's input as the store holds it (JSON text), decoded only if used: a
    resumed row whose call is at a provider never needs it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @staticmethod
    def value(raw: Any) -> Any:
        """``raw`` decoded if it is a :class:`Stored`, else as it is."""
        return serialize.loads(raw.text) if isinstance(raw, Stored) else raw


def _settled_elsewhere(record: CallRecord | None) -> bool:
    """Is this call answered, or in a provider batch (or on its way to one)? Then its
    request need not be built again to wait for it."""
    if record is None:
        return False
    if record.status == CallStatus.SUCCEEDED:
        return bool(record.response)
    return record.batch_id is not None and record.status in (CallStatus.PENDING, CallStatus.SUBMITTED)


class BulkItems:
    """The items of one batch-mode run of a templated chain, as rows instead of tasks.

    ``stages``: one template per ``prompt | model [| parser]`` stage, in order. What a
    resume or a batch's answers can skip (a stub request, items parked unread, items
    finished from a batch's answers out of the window) is about a first stage's call, so
    it applies to one-stage chains, and to the first stage of longer ones."""

    def __init__(
        self,
        *,
        stages: Sequence[RequestTemplate],
        calls: CallManager,
        batch: BatchCoordinator,
        store: Store,
        job_id: str,
        settle: Settle,
        spill: Spill,
        evict: Evict,
        stubs: bool = True,
        returns: Returns | None = None,
        settle_evicted: Settle | None = None,
        inputs_told: bool = True,
    ) -> None:
        #: whether item results are told with their inputs (a listener is set)
        self.inputs_told = inputs_told
        self.evict = evict
        #: evicted items, and how one of them ends (it holds no window place)
        self.returns = returns
        self.settle_evicted = settle_evicted
        #: whether calls found by key may skip rebuilding their request (off under a
        #: budget, whose reservations need each request's size)
        self.stubs = stubs
        self.stages = list(stages)
        self.template = self.stages[0]
        self.calls = calls
        self.batch = batch
        self.store = store
        self.job_id = job_id
        self.settle = settle
        self.spill = spill
        #: items waiting on calls of this run
        self.outstanding = 0
        #: items finished out of the window, from their batch's answers
        self.finished_out = 0
        #: rows that left the window waiting on a call another row pays for
        self._shared_out: set[int] = set()
        #: the lane of each provider batch a waited call is in
        self._batch_lanes: dict[str, str] = {}
        self._texts = [TextShortcut(t.fast, t.adapter, t.base) for t in self.stages]

    @property
    def single(self) -> bool:
        """One stage: an item's first call is its only one."""
        return len(self.stages) == 1

    async def add(self, rows: list[tuple[int, Any, Wait | None]]) -> None:
        """Start ``rows`` (``(idx, input, wait)``): admit each item's first call in one
        chunk, then the next stage's calls of the items whose calls replayed, and so on.

        ``wait`` is the first call an earlier run noted the item waits for, with its
        record: when that call is answered or at a provider, the item's request is not
        built again."""
        model = self.template.fast.model
        admissions: list[Admission] = []
        waits: list[tuple[int, str]] = []
        for idx, raw, wait in rows:
            if wait is not None and self.stubs and _settled_elsewhere(wait[1]) and self._here(wait[1]):
                key, record = wait
                if await self._out_of_window(idx, record):
                    continue
                value = Stored.value(raw)
                stub = self.template.stub(key)
                rebuild = self._rebuilder(value)
                admissions.append(
                    Admission(idx, self.template.adapter, model, stub, record, True, rebuild, value)
                )
                continue
            value = Stored.value(raw)
            built = self._built(0, idx, value, value)
            if built is not None:
                admissions.append(built)
                waits.append((idx, built.request.key))
        if waits:
            self.store.set_waits(self.job_id, waits)
        onward = await self._admit(0, admissions)
        for n in range(1, len(self.stages)):
            if not onward:
                break
            admissions = [a for a in (self._built(n, a.idx, a.value, out) for a, out in onward) if a]
            onward = await self._admit(n, admissions)
        self.store.commit_soon()

    def _built(self, n: int, idx: int, item: Any, value: Any) -> Admission | None:
        """Item ``idx``'s call of stage ``n`` on ``value`` (the item's input ``item``, or
        the stage before's output); None if the item ended or went the ordinary way."""
        template = self.stages[n]
        try:
            adapter, request = template.build(value)
        except Exception as exc:  # the prompt rejects its input: the item's error
            self.settle(idx, item, None, exc)
            return None
        if not adapter.batchable:
            self.spill(idx, item)  # e.g. an API without a batch endpoint
            return None
        return Admission(idx, adapter, template.fast.model, request, value=item)

    async def _admit(self, n: int, admissions: list[Admission]) -> list[tuple[Admission, Any]]:
        """Admit stage ``n``'s calls; returns the items whose calls replayed and go on to
        the next stage, with their outputs (the last stage's end their items here)."""
        if not admissions:
            return []
        told: dict[int, _Row] = {}

        def row(a: Admission) -> Subscriber:
            self.outstanding += 1
            told[id(a)] = found = _Row(self, a, n)
            return found

        onward: list[tuple[Admission, Any]] = []
        got = await self.calls.admit(admissions, row)
        for a, admitted in zip(admissions, got, strict=True):
            if admitted.verdict is Verdict.REPLAYED:
                assert admitted.answer is not None
                done = self._stage_done(
                    n, a.idx, a.value, a.adapter, a.request, admitted.answer, admitted.source
                )
                if done is not _ENDED:
                    onward.append((a, done))
            elif admitted.verdict in (Verdict.SHARED, Verdict.PARKED):
                told[id(a)].source = admitted.source
            elif admitted.verdict is Verdict.FAILED:
                self.settle(a.idx, a.value, None, admitted.error)
        return onward

    async def park_resumed(self) -> tuple[set[str], int]:
        """A resumed run's items whose calls an earlier run put in a provider batch that is
        still there wait for it without being read or held: found in one query, by batch,
        instead of row by row as they are fed (a large job's resume would otherwise read
        every item, and its call, back); :meth:`add` handles any other item as before.
        Returns the batches taken and how many items wait on them."""
        returns = self.returns
        if not self.stubs or returns is None or self.settle_evicted is None:
            return set(), 0
        parked = self.store.parked_items(self.job_id)
        if not parked:
            return set(), 0
        adapter = self.template.adapter
        client = self.calls.client_for(adapter, self.template.fast.model)
        taken: set[str] = set()
        n = 0
        for batch, idxs in parked.items():
            here = self._lane_of(batch) == self.template.base.lane
            if here and await self.batch.adopt(batch, adapter, client):
                returns.parked(batch, idxs)
                taken.add(batch)
                n += len(idxs)
        return taken, n

    def answered(self, batch: str, answers: Mapping[str, Body | None]) -> None:
        """Provider batch ``batch`` answered calls whose rows left the window (``{key:
        body}``): finish those items now, from the answers in hand, instead of feeding them
        again to read their answers back from the store. A call it queued to be sent again
        (``None``) must still be the item's request: if the chain changed since, the item
        fails, as a call found by its key fails to be sent again (see ``_materialize``). An
        item this does not finish (one that went the ordinary way, or whose call is to be
        sent again or failed) stays evicted and goes on when the batch ends, as any
        other. (Items of a longer chain go on to their next stage when fed again.)"""
        returns, settle = self.returns, self.settle_evicted
        if returns is None or settle is None or not self.single:
            return
        idxs = returns.claim(batch)
        if not idxs:
            return
        waits = {idx: (key, text) for idx, key, text in self.store.waits_of(self.job_id, list(idxs))}
        adapter, request = self.template.adapter, self.template.base
        for idx in idxs:
            wait = waits.get(idx)
            if wait is None or wait[0] not in answers:
                returns.keep(idx, batch)
                continue
            key, body = wait[0], answers[wait[0]]
            # an answered item's input is only told to a listener of item results
            value = serialize.loads(wait[1]) if self.inputs_told or body is None else None
            if body is not None:
                self.finished_out += 1
                source = Source.SHARED if idx in self._shared_out else None
                self._shared_out.discard(idx)
                self._stage_done(0, idx, value, adapter, request, body, source, settle, key)
            elif self._changed(key, value):
                self.finished_out += 1
                settle(idx, value, None, BatchCallError(f"{adapter.name}: {CHAIN_CHANGED}"))
            else:
                returns.keep(idx, batch)

    def _changed(self, key: str, value: Any) -> bool:
        """Does the item's request, built now, differ from its call ``key``?"""
        try:
            return self.template.build(value)[1].key != key
        except Exception:  # the prompt rejects it now: it fails when fed again
            return False

    async def _out_of_window(self, idx: int, record: CallRecord | None) -> bool:
        """A resumed row whose call an earlier run put in a provider batch needs nothing
        built or held to wait for it: the row leaves the window at once (as if evicted) and
        ends from the batch's answer. False if it must be admitted (no batch, an answered
        call to replay, or the batch is no longer at the provider)."""
        if record is None or record.batch_id is None or record.status == CallStatus.SUCCEEDED:
            return False
        if self.returns is None or self.settle_evicted is None:
            return False
        adapter = self.template.adapter
        client = self.calls.client_for(adapter, self.template.fast.model)
        if not await self.batch.adopt(record.batch_id, adapter, client):
            return False
        self.evict(idx, record.batch_id)
        return True

    def _here(self, record: CallRecord | None) -> bool:
        """Is the batch a waited call is in at this chain's lane (provider, base URL, model)?
        If the model moved (a new base URL), the item's call is built again, as on the
        ordinary path: its key changes with the base URL, and the old batch is the old
        endpoint's (see :meth:`BatchCoordinator.lose_unreachable`)."""
        if record is None or record.batch_id is None:
            return True
        return self._lane_of(record.batch_id) == self.template.base.lane

    def _lane_of(self, batch: str) -> str:
        lane = self._batch_lanes.get(batch)
        if lane is None:
            row = self.store.get_batch(batch)
            lane = self._batch_lanes[batch] = row.lane if row is not None else ""
        return lane

    def _rebuilder(self, value: Any) -> Callable[[], CallRequest]:
        return lambda: self.template.build(value)[1]

    def _stage_done(
        self,
        n: int,
        idx: int,
        value: Any,
        adapter: ProviderAdapter,
        request: CallRequest,
        body: Body,
        source: Source | None = None,
        settle: Settle | None = None,
        key: str | None = None,
    ) -> Any:
        """Stage ``n`` of item ``idx`` (input ``value``) got its call's answer ``body``:
        the stage's output if a stage follows, else the item ends (``settle``: how; by
        default, an item in the window) and this returns ``_ENDED``. ``source``: the
        answer's marker, if not paid for; ``key``: the call's, if ``request`` is not the
        item's own.

        An item told a call it paid for (no marker) is noted as told only if it fails: a
        succeeded item is never fed again (a retry feeds failed and cancelled ones), and a
        stage's output passed on is a parser's, which carries no marker, so the hot path
        writes nothing more for it."""
        settle = settle or self.settle
        fast = self.stages[n].fast

        def full() -> Any:
            generations = mark(parse_answer(adapter, fast.model, request, body, None), source).generations
            return fast.parse(generations[0].message, generations)

        try:
            output = self._texts[n].output(adapter, body, full)
        except Exception as exc:  # the model's or the stage's parser rejects the answer
            if source is None:
                self.calls.told([(idx, key or request.key)])
            settle(idx, value, None, exc)
            return _ENDED
        if n + 1 < len(self.stages):
            return output
        settle(idx, value, output, None)
        return _ENDED


#: what :meth:`BulkItems._stage_done` returns when its item ended
_ENDED = object()
#: no provider batch: an item evicted on it is fed again at once
_AGAIN = ""


class _Row:
    """An item of the bulk path waiting on its call of stage ``n``: finishes the stage when
    told."""

    __slots__ = ("_a", "_bulk", "_n", "source")

    def __init__(self, bulk: BulkItems, a: Admission, n: int) -> None:
        self._bulk = bulk
        self._a = a
        self._n = n
        #: the answer's marker: set when the item waits on a call another item pays for
        self.source: Source | None = None

    def __call__(self, text: str | None, data: Any, exc: BaseException | None) -> None:
        bulk, a = self._bulk, self._a
        bulk.outstanding -= 1
        if isinstance(exc, Evicted):
            if self.source is not None and bulk.single:
                bulk._shared_out.add(a.idx)
            bulk.evict(a.idx, exc.batch)
        elif text is None:
            bulk.settle(a.idx, a.value, None, exc or CallCancelled("no answer"))
        else:
            body = data if data is not None else text
            done = bulk._stage_done(self._n, a.idx, a.value, a.adapter, a.request, body, self.source)
            if done is not _ENDED:
                # the next stage's input is not kept: the item is fed again, and replays
                # this stage from the store (an answer told in the window is rare in
                # batch mode: a call's items leave the window once it is at a provider)
                bulk.evict(a.idx, _AGAIN)
