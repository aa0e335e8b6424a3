"""Calls: one model request each, identified by the hash of its provider request.

The single rule "a call that already succeeded returns its stored result" gives caching
across jobs, dedup inside a job, and exact replay after a crash. Identical calls in flight
share one request. New calls go to the realtime scheduler (this module) or are parked for
a provider batch (batch mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any, Generic, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models._utils import _update_message_content_to_blocks
from langchain_core.language_models.chat_models import _gen_info_and_msg_metadata
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.utils.utils import LC_ID_PREFIX

from batchain import _json
from batchain.cost.prices import Pricing, response_pricing_facts
from batchain.engine import lccache
from batchain.engine.batching import BatchCoordinator, Evicted, GoRealtime, Parked
from batchain.engine.breaker import host_of
from batchain.engine.budget import Budget, BudgetExhausted, UnpricedModel
from batchain.engine.flex import FlexPolicy, FlexRoute, flex_body
from batchain.engine.hook import ACTIVE, Eviction, original_agenerate, original_generate
from batchain.engine.lccache import Source
from batchain.engine.ratescope import scope_id
from batchain.engine.scheduler import CallFailed, Scheduler
from batchain.errors import BatchUnsupportedError, FlexUnavailable
from batchain.options import Mode, Tier
from batchain.priority import Priority, Route
from batchain.priority import route as route_by_level
from batchain.providers import adapter_for
from batchain.providers.base import (
    Body,
    CallRequest,
    FailureKind,
    ProviderAdapter,
    Sent,
    Unsupported,
    redact,
    remember_model_secrets,
)
from batchain.providers.embeddings import OpenAIEmbeddingsAdapter
from batchain.providers.endpoints import EndpointSupport, batch_support, model_label
from batchain.providers.gemini_embeddings import ESTIMATE_KEY, GeminiEmbeddingsAdapter, is_genai
from batchain.providers.generic import GenericAdapter
from batchain.states import CallStatus, LinkSource
from batchain.store.base import Store
from batchain.store.records import CallRecord, Usage

__all__ = [
    "Admission",
    "Admitted",
    "BatchPrices",
    "BatchUnsupportedError",
    "CallManager",
    "CallStats",
    "InFlight",
    "Subscriber",
    "Verdict",
    "build_request",
    "finish_result",
    "generic_adapter",
    "is_generic",
    "must_begin",
    "parse_answer",
    "price_call",
    "price_model",
]


_GENERIC = GenericAdapter(original_agenerate, original_generate)


def build_request(
    model: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None,
    kwargs: dict[str, Any],
    salt: str,
) -> tuple[ProviderAdapter, CallRequest]:
    """The adapter for this model call and its request; the generic (realtime-only)
    adapter when the model has none or the call needs an API batchain does not speak."""
    adapter = adapter_for(model)
    if adapter is not None:
        try:
            return adapter, adapter.build(model, messages, stop, kwargs, salt)
        except Unsupported as exc:
            request = _GENERIC.build(model, messages, stop, kwargs, salt)
            request.context[UNSUPPORTED] = str(exc)  # why batch mode cannot park it
            return _GENERIC, request
    return _GENERIC, _GENERIC.build(model, messages, stop, kwargs, salt)


#: a request's context: why its adapter passed it to the generic one
UNSUPPORTED = "unsupported"


_EMBEDDINGS = OpenAIEmbeddingsAdapter()
_GEMINI_EMBEDDINGS = GeminiEmbeddingsAdapter()


async def _close(client: Any) -> None:
    """Close a job's SDK client: ``await close()`` (OpenAI, Anthropic), or google-genai's
    ``aio.aclose()`` (its ``close()`` is the sync half's)."""
    aio = getattr(client, "aio", None)
    closing = aio.aclose() if aio is not None and hasattr(aio, "aclose") else client.close()
    if inspect.isawaitable(closing):
        await closing


def embeddings_adapter(resource: Any = None) -> OpenAIEmbeddingsAdapter | GeminiEmbeddingsAdapter:
    """The adapter of an embeddings call through ``resource``: google-genai's ``models``,
    else the OpenAI SDK's ``embeddings``."""
    return _GEMINI_EMBEDDINGS if is_genai(resource) else _EMBEDDINGS


def generic_adapter() -> GenericAdapter:
    return _GENERIC


def is_generic(adapter: ProviderAdapter) -> bool:
    return adapter is _GENERIC


#: told once how a call ended: its answer's text and parsed body, or (None, None, exception)
Subscriber = Callable[[str | None, Any, BaseException | None], None]
#: a call of an item coroutine to admit, and who is told its answer
_Asked = tuple["Admission", Callable[["Admission"], Subscriber]]
Q = TypeVar("Q")
A = TypeVar("A")


class Verdict(Enum):
    """How a call was admitted."""

    REPLAYED = "replayed"  # answered before (this job, an earlier one, before a crash)
    SHARED = "shared"  # the same call is in flight in this run: wait for it
    PARKED = "parked"  # waits for a provider batch
    SEND = "send"  # to be sent now, by whoever admitted it
    REFUSED = "refused"  # batch mode and no Batch API for this model
    FAILED = "failed"  # failed for good earlier in this run, while its item was evicted


@dataclass(slots=True)
class Admission:
    """A call to admit for item ``idx``. ``known``: ``record`` is already looked up (the bulk
    path found it by key); ``rebuild`` gives the full request when ``request`` is only the
    call's identity."""

    idx: int
    adapter: ProviderAdapter
    model: BaseChatModel
    request: CallRequest
    record: CallRecord | None = None
    known: bool = False
    rebuild: Callable[[], CallRequest] | None = None
    #: the item's input, for whoever is told the answer
    value: Any = None


@dataclass(slots=True)
class Admitted:
    verdict: Verdict
    answer: str | None = None
    flight: InFlight | None = None
    error: BaseException | None = None
    #: where the answer comes from if the item did not pay for it (an earlier job's, this
    #: job's, or a call another item of this run pays for); None: the item's first
    #: delivery of a call it paid for, to be noted as told (:meth:`CallManager.told`)
    source: Source | None = None


class _Together(Generic[Q, A]):
    """Questions item coroutines ask in one turn of the event loop, answered by one call of
    ``answer`` for all of them: a few store queries a turn instead of a few a question,
    which is what a store across the network (PostgreSQL) makes a question cost.
    ``abandoned`` gets the answer of a question whose coroutine was cancelled once it was
    answered."""

    def __init__(
        self,
        answer: Callable[[list[Q]], Awaitable[list[A]]],
        name: str,
        abandoned: Callable[[A, BaseException], None] | None = None,
    ) -> None:
        self._answer = answer
        self._name = name
        self._abandoned = abandoned
        self._queued: list[tuple[Q, asyncio.Future[A]]] = []
        self._task: asyncio.Task[None] | None = None

    async def ask(self, question: Q) -> A:
        got: asyncio.Future[A] = asyncio.get_running_loop().create_future()
        self._queued.append((question, got))
        if self._task is None:
            self._task = asyncio.create_task(self._answer_queued(), name=self._name)
        try:
            return await got
        except asyncio.CancelledError as exc:
            if got.done() and not got.cancelled() and got.exception() is None:
                self._abandon(got.result(), exc)
            raise

    async def _answer_queued(self) -> None:
        queued, self._queued, self._task = self._queued, [], None
        queued = [(q, got) for q, got in queued if not got.done()]  # their coroutines were cancelled
        if not queued:
            return
        try:
            answers = await self._answer([q for q, _ in queued])
        except asyncio.CancelledError:
            for _, got in queued:
                got.cancel()
            raise
        except BaseException as exc:
            # each coroutine gets what answering its question raised, as if it had asked alone
            for _, got in queued:
                if not got.done():
                    got.set_exception(exc)
            return
        for (_, got), answer in zip(queued, answers, strict=True):
            if got.done():  # cancelled while the answers were being found
                self._abandon(answer, asyncio.CancelledError())
            else:
                got.set_result(answer)

    def _abandon(self, answer: A, exc: BaseException) -> None:
        if self._abandoned is not None:
            self._abandoned(answer, exc)


def _abandon(admitted: Admitted, exc: BaseException) -> None:
    """A call admitted to be sent by a coroutine that was cancelled before it could send
    it: whoever shares the call is told, as a send that raised tells them."""
    if admitted.verdict is Verdict.SEND and admitted.flight is not None:
        admitted.flight.fail(exc)


class InFlight:
    """A call of this run that has no answer yet, and everyone waiting on it.

    The one :class:`~batchain.engine.batching.Waiter` of both paths: a provider batch (or
    the realtime sender) tells it the answer once, and it tells each subscriber. Auto
    mode's :class:`GoRealtime` goes to the call's owner alone, who sends the call and then
    answers everyone."""

    __slots__ = ("_done", "_flights", "_subs", "adapter", "model", "request")

    def __init__(
        self,
        request: CallRequest,
        adapter: ProviderAdapter,
        model: BaseChatModel,
        flights: dict[str, InFlight],
    ) -> None:
        self.request = request
        self.adapter = adapter
        self.model = model
        #: the run's calls in flight, which this one leaves once answered
        self._flights = flights
        self._subs: list[Subscriber] = []
        self._done = False

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subs.append(subscriber)

    def done(self) -> bool:
        return self._done

    def answer(self, text: str, data: Any) -> None:
        self._tell(text, data, None)

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, GoRealtime):
            if self._subs:
                self._subs[0](None, None, exc)
            return
        self._tell(None, None, exc)

    def _tell(self, text: str | None, data: Any, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._flights.pop(self.request.key, None)
        subs, self._subs = self._subs, []
        for n, sub in enumerate(subs):
            # the parsed body serves one subscriber; the others parse their own copy of the
            # text, so no two outputs share mutable parts
            sub(text, data if n == 0 else None, exc)


async def _no_guard() -> None:
    """No lease to check (a call manager used outside a job run)."""


def _to_future(future: asyncio.Future[str], eviction: Eviction | None = None) -> Subscriber:
    def tell(text: str | None, _data: Any, exc: BaseException | None) -> None:
        if isinstance(exc, Evicted) and eviction is not None:
            eviction.evict(exc.batch)  # the item's task ends, pending; it comes back later
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
            future.exception()  # retrieved by whoever awaits it
        else:
            assert text is not None
            future.set_result(text)

    return tell


@dataclass(slots=True)
class CallStats:
    paid: int = 0
    cached: int = 0
    shared: int = 0
    #: calls answered from LangChain's LLM cache (no store row, no link: never paid)
    langchain_cache: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    by_tier: dict[str, int] = field(default_factory=dict)
    #: what the calls this run paid for realtime cost, and how many have no known price
    spent: Decimal = Decimal(0)
    unpriced: int = 0
    #: flex mode: calls that flex kept refusing past ``flex_patience``, then sent standard
    flex_fallbacks: int = 0


class CallManager:
    """Runs the model calls of one job."""

    def __init__(
        self,
        *,
        store: Store,
        job_id: str,
        scheduler: Scheduler,
        cache: bool = True,
        timeout: float = 120.0,
        batch: BatchCoordinator | None = None,
        fallback: str | None = None,
        batch_only: bool = False,
        endpoint_modes: Mapping[str, str] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        pricebook: Pricing | None = None,
        budget: Budget | None = None,
        on_budget: Callable[[BaseException], None] | None = None,
        guard: Callable[[], Awaitable[None]] = _no_guard,
        routes: Mapping[Priority, Route] | None = None,
        flex: FlexPolicy | None = None,
    ) -> None:
        #: awaited before every provider request: raises if this run lost the job's lease
        self.guard = guard
        #: flex mode's rules (None: no call goes flex)
        self.flex = flex
        #: the items whose calls go flex (None: every item, when ``flex`` is set); auto mode
        #: may route single items to flex by filling it
        self.flex_items: set[int] | None = None
        #: flex mode: calls sent at the standard tier because their model has no flex, by
        #: provider/model
        self.no_flex: dict[str, int] = {}
        self.store = store
        self.pricebook = pricebook
        self.budget = budget
        self.on_budget = on_budget
        self.batch = batch
        self.fallback = fallback
        self.batch_only = batch_only
        #: the user's choice of batch or realtime by model, base URL or host
        self.endpoint_modes = dict(endpoint_modes or {})
        #: batch mode: may a lane's calls be parked, by (adapter, lane)
        self._support: dict[tuple[int, str], EndpointSupport] = {}
        #: batch mode: calls sent realtime because their endpoint has no Batch API (or the
        #: user chose so), by model and endpoint: [why, calls]
        self.realtime_endpoints: dict[str, list[Any]] = {}
        #: the models (provider/model) whose answers carried no token count: their usage is
        #: batchain's estimate
        self.estimated_usage: set[str] = set()
        self.on_fatal = on_fatal
        #: items waiting on a batched call, with how many such waits each
        self.waiting: dict[int, int] = {}
        #: auto mode: where each level's calls go (None: batch mode, every call batch)
        self.routes = routes
        #: auto mode: each running item's level (absent: normal)
        self.levels: dict[int, Priority] = {}
        #: auto mode: running items whose level sends every call realtime (they never wait
        #: on a provider batch, so a round does not wait for them)
        self.realtime_items: set[int] = set()
        #: model calls of sync steps in progress: each holds one of the job's threads
        self.sync_calls = 0
        self.job_id = job_id
        self.scheduler = scheduler
        self.timeout = timeout
        self.salt = "" if cache else job_id
        #: whether answers of earlier jobs, and of LangChain's cache, may be reused
        self.reuse = cache
        self.stats = CallStats()
        #: the lanes (provider, base URL, model) of every call admitted in this run
        self.lanes: set[str] = set()
        self._inflight: dict[str, InFlight] = {}
        #: item coroutines' calls, admitted together (:meth:`_admit_together`)
        self._admissions: _Together[_Asked, Admitted] = _Together(
            self._admit_together, "batchain-admit", _abandon
        )
        #: deliveries of parked calls, checked together as first ones (:meth:`_first_ones`)
        self._deliveries: _Together[tuple[int, str], bool] = _Together(self._first_ones, "batchain-tell")
        #: models seen by the hook (kept alive: ids must stay unique)
        self._models: dict[int, BaseChatModel] = {}
        self._clients: dict[int, Any] = {}
        self._originals: list[Any] = []
        #: the rate-limit scope of each (lane, job client): a digest of its key, named once
        self._scopes: dict[tuple[str, int], str] = {}

    def set_level(self, idx: int, level: Priority) -> None:
        """Auto mode: item ``idx`` runs at ``level`` (until :meth:`forget_level`)."""
        self.levels[idx] = level
        if self.routes is None:
            return
        if route_by_level(level, deadline_near=False, flex=False, routes=self.routes) is Route.REALTIME:
            self.realtime_items.add(idx)

    def forget_level(self, idx: int) -> None:
        self.levels.pop(idx, None)
        self.realtime_items.discard(idx)
        if self.flex_items is not None:
            self.flex_items.discard(idx)

    def route(self, idx: int, *, flex: bool) -> Route:
        """Where a call of item ``idx`` goes when its endpoint has a Batch API: the one
        place the choice is made. Batch mode: the Batch API; auto mode: by the item's level
        (:func:`batchain.priority.route`, ``flex`` whether the call's model offers the flex
        tier); both: realtime once the deadline is near."""
        near = self.batch is not None and self.batch.switched
        if self.routes is None:
            return Route.REALTIME if near else Route.BATCH
        level = self.levels.get(idx, Priority.NORMAL)
        return route_by_level(level, deadline_near=near, flex=flex, routes=self.routes)

    def parkable(
        self, adapter: ProviderAdapter, model: BaseChatModel, request: CallRequest
    ) -> EndpointSupport:
        """May this call be parked in its provider's Batch API (see
        :mod:`batchain.providers.endpoints`)? Decided once per adapter and lane."""
        why = request.context.get(UNSUPPORTED)
        if why is not None:
            return EndpointSupport(False, None, why)
        key = (id(adapter), request.lane)
        found = self._support.get(key)
        if found is None:
            found = self._support[key] = batch_support(adapter, model, self.endpoint_modes)
        return found

    def flex_route(self, request: CallRequest, item_idx: int) -> FlexRoute:
        """Does this call of item ``item_idx`` go at flex? The one decision (see
        :mod:`batchain.engine.flex`): standard unless the job (or, in auto mode, the item)
        goes flex; then flex where the model offers it, else by ``flex_fallback`` (in auto
        mode: standard, the item's level chose flex only where the model offers it)."""
        if self.flex is None or (self.flex_items is not None and item_idx not in self.flex_items):
            return FlexRoute.STANDARD
        route = self.flex.route(request)
        if route is not FlexRoute.FLEX and "service_tier" not in request.body:
            if self.routes is not None:
                return FlexRoute.STANDARD
            label = f"{request.provider}/{request.model}"
            self.no_flex[label] = self.no_flex.get(label, 0) + 1
        return route

    def _flex_ok(self, request: CallRequest) -> bool:
        """Auto mode: may this call go at flex (its model offers it, its body names no tier)?"""
        return (
            self.flex is not None
            and "service_tier" not in request.body
            and self.flex.flex_capable(request.provider, request.model)
        )

    def _noted_realtime(self, model: BaseChatModel, request: CallRequest, support: EndpointSupport) -> None:
        label = model_label(model, request.model) + (f" at {support.base_url}" if support.base_url else "")
        why = "endpoint_modes chose realtime" if support.chosen else support.why
        self.realtime_endpoints.setdefault(label, [why, 0])[1] += 1

    # -- the hook's entry point --------------------------------------------------------

    async def generate(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: Any,
        kwargs: dict[str, Any],
        item_idx: int,
        *,
        sync: bool = False,
    ) -> ChatResult:
        context = ACTIVE.get()
        eviction = context.eviction if context is not None else None
        if id(model) not in self._models:  # e.g. a model a lambda creates at call time
            self._models[id(model)] = model
            remember_model_secrets(model)
        adapter, request = self._build(model, messages, stop, kwargs)
        request.context["run_manager"] = run_manager
        request.context["sync"] = sync
        lc_key = lccache.cache_key(model, messages, stop, kwargs)
        with self._engine_work(sync):
            if lc_key is not None and self.reuse and not self._stored_or_flying(request.key):
                hit = await lccache.lookup(model, lc_key)
                if hit is not None:
                    self.stats.langchain_cache += 1
                    return hit
            text, source = await self.answer(adapter, model, request, item_idx, eviction)
            result = parse_answer(adapter, model, request, text, run_manager)
            if lc_key is not None:
                await lccache.update(lc_key, result)
        if source is None and getattr(run_manager, "handlers", None):
            # a paid answer tells callbacks (a CostTracker) the tier its call ran at
            record = self.store.get_call(request.key)
            lccache.note_tier(result, record.tier if record is not None else None)
        return lccache.mark(result, source)

    def _stored_or_flying(self, key: str) -> bool:
        """Is call ``key`` answered in the store, or in flight in this run? Then batchain
        answers it, before LangChain's cache is asked (see :mod:`batchain.engine.lccache`)."""
        if key in self._inflight:
            return True
        record = self.store.get_calls([key]).get(key)
        return record is not None and record.status == CallStatus.SUCCEEDED and bool(record.response)

    @contextlib.contextmanager
    def _engine_work(self, sync: bool) -> Iterator[None]:
        """The engine's work for one call of an item, not the item's own steps: what it runs
        in the loop's executor (the SDK's platform probe, a generic model's sync send) must
        not queue behind the item's sync steps, which may all be waiting for this very call;
        and a sync step's thread is held (counted) until its call is answered."""
        token = ACTIVE.set(None)
        if sync:
            self.sync_calls += 1
        try:
            yield
        finally:
            if sync:
                self.sync_calls -= 1
            ACTIVE.reset(token)

    async def embed(
        self, resource: Any, params: dict[str, Any], item_idx: int, *, sync: bool = False
    ) -> dict[str, Any]:
        """An embeddings call of an item (the OpenAI SDK's ``embeddings.create`` or
        google-genai's ``models.embed_content``, whoever makes it): built, replayed, shared,
        parked or sent like a chat call."""
        context = ACTIVE.get()
        eviction = context.eviction if context is not None else None
        adapter = embeddings_adapter(resource)
        request = adapter.request(resource, params, self.salt)
        self._models.setdefault(id(resource), resource)
        with self._engine_work(sync):
            text = await self.execute(adapter, resource, request, item_idx, eviction)
        answer: dict[str, Any] = _json.loads(text)
        if ESTIMATE_KEY in answer:
            self.estimated_usage.add(f"{request.provider}/{request.model}")
        return answer

    def _build(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> tuple[ProviderAdapter, CallRequest]:
        return build_request(model, messages, stop, kwargs, self.salt_for(model))

    def salt_for(self, model: Any) -> str:
        """The salt of a model's call keys: the job's id (no answers of earlier jobs) when
        the job or the model (``cache=False``, as LangChain reads it) turns reuse off."""
        return self.job_id if getattr(model, "cache", None) is False else self.salt

    def client_for(self, adapter: ProviderAdapter, model: BaseChatModel) -> Any:
        """The job's own copy of the model's SDK client (one per original client)."""
        original = adapter.client(model)
        if original is None:
            return None
        client = self._clients.get(id(original))
        if client is None:
            client = adapter.job_client(original, self.scheduler.max_concurrency + 8)
            self._clients[id(original)] = client
            self._originals.append(original)  # keep alive: ids must stay unique
        return client

    def _scope_of(self, lane: str, client: Any) -> str:
        """The rate-limit scope of a call in ``lane`` sent with ``client``."""
        scope = self._scopes.get((lane, id(client)))
        if scope is None:
            scope = self._scopes[(lane, id(client))] = scope_id(lane, client)
        return scope

    async def aclose(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await _close(client)
        self._clients.clear()
        self._originals.clear()

    # -- admission: every call, from either path, is admitted here ------------------------

    async def execute(
        self,
        adapter: ProviderAdapter,
        model: BaseChatModel,
        request: CallRequest,
        item_idx: int,
        eviction: Eviction | None = None,
    ) -> str:
        """The answer of one call of an item's coroutine (the hook and the fast path)."""
        text, _ = await self.answer(adapter, model, request, item_idx, eviction)
        return text

    async def answer(
        self,
        adapter: ProviderAdapter,
        model: BaseChatModel,
        request: CallRequest,
        item_idx: int,
        eviction: Eviction | None = None,
    ) -> tuple[str, Source | None]:
        """:meth:`execute`, and where the answer came from if this call did not pay for it
        (the store, or an identical call in flight)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        admission = Admission(item_idx, adapter, model, request)
        got = await self._admissions.ask((admission, lambda _: _to_future(future, eviction)))
        key = request.key
        if got.verdict is Verdict.REPLAYED:
            assert got.answer is not None
            return got.answer, got.source  # a first delivery is noted as told already
        if got.verdict in (Verdict.REFUSED, Verdict.FAILED):
            assert got.error is not None
            raise got.error
        flight = got.flight
        assert flight is not None
        try:
            if got.verdict is Verdict.SEND:
                text = await self._send(flight, item_idx)
            else:
                text = await self._wait(future, item_idx)
                if got.source is None:
                    # asked again now: another call of this item may have been told it first
                    return text, await self._first_told(item_idx, key, Source.SHARED)
                return text, got.source
        except GoRealtime:
            # auto mode's deadline: the owner answers this call in realtime after all
            text = await self._send(flight, item_idx)
        self.told([(item_idx, key)])  # paid for by this very call
        return text, None

    async def admit(
        self, admissions: list[Admission], subscriber: Callable[[Admission], Subscriber]
    ) -> list[Admitted]:
        """Admit calls, one item each: replayed from the store, shared with the same call
        already in flight in this run, parked for a provider batch, or to be sent now.

        The one place the call rules live, for the coroutine path (one call at a time) and
        the bulk path (a chunk at a time): an answered call replays; an identical call in
        flight is shared; a call that an earlier run put in a batch waits for that batch;
        an unknown, failed, or crash-lost call is (re)started. ``subscriber`` gives who is
        told the answer of a call that is shared or parked.
        """
        lookup = [a.request.key for a in admissions if not a.known and a.request.key not in self._inflight]
        stored = self.store.get_calls(lookup) if lookup else {}
        first = self._first_deliveries(admissions, stored)
        out: list[Admitted] = []
        fresh: list[Parked] = []
        resumed: list[tuple[Parked, str]] = []
        #: links of items to calls: paid (a batch call is its item's from when it is parked,
        #: so a collect finds who paid for it in the store even if the item was evicted),
        #: and reused
        owners: list[tuple[str, str, int, str]] = []
        reused: list[tuple[str, str, int, str]] = []
        joined: list[tuple[str, str, int, str]] = []
        failures = self.batch.failures if self.batch is not None else {}
        lanes = self.lanes
        # the same for every call of the chunk: batch mode's route (no levels: it depends on
        # neither the item nor flex), and the job's SDK client of each model
        fixed = self.route(admissions[0].idx, flex=False) if self.routes is None and admissions else None
        clients: dict[tuple[int, int], Any] = {}
        for a in admissions:
            key = a.request.key
            lanes.add(a.request.lane)
            flight = self._inflight.get(key)
            paid = (a.idx, key) in first
            if flight is not None:
                self.share(key, a.idx)
                flight.subscribe(subscriber(a))
                out.append(Admitted(Verdict.SHARED, flight=flight, source=None if paid else Source.SHARED))
                continue
            record = a.record if a.known else stored.get(key)
            replay = self.replayed(record, a.idx, reused, paid)
            if replay is not None:
                out.append(Admitted(Verdict.REPLAYED, answer=replay[0], source=replay[1]))
                continue
            failed = failures.get(key)
            if failed is not None:
                out.append(Admitted(Verdict.FAILED, error=failed))
                continue
            batch = self.batch
            support = self.parkable(a.adapter, a.model, a.request) if batch is not None else None
            if support is not None and not support.batch:
                if support.refused(batch_only=self.batch_only) and self.fallback != Mode.REALTIME:
                    exc = BatchUnsupportedError(a.model, support.why, support.base_url, paused=True)
                    if self.on_fatal is not None:
                        self.on_fatal(exc)
                    out.append(Admitted(Verdict.REFUSED, error=exc))
                    continue
                self._noted_realtime(a.model, a.request, support)
            flight = InFlight(a.request, a.adapter, a.model, self._inflight)
            self._inflight[key] = flight
            parked_ok = support is not None and support.batch and batch is not None
            if not parked_ok:
                way = Route.REALTIME
            else:
                way = fixed if fixed is not None else self.route(a.idx, flex=self._flex_ok(a.request))
            if way is Route.FLEX and self.flex_items is not None:
                self.flex_items.add(a.idx)
            if way is not Route.BATCH or batch is None:
                out.append(Admitted(Verdict.SEND, flight=flight))
                continue
            flight.subscribe(subscriber(a))
            begin = must_begin(record)
            if begin:
                # the call's row is written with its batch's intent (see BatchCoordinator);
                # its link now, so a collect finds who paid for it even if the item left
                owners.append((self.job_id, key, a.idx, LinkSource.PAID))
                record = None
            client_id = (id(a.adapter), id(a.model))
            client = clients.get(client_id)
            if client is None:
                client = clients[client_id] = self.client_for(a.adapter, a.model)
            parked = Parked(
                a.request,
                a.adapter,
                client,
                flight,
                a.idx,
                attempts=record.attempts if record is not None else 0,
                rebuild=a.rebuild,
                unbegun=begin,
            )
            if record is not None and record.batch_id is not None:
                resumed.append((parked, record.batch_id))
                # another item's call, at a provider (its items evicted, or an earlier run's)
                joined.append((self.job_id, key, a.idx, LinkSource.SHARED))
            else:
                fresh.append(parked)
            # a call begun now is this item's; one parked before is whoever's link says paid
            source = None if begin or paid else Source.SHARED
            out.append(Admitted(Verdict.PARKED, flight=flight, source=source))
        if owners:
            self.store.link_calls(owners)
            self.store.commit_soon()
        if reused:
            self.stats.cached += self.store.link_first(reused)
        if joined:
            self.stats.shared += self.store.link_first(joined)
        if self.batch is not None:
            if fresh:
                self.batch.park_new(fresh)
            for parked, uid in resumed:
                await self.batch.park(parked, uid)
        return out

    async def _admit_together(self, asked: list[_Asked]) -> list[Admitted]:
        """Admit the calls item coroutines reached in one turn of the event loop (see
        :class:`_Together`) in one :meth:`admit`. A replayed call's first delivery to the
        item that paid for it is noted as told here, in the same step as its lookup, so a
        second delivery of it (the same item asking again) counts as a replay."""
        subscribers = {id(admission): subscriber for admission, subscriber in asked}
        got = await self.admit([admission for admission, _ in asked], lambda a: subscribers[id(a)](a))
        told: dict[tuple[int, str], None] = {}
        for i, admitted in enumerate(got):
            if admitted.verdict is not Verdict.REPLAYED or admitted.source is not None:
                continue
            pair = (asked[i][0].idx, asked[i][0].request.key)
            if pair in told:
                got[i] = Admitted(Verdict.REPLAYED, answer=admitted.answer, source=Source.REPLAY)
            else:
                told[pair] = None
        if told:
            self.told(list(told))
        return got

    async def _send(self, flight: InFlight, item_idx: int) -> str:
        """Send a call now (realtime) and tell everyone sharing it."""
        try:
            text = await self._realtime(flight.adapter, flight.model, flight.request, item_idx)
        except BaseException as exc:
            flight.fail(exc)
            raise
        flight.answer(text, None)
        return text

    def share(self, key: str, item_idx: int) -> None:
        """Count and link an item that waits on a call already in flight in this run."""
        self.stats.shared += 1
        self.store.link_call(self.job_id, key, item_idx, LinkSource.SHARED)

    def replayed(
        self,
        record: CallRecord | None,
        item_idx: int,
        links: list[tuple[str, str, int, str]],
        first: bool = False,
    ) -> tuple[str, Source | None] | None:
        """The stored answer of an answered call and where it came from (None: ``first``,
        the item paid for it and was never told it), or None. Its link to the item goes to
        ``links``: written, and counted, unless the item has one already (an item fed again
        after an eviction or a restart replays its own paid calls). A first delivery adds
        none: its ``paid`` link is how it was found to be one."""
        if record is None or record.status != CallStatus.SUCCEEDED or not record.response:
            return None
        if first:
            return record.response, None  # the item paid for it: its link is there
        own = record.job_id == self.job_id
        links.append((self.job_id, record.key, item_idx, LinkSource.REPLAY if own else LinkSource.CACHE))
        return record.response, Source.REPLAY if own else Source.CACHE

    def _first_deliveries(
        self, admissions: list[Admission], stored: Mapping[str, CallRecord]
    ) -> set[tuple[int, str]]:
        """Which admissions' items paid for their call and were never told its answer, in
        one query: only calls of this job, stored or in flight, can be (a call unknown to
        the store was never paid for)."""
        probe: list[tuple[int, str]] = []
        for a in admissions:
            key = a.request.key
            record = a.record if a.known else stored.get(key)
            if key in self._inflight or (record is not None and record.job_id == self.job_id):
                probe.append((a.idx, key))
        return self.store.first_deliveries(self.job_id, probe) if probe else set()

    def told(self, pairs: list[tuple[int, str]]) -> None:
        """Note that items were told the answers of calls they paid for, ``(idx, key)``
        each: any later delivery of one of them to its item is marked ``replay``."""
        self.store.tell(self.job_id, pairs)
        self.store.commit_soon()

    async def _first_told(self, item_idx: int, key: str, otherwise: Source) -> Source | None:
        """None, noted as told, if this is the first delivery of a call the item paid for;
        else ``otherwise``. Asked together with the deliveries other coroutines reach in
        the same turn of the event loop (a batch's answers arrive together)."""
        return None if await self._deliveries.ask((item_idx, key)) else otherwise

    async def _first_ones(self, pairs: list[tuple[int, str]]) -> list[bool]:
        """Which deliveries ``(idx, key)`` are first ones, in one query; those are noted
        as told in the same step, in one write."""
        first = self.store.first_deliveries(self.job_id, pairs)
        told: list[tuple[int, str]] = []
        answers: list[bool] = []
        for pair in pairs:
            answers.append(pair in first)
            if answers[-1]:
                first.discard(pair)  # the same item asking twice: told once
                told.append(pair)
        if told:
            self.told(told)
        return answers

    async def _wait(self, future: asyncio.Future[str], item_idx: int) -> str:
        """Await a call; while it is parked for a batch, count the item as waiting."""
        if self.batch is None:
            return await asyncio.shield(future)
        self.waiting[item_idx] = self.waiting.get(item_idx, 0) + 1
        self.batch.on_change()
        try:
            return await asyncio.shield(future)
        finally:
            left = self.waiting[item_idx] - 1
            if left:
                self.waiting[item_idx] = left
            else:
                del self.waiting[item_idx]
            self.batch.on_change()

    def price(
        self, request: CallRequest, usage: Usage, tier: str, body: Body | None = None
    ) -> Decimal | None:
        """What a call cost in USD, or None when its model has no known price."""
        return price_call(self.pricebook, request, usage, tier, body)

    def _begin(self, request: CallRequest, status: CallStatus) -> None:
        """Record the call as on the wire (SENT: one more attempt) or parked for a batch
        (PENDING)."""
        self.store.begin_call(
            request.key,
            provider=request.provider,
            model=request.model,
            endpoint=request.endpoint,
            job_id=self.job_id,
            status=status,
            request_hash=request.body_hash or None,
        )
        self.store.commit_soon()

    def _settle(self, reserved: Decimal, cost: Decimal | None) -> None:
        if self.budget is not None:
            self.budget.settle(reserved, cost or Decimal(0))

    async def _reserve(self, request: CallRequest, tier: str) -> Decimal:
        if self.budget is None:
            return Decimal(0)
        try:
            amount = self.budget.worst_case(request, tier)
            await self.budget.reserve(amount)
        except BudgetExhausted as exc:
            if self.on_budget is not None:
                self.on_budget(exc)
            raise
        except UnpricedModel as exc:
            if self.on_fatal is not None:
                self.on_fatal(exc)
            raise
        return amount

    async def _realtime(
        self,
        adapter: ProviderAdapter,
        model: BaseChatModel,
        request: CallRequest,
        item_idx: int,
    ) -> str:
        store = self.store
        route = self.flex_route(request, item_idx)
        if route is FlexRoute.REFUSE:
            raise FlexUnavailable(request.provider, request.model)  # never sent: nothing stored
        reserved = await self._reserve(request, Tier.REALTIME)
        try:
            sent = await self._sent(adapter, model, request, route)
        except CallFailed as failed:
            self._settle(reserved, None)
            store.call_failed(request.key, redact(str(failed)), retryable=False)
            raise failed.original from None
        except BaseException:
            # stopped or cancelled before an answer: the call may be sent again later
            self._settle(reserved, None)
            store.call_failed(request.key, "interrupted", retryable=True)
            raise
        usage = adapter.usage(sent.text)
        # the tier that served it, as the answer says (flex is priced at batch rates)
        flex = response_pricing_facts(request.provider, sent.text)[0] == "flex"
        tier = Tier.FLEX if flex else Tier.REALTIME
        cost = self.price(request, usage, tier, sent.text)
        self._settle(reserved, cost)
        store.call_succeeded(request.key, sent.text, usage, tier, cost)
        store.link_call(self.job_id, request.key, item_idx, LinkSource.PAID)
        self.stats.paid += 1
        self.stats.input_tokens += usage.input_tokens
        self.stats.output_tokens += usage.output_tokens
        if cost is None:
            self.stats.unpriced += 1
        else:
            self.stats.spent += cost
        self.stats.by_tier[tier.value] = self.stats.by_tier.get(tier.value, 0) + 1
        return sent.text

    async def _sent(
        self, adapter: ProviderAdapter, model: BaseChatModel, request: CallRequest, route: FlexRoute
    ) -> Sent:
        """The call's answer, sent by ``route``: a flex call that flex kept refusing past
        its patience goes by ``flex_fallback`` (sent standard, or its refusal raised)."""
        if route is not FlexRoute.FLEX or self.flex is None:
            return await self._schedule(adapter, model, request)
        try:
            return await self._schedule(
                adapter, model, flex_body(request), timeout=self.flex.timeout, patience=self.flex.patience
            )
        except CallFailed as failed:
            if not _flex_refused(failed) or self.flex.fallback_route() is FlexRoute.REFUSE:
                if failed.failure.kind == FailureKind.UNAVAILABLE:
                    self.scheduler.stats.failed += 1  # the scheduler leaves refusals to us
                raise
        self.stats.flex_fallbacks += 1
        return await self._schedule(adapter, model, request)

    async def _schedule(
        self,
        adapter: ProviderAdapter,
        model: BaseChatModel,
        request: CallRequest,
        *,
        timeout: float | None = None,
        patience: float = 0.0,
    ) -> Sent:
        """Send ``request`` through the scheduler (pacing, concurrency, retries)."""
        store = self.store
        client = self.client_for(adapter, model)
        limit = timeout or self.timeout

        async def attempt() -> Sent:
            # the scheduler calls this holding the call's concurrency slot. The call is
            # marked as on the wire only now, and durably before the request goes out: a
            # crash, or a failed write (a full disk: Store.durable raises, nothing is sent),
            # then counts exactly the requests that may have been billed without their
            # answer stored (after a crash at most max_concurrency), never the calls still
            # waiting for a slot. Group commit: every call that got a slot in this loop
            # iteration shares one commit.
            await self.guard()
            self._begin(request, CallStatus.SENT)
            await store.durable()
            try:
                return await adapter.send(model, client, request, limit)
            except Exception:
                # answered with an error, or never sent: off the wire until a retry marks
                # it again. (A timeout cancels this instead: that request may still be
                # answered and billed, so it stays marked.)
                store.call_failed(request.key, "retrying", retryable=True)
                raise

        def learn(outcome: Sent | BaseException) -> Any:
            headers: Any
            if isinstance(outcome, Sent):
                headers = outcome.headers
            else:
                headers = getattr(getattr(outcome, "response", None), "headers", None)
            return adapter.rate_info(headers) if headers else None

        return await self.scheduler.run(
            request.lane,
            request.est_tokens,
            attempt,
            adapter.classify,
            learn,
            host_of(client),
            self._scope_of(request.lane, client),
            timeout=limit,
            patience=patience,
        )


def _flex_refused(failed: CallFailed) -> bool:
    """Did the provider refuse the call at flex (no capacity for ``flex_patience``, or a
    400 naming ``service_tier``: a model the catalog lists with flex that does not offer
    it), rather than the request itself?"""
    failure = failed.failure
    if failure.kind == FailureKind.UNAVAILABLE:
        return True
    return failure.status == 400 and "service_tier" in failure.message


def price_call(
    pricebook: Pricing | None, request: CallRequest, usage: Usage, tier: str, body: Body | None = None
) -> Decimal | None:
    """What a call cost in USD, or None when its model has no known price.

    With the response ``body``, its service tier (flex, priority) and 1-hour cache writes
    are priced too."""
    return price_model(pricebook, request.provider, request.model, usage, tier, body)


def price_model(
    pricebook: Pricing | None, provider: str, model: str, usage: Usage, tier: str, body: Body | None = None
) -> Decimal | None:
    """:func:`price_call` by the call's provider and model."""
    if pricebook is None:
        return None
    if body is not None:
        cost = pricebook.cost_of_call(provider, model, usage, tier, body)
    else:
        cost = pricebook.cost_of(provider, model, usage, tier)
    return Decimal(cost.total) if cost.known and cost.total is not None else None


#: distinct answers whose prices a run remembers (a few hundred in practice: answers of
#: one model repeat a small range of token counts)
_PRICES_REMEMBERED = 65_536


class BatchPrices:
    """:func:`price_model` for one run, remembered per model, tier, service tier and token
    counts: the same usage always costs the same, and pricing it is exact decimal work
    that tens of thousands of answers would repeat. (A :class:`Pricing` reads a response
    only for its service tier and 1-hour cache writes: see ``response_pricing_facts``.)"""

    def __init__(self, pricebook: Pricing | None) -> None:
        self.pricebook = pricebook
        self._known: dict[tuple[Any, ...], Decimal | None] = {}

    def __call__(
        self, provider: str, model: str, usage: Usage, tier: str, body: Body | None = None
    ) -> Decimal | None:
        facts = response_pricing_facts(provider, body) if body is not None else (None, 0)
        u = usage
        key = (
            provider,
            model,
            tier,
            facts,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_creation_tokens,
            u.reasoning_tokens,
            u.requests,
        )
        try:
            return self._known[key]
        except KeyError:
            cost = price_model(self.pricebook, provider, model, usage, tier, body)
            if len(self._known) < _PRICES_REMEMBERED:
                self._known[key] = cost
            return cost


def parse_answer(
    adapter: ProviderAdapter, model: BaseChatModel, request: CallRequest, body: Body, run_manager: Any
) -> ChatResult:
    """A call's answer as the model's own ``ChatResult``, as ``_agenerate_with_cache`` makes
    it: the one parse-and-finish of both paths."""
    result = adapter.parse(model, request, body)
    if adapter is not _GENERIC:
        finish_result(model, result, run_manager)
    return result


def must_begin(record: CallRecord | None) -> bool:
    """Is this call to be (re)started? Unknown, failed, or lost on the wire by a crash."""
    return record is None or record.status in (CallStatus.FAILED, CallStatus.SENT)


def finish_result(model: BaseChatModel, result: ChatResult, run_manager: Any) -> None:
    """What ``_agenerate_with_cache`` does to a fresh result after ``_agenerate``."""
    if model.output_version == "v1":
        for generation in result.generations:
            generation.message = _update_message_content_to_blocks(generation.message, "v1")
    for idx, generation in enumerate(result.generations):
        if run_manager and generation.message.id is None:
            generation.message.id = f"{LC_ID_PREFIX}-{run_manager.run_id}-{idx}"
        generation.message.response_metadata = _gen_info_and_msg_metadata(generation)
    if len(result.generations) == 1 and result.llm_output is not None:
        msg = result.generations[0].message
        llm_output: Mapping[str, Any] = result.llm_output
        msg.response_metadata = {**llm_output, **msg.response_metadata}
