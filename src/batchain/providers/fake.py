"""An in-process provider: a chat model and its adapter that answer realtime calls and
batches in memory, deterministically, with no HTTP.

Modelled on httpx's ``MockTransport``: a :class:`FakeProvider` stands in for the provider's
servers. Its ``respond`` handler decides every answer, batches end at once (or after a set
number of polls), failures are programmed per call, and it records every request it
answered so a test can check that nothing was sent twice. :class:`FakeChatModel` is a
``BaseChatModel`` that talks to one; :class:`FakeAdapter` is its
:class:`~batchain.providers.base.ProviderAdapter`, Batch API included, registered for
``FakeChatModel`` by :mod:`batchain.providers.registry`. So the engine runs realtime and
batch mode against it exactly as against a real provider::

    provider = FakeProvider()
    chain = prompt | FakeChatModel(provider=provider) | StrOutputParser()
    job = batchain.run(chain, rows, mode="batch", poll_min=0.01)
    assert not provider.duplicates()

It is a test double, not a model: the default answer repeats the last message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field

from batchain import _json
from batchain.errors import BatchNotFound
from batchain.providers._sdk import classify_sdk_error, sdk_request
from batchain.providers.base import (
    BatchAPI,
    BatchIntent,
    Body,
    CallRequest,
    Failure,
    Identification,
    ProviderBatch,
    RateInfo,
    Sent,
    canonical_json,
    clean_body_json,
    parsed,
)
from batchain.providers.batch import BatchLimits, BatchView, Outcome, OutcomeKind
from batchain.store.records import Usage

__all__ = [
    "ENDPOINT",
    "FakeAdapter",
    "FakeBatch",
    "FakeBatchAPI",
    "FakeChatModel",
    "FakeError",
    "FakeProvider",
    "FakeRequest",
    "echo",
]

ENDPOINT = "/v1/fake/chat"
FAKE_LIMITS = BatchLimits(max_requests=50_000, max_bytes=200 * 1024 * 1024)

#: decides the answer to a request body: the reply text, or raise :class:`FakeError`
Respond = Callable[[Mapping[str, Any]], str]


class FakeError(Exception):
    """A provider error: what a :class:`FakeProvider` answers a failing call with.

    429, 5xx, 408 and 409 are transient (retried), any other status permanent."""

    def __init__(self, status: int, message: str = "fake failure") -> None:
        super().__init__(f"{status}: {message}")
        self.status_code = status
        self.message = message
        self.body: Any = None

    @property
    def transient(self) -> bool:
        return self.status_code == 429 or self.status_code >= 500 or self.status_code in (408, 409)


def echo(body: Mapping[str, Any]) -> str:
    """The default answer: the text of the request's last message."""
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content", "")
    return content if isinstance(content, str) else json.dumps(content, sort_keys=True)


@dataclass(frozen=True, slots=True)
class FakeRequest:
    """One request a :class:`FakeProvider` answered (or failed)."""

    body: Mapping[str, Any]
    #: sha256 of the body's canonical JSON: equal bodies, equal hashes
    body_hash: str
    #: "realtime", "batch", or "direct" (the model called outside a batchain job)
    tier: str
    #: 200, or the status it failed with
    status: int = 200
    custom_id: str | None = None
    batch_id: str | None = None


@dataclass(slots=True)
class FakeBatch:
    """A batch held by a :class:`FakeProvider`."""

    id: str
    uid: str
    job_id: str
    created_at: float
    #: the decoded entries: ``{"custom_id": ..., "body": {...}}``
    entries: list[dict[str, Any]]
    #: retrieves left that still report it in progress
    polls_left: int
    status: str = "in_progress"
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.status in ("ended", "cancelled")


