"""Calls: one model request each, identified by the hash of its provider request.

The single rule "a call that already succeeded returns its stored result" gives caching
across jobs, dedup inside a job, and exact replay after a crash. Identical calls in flight
share one request. New calls go to the realtime scheduler (this module) or are parked for
a provider batch (batch mode).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models._utils import _update_message_content_to_blocks
from langchain_core.language_models.chat_models import _gen_info_and_msg_metadata
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.utils.utils import LC_ID_PREFIX

from batchain.engine.batching import BatchCoordinator, FutureWaiter, GoRealtime, Parked
from batchain.engine.budget import Budget, BudgetExhausted, UnpricedModel
from batchain.engine.hook import original_agenerate, original_generate
from batchain.engine.scheduler import CallFailed, Scheduler
from batchain.providers import adapter_for
from batchain.providers.base import Body, CallRequest, ProviderAdapter, Sent, Unsupported, redact
from batchain.providers.generic import GenericAdapter
from batchain.states import CallStatus
from batchain.store.records import CallRecord, Usage
from batchain.store.sqlite import SQLiteStore

__all__ = [
    "BatchUnsupportedError",
    "CallManager",
    "CallStats",
    "build_request",
    "finish_result",
    "generic_adapter",
    "is_generic",
    "must_begin",
]


class BatchUnsupportedError(RuntimeError):
    """Batch mode met a model with no Batch API adapter."""

    def __init__(self, model: BaseChatModel) -> None:
        name = getattr(model, "model_name", None) or getattr(model, "model", None) or ""
        super().__init__(
            f"batch mode: {type(model).__name__}({name!s}) has no Batch API adapter, so its calls "
            "cannot run at batch price. Nothing was submitted. Pass fallback='realtime' to run "
            "this model's calls in realtime at full price."
        )


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
        except Unsupported:
            pass
    return _GENERIC, _GENERIC.build(model, messages, stop, kwargs, salt)


def generic_adapter() -> GenericAdapter:
    return _GENERIC


def is_generic(adapter: ProviderAdapter) -> bool:
    return adapter is _GENERIC


@dataclass(slots=True)
class CallStats:
    paid: int = 0
    cached: int = 0
    shared: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    by_tier: dict[str, int] = field(default_factory=dict)


class CallManager:
    """Runs the model calls of one job."""

    def __init__(
        self,
        *,
        store: SQLiteStore,
        job_id: str,
        scheduler: Scheduler,
        cache: bool = True,
        timeout: float = 120.0,
        batch: BatchCoordinator | None = None,
        fallback: str | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        pricebook: Any = None,
        budget: Budget | None = None,
        on_budget: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.store = store
        self.pricebook = pricebook
        self.budget = budget
        self.on_budget = on_budget
        self.batch = batch
        self.fallback = fallback
        self.on_fatal = on_fatal
        #: items waiting on a batched call, with how many such waits each
        self.waiting: dict[int, int] = {}
        #: auto mode: items that run realtime whatever the mode
        self.urgent: set[int] = set()
        self.job_id = job_id
        self.scheduler = scheduler
        self.timeout = timeout
        self.salt = "" if cache else job_id
        self.stats = CallStats()
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self._clients: dict[int, Any] = {}
        self._originals: list[Any] = []

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
        adapter, request = self._build(model, messages, stop, kwargs)
        request.context["run_manager"] = run_manager
        request.context["sync"] = sync
        text = await self.execute(adapter, model, request, item_idx)
        result = adapter.parse(model, request, text)
        if adapter is not _GENERIC:
            finish_result(model, result, run_manager)
        return result

    def _build(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> tuple[ProviderAdapter, CallRequest]:
        return build_request(model, messages, stop, kwargs, self.salt)

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

    async def aclose(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        self._clients.clear()
        self._originals.clear()

    # -- dedup, replay, dispatch ---------------------------------------------------------

    async def execute(
        self,
        adapter: ProviderAdapter,
        model: BaseChatModel,
        request: CallRequest,
        item_idx: int,
    ) -> str:
        key = request.key
        shared = self._inflight.get(key)
        if shared is not None:
            self.share(key, item_idx)
            return await self._wait(shared, item_idx)
        record = self.store.get_call(key)
        answer = self.replayed(record, item_idx)
        if answer is not None:
            return answer
        batched = (
            self.batch is not None
            and adapter.batchable
            and not self.batch.switched
            and item_idx not in self.urgent
        )
        if self.batch is not None and not adapter.batchable and self.fallback != "realtime":
            exc = BatchUnsupportedError(model)
            if self.on_fatal is not None:
                self.on_fatal(exc)
            raise exc
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            if batched:
                text = await self._batched(adapter, model, request, item_idx, record)
            else:
                text = await self._realtime(adapter, model, request, item_idx)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: sharers re-raise it themselves
            raise
        else:
            future.set_result(text)
            return text
        finally:
            del self._inflight[key]

    def share(self, key: str, item_idx: int) -> None:
        """Count and link an item that waits on a call already in flight in this run."""
        self.stats.shared += 1
        self.store.link_call(self.job_id, key, item_idx, "shared")

    def replayed(self, record: CallRecord | None, item_idx: int) -> str | None:
        """The stored answer of an answered call (counted and linked to the item), or None."""
        if record is None or record.status != CallStatus.SUCCEEDED or not record.response:
            return None
        self.stats.cached += 1
        source = "replay" if record.job_id == self.job_id else "cache"
        self.store.link_call(self.job_id, record.key, item_idx, source)
        return record.response

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

    async def _batched(
        self,
        adapter: ProviderAdapter,
        model: BaseChatModel,
        request: CallRequest,
        item_idx: int,
        record: CallRecord | None,
    ) -> str:
        assert self.batch is not None
        if must_begin(record):
            self._begin(request, CallStatus.PENDING)
            record = None
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        parked = Parked(
            request,
            adapter,
            self.client_for(adapter, model),
            FutureWaiter(future),
            item_idx,
            attempts=record.attempts if record is not None else 0,
        )
        await self.batch.park(parked, record.batch_id if record is not None else None)
        try:
            return await self._wait(future, item_idx)
        except GoRealtime:
            # auto mode's deadline: this call is answered in realtime after all
            return await self._realtime(adapter, model, request, item_idx)

    def price(
        self, request: CallRequest, usage: Usage, tier: str, body: Body | None = None
    ) -> Decimal | None:
        """What a call cost in USD, or None when its model has no known price.

        With the response ``body``, its service tier (flex, priority) and 1-hour cache
        writes are priced too."""
        if self.pricebook is None:
            return None
        if body is not None:
            cost = self.pricebook.cost_of_call(request.provider, request.model, usage, tier, body)
        else:
            cost = self.pricebook.cost_of(request.provider, request.model, usage, tier)
        return Decimal(cost.total) if cost.known and cost.total is not None else None

    def _begin(self, request: CallRequest, status: CallStatus) -> None:
        """Record the call as on the wire (SENT) or parked for a batch (PENDING)."""
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
        reserved = await self._reserve(request, "realtime")
        self._begin(request, CallStatus.SENT)

        client = self.client_for(adapter, model)

        async def attempt() -> Sent:
            return await adapter.send(model, client, request, self.timeout)

        def learn(outcome: Sent | BaseException) -> Any:
            headers: Any
            if isinstance(outcome, Sent):
                headers = outcome.headers
            else:
                headers = getattr(getattr(outcome, "response", None), "headers", None)
            return adapter.rate_info(headers) if headers else None

        try:
            sent = await self.scheduler.run(
                request.lane, request.est_tokens, attempt, adapter.classify, learn
            )
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
        cost = self.price(request, usage, "realtime", sent.text)
        self._settle(reserved, cost)
        store.call_succeeded(request.key, sent.text, usage, "realtime", cost)
        store.link_call(self.job_id, request.key, item_idx, "paid")
        self.stats.paid += 1
        self.stats.input_tokens += usage.input_tokens
        self.stats.output_tokens += usage.output_tokens
        self.stats.by_tier["realtime"] = self.stats.by_tier.get("realtime", 0) + 1
        return sent.text


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