class FakeProvider:
    """The in-memory "servers" of the fake provider: answers, batches, and the record.

    ``respond`` maps a request body to the reply text (or raises :class:`FakeError`);
    ``batch_polls`` is how many retrieves report a new batch in progress before it ends
    (0: it has ended by the first poll); ``latency`` delays each realtime answer (seconds);
    ``scope`` is where the provider "lives", part of every call key (so a new process
    with a new provider of the same scope replays the calls an earlier one stored).
    """

    def __init__(
        self,
        respond: Respond = echo,
        *,
        batch_polls: int = 0,
        latency: float = 0.0,
        scope: str = "fake://local",
    ) -> None:
        self.respond = respond
        self.batch_polls = batch_polls
        self.latency = latency
        self.scope = scope
        #: every request answered or failed, in order
        self.requests: list[FakeRequest] = []
        #: every batch created, by id
        self.batches: dict[str, FakeBatch] = {}
        #: how many batch creates to refuse (429) before creating
        self.refuse_creates = 0
        #: how many batch creates to carry out but answer with a 502, as if the answer was
        #: lost on the way back (the engine must find the batch, not create it again)
        self.lose_create_answers = 0
        self._failures: list[list[Any]] = []
        self._lock = threading.Lock()
        self._batch_seq = 0

    # -- knobs ------------------------------------------------------------------------------

    def fail(self, match: str, *, times: int = 1, status: int = 500, message: str = "fake failure") -> None:
        """The next ``times`` requests whose body contains ``match`` fail with ``status``
        (any tier). Transient statuses (429, 5xx) are retried by the engine; others fail
        the item."""
        with self._lock:
            self._failures.append([match, times, status, message])

    # -- the record -------------------------------------------------------------------------

    def answered(self, tier: str | None = None) -> list[FakeRequest]:
        """The requests answered with 200 (of one tier, or all)."""
        return [r for r in self.requests if r.status == 200 and (tier is None or r.tier == tier)]

    def duplicates(self) -> dict[str, int]:
        """Bodies answered more than once, by hash, with how often: paid twice."""
        counts = Counter(r.body_hash for r in self.answered())
        return {h: n for h, n in counts.items() if n > 1}

    def reset(self) -> None:
        """Forget the record, the batches and the programmed failures."""
        with self._lock:
            self.requests.clear()
            self.batches.clear()
            self._failures.clear()
            self.refuse_creates = self.lose_create_answers = 0

    # -- answering --------------------------------------------------------------------------

    def answer(
        self,
        body: Mapping[str, Any],
        tier: str,
        custom_id: str | None = None,
        batch_id: str | None = None,
    ) -> str:
        """The response body (JSON text) for ``body``; raises :class:`FakeError`."""
        digest = hashlib.sha256(clean_body_json(body).encode()).hexdigest()
        try:
            self._programmed_failure(body)
            text = self.respond(body)
        except FakeError as exc:
            self._record(FakeRequest(body, digest, tier, exc.status_code, custom_id, batch_id))
            raise
        self._record(FakeRequest(body, digest, tier, 200, custom_id, batch_id))
        n_in = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
        response = {
            "id": f"fake-{digest[:16]}",
            "model": body.get("model"),
            "content": text,
            "usage": {"input_tokens": n_in, "output_tokens": len(text.split())},
        }
        return _json.dumps(response)

    def _programmed_failure(self, body: Mapping[str, Any]) -> None:
        text = canonical_json(body)
        with self._lock:
            for failure in self._failures:
                match, times, status, message = failure
                if times > 0 and match in text:
                    failure[1] -= 1
                    raise FakeError(status, message)

    def _record(self, request: FakeRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # -- batches ----------------------------------------------------------------------------

    def create_batch(self, uid: str, job_id: str, lines: list[bytes]) -> FakeBatch:
        with self._lock:
            if self.refuse_creates > 0:
                self.refuse_creates -= 1
                raise FakeError(429, "too many batches")
            self._batch_seq += 1
            batch = FakeBatch(
                id=f"fakebatch_{self._batch_seq:06d}",
                uid=uid,
                job_id=job_id,
                created_at=time.time(),
                entries=[_json.loads(line) for line in lines],
                polls_left=self.batch_polls,
            )
            self.batches[batch.id] = batch
            if self.lose_create_answers > 0:
                self.lose_create_answers -= 1
                raise FakeError(502, "the answer to the create was lost")
        return batch

    def retrieve_batch(self, batch_id: str) -> FakeBatch:
        batch = self._batch(batch_id)
        if not batch.ended:
            if batch.polls_left > 0:
                batch.polls_left -= 1
            else:
                self._run(batch)
        return batch

    def cancel_batch(self, batch_id: str) -> None:
        batch = self._batch(batch_id)
        if not batch.ended:
            batch.status = "cancelled"
            batch.outcomes = [
                Outcome(e["custom_id"], OutcomeKind.RETRY, "cancelled", None, "cancelled")
                for e in batch.entries
            ]

    def _batch(self, batch_id: str) -> FakeBatch:
        try:
            return self.batches[batch_id]
        except KeyError:
            raise FakeError(404, f"no batch {batch_id}") from None

    def _run(self, batch: FakeBatch) -> None:
        outcomes: list[Outcome] = []
        for entry in batch.entries:
            cid = str(entry["custom_id"])
            try:
                text = self.answer(entry["body"], "batch", cid, batch.id)
            except FakeError as exc:
                kind = OutcomeKind.RETRY if exc.transient else OutcomeKind.FAILED
                reason = f"http_{exc.status_code}"
                outcomes.append(Outcome(cid, kind, str(exc), exc.status_code, reason))
                continue
            outcomes.append(Outcome(cid, OutcomeKind.SUCCEEDED, text, 200, data=_json.loads(text)))
        batch.outcomes = outcomes
        batch.status = "ended"

    def close(self) -> None:
        """Nothing to close (a job closes its clients)."""


class FakeChatModel(BaseChatModel):
    """A chat model answered by a :class:`FakeProvider` (in memory, deterministic).

    Inside a batchain job its calls go through :class:`FakeAdapter` like any provider's;
    outside one it asks its provider directly."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = "fake-chat"
    provider: FakeProvider = Field(default_factory=FakeProvider, exclude=True)
    max_tokens: int | None = None

    @property
    def _llm_type(self) -> str:
        return "batchain-fake"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "scope": self.provider.scope}

    def request_body(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The request body of a call: model, messages, stop and the call's options."""
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": [{"role": m.type, "content": m.content} for m in messages],
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if stop:
            body["stop"] = list(stop)
        options = {k: v for k, v in kwargs.items() if not k.startswith("ls_")}
        if options:
            body.update(json.loads(canonical_json(options)))  # plain JSON values only
        return body

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = self.provider.answer(self.request_body(messages, stop, kwargs), "direct")
        return chat_result(parsed(text))


def chat_result(response: Mapping[str, Any]) -> ChatResult:
    """A fake response body as LangChain's ``ChatResult``."""
    usage = response.get("usage") or {}
    n_in, n_out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    message = AIMessage(
        content=str(response.get("content", "")),
        usage_metadata={"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out},
        response_metadata={"model_name": response.get("model"), "id": response.get("id")},
    )
    return ChatResult(generations=[ChatGeneration(message=message)], llm_output={})


class FakeAdapter:
    """The :class:`~batchain.providers.base.ProviderAdapter` of :class:`FakeChatModel`.

    Stateless: the state is the model's :class:`FakeProvider`, which is also the client
    every call and batch goes through."""

    batchable = True

    def __init__(self, name: str = "fake", limits: BatchLimits = FAKE_LIMITS) -> None:
        self.name = name
        self._batch_api = FakeBatchAPI(limits)

    def build(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        salt: str,
    ) -> CallRequest:
        fake = _fake(model)
        body = fake.request_body(messages, stop, kwargs)
        return sdk_request(
            self.name,
            fake.provider.scope,
            ENDPOINT,
            body,
            salt,
            max_tokens=body.get("max_tokens"),
            headers={},
            context={},
        )

    def client(self, model: BaseChatModel) -> FakeProvider:
        return _fake(model).provider

    def job_client(self, client: Any, max_connections: int) -> Any:
        return client  # no connections to pool

    async def send(self, model: BaseChatModel, client: Any, request: CallRequest, timeout: float) -> Sent:
        provider: FakeProvider = client
        await asyncio.sleep(provider.latency)
        return Sent(provider.answer(request.body, "realtime"), {})

    def parse(self, model: BaseChatModel, request: CallRequest, body: Body) -> ChatResult:
        return chat_result(parsed(body))

    def plain_text(self, body: Body) -> str | None:
        content = parsed(body).get("content", "")
        return content if isinstance(content, str) else None

    def usage(self, body: Body) -> Usage:
        u = parsed(body).get("usage") or {}
        return Usage(
            input_tokens=int(u.get("input_tokens") or 0),
            output_tokens=int(u.get("output_tokens") or 0),
            requests=1,
        )

    def classify(self, exc: BaseException) -> Failure:
        return classify_sdk_error(exc, self.name)

    def rate_info(self, headers: Mapping[str, str]) -> RateInfo | None:
        return None

    def batch_api(self) -> BatchAPI:
        return self._batch_api


class FakeBatchAPI:
    """The fake provider's Batch API: the client is the :class:`FakeProvider` itself."""

    def __init__(self, limits: BatchLimits = FAKE_LIMITS) -> None:
        self.limits = limits

    identification = Identification.METADATA

    def custom_id(self, nonce: str, key: str) -> str:
        return key  # fake batches carry their uid, as OpenAI's carry metadata

    def encode(self, custom_id: str, request: CallRequest) -> bytes:
        return _json.dumpb({"custom_id": custom_id, "body": request.body}) + b"\n"

    def split_key(self, request: CallRequest) -> str:
        return ""

    async def create(
        self, client: Any, uid: str, job_id: str, lines: list[bytes], requests: list[CallRequest]
    ) -> ProviderBatch:
        provider: FakeProvider = client
        return _provider_batch(provider.create_batch(uid, job_id, lines))

    async def retrieve(self, client: Any, provider_id: str) -> BatchView:
        provider: FakeProvider = client
        if provider_id not in provider.batches:
            raise BatchNotFound(provider_id)
        batch = provider.retrieve_batch(provider_id)
        done = len(batch.outcomes)
        return BatchView(
            ended=batch.ended, status=batch.status, done=done, total=len(batch.entries), output_ref=batch.id
        )

    async def outcomes(self, client: Any, view: BatchView, keys: list[str]) -> list[Outcome]:
        provider: FakeProvider = client
        return list(provider.batches[view.output_ref].outcomes) if view.output_ref else []

    async def cancel(self, client: Any, provider_id: str) -> None:
        provider: FakeProvider = client
        if provider_id not in provider.batches:
            raise BatchNotFound(provider_id)
        provider.cancel_batch(provider_id)

    async def find_created(self, client: Any, intent: BatchIntent) -> list[ProviderBatch]:
        """Fake batches carry their uid, as OpenAI's carry metadata: the match is certain."""
        provider: FakeProvider = client
        for batch in reversed(list(provider.batches.values())):
            if batch.uid == intent.uid and batch.id not in intent.taken:
                return [_provider_batch(batch)]
        return []


def _provider_batch(batch: FakeBatch) -> ProviderBatch:
    return ProviderBatch(
        id=batch.id,
        created_at=batch.created_at,
        n_requests=len(batch.entries),
        metadata={"batchain_uid": batch.uid, "batchain_job": batch.job_id},
    )


def _fake(model: BaseChatModel) -> FakeChatModel:
    if not isinstance(model, FakeChatModel):
        raise TypeError(f"the fake adapter serves FakeChatModel, not {type(model).__name__}")
    return model
