"""What a provider adapter is: the seam between a LangChain chat model and the network.

An adapter turns a model call into a :class:`CallRequest` (the exact provider request body,
built by the model's own payload builder, and its hash), sends it, parses the stored
response body back into a ``ChatResult`` with the model's own parser, and classifies
failures. Everything but :meth:`ProviderAdapter.send` is pure.

An adapter that can run calls through its provider's Batch API hands out a
:class:`BatchAPI` from :meth:`ProviderAdapter.batch_api`: the I/O of one provider's
batches (create, retrieve, download, cancel, and finding a batch a crash left unrecorded).
Provider batches come back from it as :class:`ProviderBatch` records. A new provider is
one class implementing :class:`ProviderAdapter` (and, for batch mode, one implementing
:class:`BatchAPI`), registered with :func:`batchain.register_adapter`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import SecretStr

from batchain.providers.batch import BatchLimits, BatchView, Outcome
from batchain.store.records import Usage

__all__ = [
    "BatchAPI",
    "BatchEndpoints",
    "BatchIntent",
    "Body",
    "CallRequest",
    "Failure",
    "FailureKind",
    "Identification",
    "PlainTextAnswers",
    "ProviderAdapter",
    "ProviderBatch",
    "RateInfo",
    "Sent",
    "Unsupported",
    "body_hash",
    "cache_neutral",
    "call_identity",
    "call_key",
    "canonical_json",
    "clean_body_json",
    "hash_of",
    "key_for",
    "key_hasher",
    "parsed",
    "redact",
    "remember_model_secrets",
    "remember_secret",
]

#: request body keys that never change what the model computes: how the answer is
#: delivered, and which service tier computes it (an answer at OpenAI's flex tier is the
#: same call as at the standard tier: one key, replayed whichever tier paid for it)
_NON_SEMANTIC = ("stream", "stream_options", "service_tier")


#: a response body: its JSON text, or that text already parsed
Body = str | Mapping[str, Any]


def parsed(body: Body) -> Any:
    """``body`` as parsed JSON (parsed only if it is still text)."""
    return json.loads(body) if isinstance(body, str) else body


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def body_hash(body: Mapping[str, Any]) -> str:
    """The sandbox ledger's request hash: canonical body without streaming keys and
    ``service_tier``, and without prompt-cache markers (:func:`cache_neutral`)."""
    clean = {k: v for k, v in body.items() if k not in _NON_SEMANTIC}
    return hashlib.sha256(canonical_json(cache_neutral(clean)).encode()).hexdigest()


def hash_of(body: Mapping[str, Any], text: str, raw: bytes | None = None) -> str:
    """:func:`body_hash` of ``body``, whose :func:`clean_body_json` is ``text`` (``raw``:
    its UTF-8 bytes, when the caller has them): hashed as it is unless it may carry cache
    markers."""
    if '"cache_control"' in text or isinstance(body.get("system"), list):
        return body_hash(body)
    return hashlib.sha256(text.encode() if raw is None else raw).hexdigest()


def cache_neutral(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``body`` as far as what the model is asked: prompt-cache markers (Anthropic's
    ``cache_control``) change the price, not the request. Without its ``cache_control``
    keys, and with a ``system`` of one plain text block given as its text (the string
    form it is equivalent to, and the one batch mode marks by turning it into a block)."""
    out: dict[str, Any] = _unmarked(body)
    system = out.get("system")
    if isinstance(system, list) and len(system) == 1 and isinstance(system[0], Mapping):
        block = system[0]
        if set(block) == {"type", "text"} and block["type"] == "text" and isinstance(block["text"], str):
            out["system"] = block["text"]
    return out


def _unmarked(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_unmarked(v) for v in value]
    return value


def clean_body_json(body: Mapping[str, Any]) -> str:
    """Canonical JSON of ``body`` without streaming keys and ``service_tier`` (the text the
    key is made of)."""
    return canonical_json({k: v for k, v in body.items() if k not in _NON_SEMANTIC})


def call_key(provider: str, scope: str, endpoint: str, body_json: str, salt: str) -> str:
    """The Call identity: provider, where it is sent, endpoint and exact body.

    ``salt`` is empty for shareable calls; a job run with ``cache=False`` salts its calls
    with its id so they are replayed on resume but never shared with other jobs.
    """
    return key_for(call_identity(provider, scope, endpoint, salt), body_json)


def call_identity(provider: str, scope: str, endpoint: str, salt: str) -> str:
    """Everything in a call's key but its body: calls that differ only in body share it."""
    return "\x1f".join((provider, scope, endpoint, salt))


def key_for(identity: str, body_json: str) -> str:
    return hashlib.sha256(f"{identity}\x1f{body_json}".encode()).hexdigest()


def key_hasher(identity: str) -> hashlib._Hash:
    """:func:`key_for`'s hash up to the body: resumed (a copy) with a body's JSON bytes, it
    gives that call's key without hashing the identity again."""
    return hashlib.sha256(f"{identity}\x1f".encode())


_SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-*]{6,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.]{8,}"),
    re.compile(r"(?i)(x-api-key['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9_\-.]{8,}"),
]
_KNOWN_SECRETS: set[str] = set()


def remember_secret(value: str | None) -> None:
    """Register a key seen on a model so :func:`redact` can scrub it anywhere."""
    if value and len(value) >= 6:
        _KNOWN_SECRETS.add(value)


def remember_model_secrets(model: Any) -> None:
    """Register every key a model holds (its ``SecretStr`` settings, whatever their format)
    so :func:`redact` scrubs the actual values, not only the ones that look like keys."""
    for value in getattr(model, "__dict__", {}).values():
        if isinstance(value, SecretStr):
            remember_secret(value.get_secret_value())


def redact(text: str) -> str:
    """Scrub API keys from text bound for the store, logs or error messages."""
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


class FailureKind(StrEnum):
    RATE_LIMIT = "rate_limit"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    #: the host was not reached at all: connection refused, name not resolved, or no
    #: connection in time (never an HTTP answer); counted by the host's circuit breaker
    UNREACHABLE = "unreachable"
    #: OpenAI flex processing had no capacity (429 "Resource Unavailable", not billed):
    #: not a rate limit, so it neither slows the lane nor pauses it; the call backs off on
    #: its own, then falls back by the job's ``flex_fallback``
    UNAVAILABLE = "unavailable"
    REQUEST = "request"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    message: str
    status: int | None = None
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in (
            FailureKind.RATE_LIMIT,
            FailureKind.SERVER,
            FailureKind.TIMEOUT,
            FailureKind.CONNECTION,
            FailureKind.UNREACHABLE,
            FailureKind.UNAVAILABLE,
        )


@dataclass(frozen=True, slots=True)
class RateInfo:
    """What a provider's rate-limit headers say."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


@dataclass(slots=True)
class CallRequest:
    provider: str
    endpoint: str
    model: str
    #: the JSON body exactly as it goes to the provider (streaming keys aside)
    body: dict[str, Any]
    #: rate-limit lane: provider, destination and model
    lane: str
    key: str
    est_tokens: int
    headers: dict[str, str] = field(default_factory=dict)
    #: size of the JSON body, and the most output tokens it allows (None: not capped)
    body_bytes: int = 0
    max_output: int | None = None
    #: sha256 of the canonical body without streaming keys: the provider-side identity of
    #: the request (the sandbox ledger's ``request_hash``), stored for audits
    body_hash: str = ""
    #: adapter-private details needed to send or parse (never stored)
    context: dict[str, Any] = field(default_factory=dict)
    #: the key's inputs other than the body (:func:`call_identity`)
    identity: str = ""
    #: the input tokens it holds in its model's batch queue, when whoever built it knows
    #: them (a request template: from its texts' lengths); None: counted from the body
    queued_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    """A successful response: the body text to store and the headers to pace from."""

    text: str
    headers: Mapping[str, str]


class Unsupported(Exception):
    """This call cannot go through the adapter (e.g. it would use the OpenAI Responses
    API): :meth:`ProviderAdapter.build` raises it and the call runs through the model's own
    code instead (realtime only)."""


@dataclass(frozen=True, slots=True)
class ProviderBatch:
    """One batch at a provider, as its Batch API reports it on create or in a listing."""

    #: the provider's id for it (OpenAI ``batch_...``, Anthropic ``msgbatch_...``)
    id: str
    #: when the provider created it (Unix seconds); None when the provider did not say
    created_at: float | None = None
    #: how many requests it holds; None when the provider did not say
    n_requests: int | None = None
    #: metadata the batch carries (providers without metadata: empty)
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchIntent:
    """A batch this job asked a provider to create, as recorded before asking: what
    :meth:`BatchAPI.find_created` matches on when the answer (the provider's id) was lost."""

    #: batchain's id for the batch (OpenAI batches carry it in their metadata)
    uid: str
    #: when the intent was recorded (Unix seconds): the batch cannot be older
    created_after: float
    #: the latest the create can have reached the provider (Unix seconds, our clock)
    created_before: float
    #: how many requests the batch holds
    n_requests: int
    #: provider ids some batch of the store already owns: never the one we are looking for
    taken: frozenset[str] = frozenset()


class Identification(StrEnum):
    """How a provider batch whose create answer was lost is known to be ours."""

    #: the batch carries the intent's uid (OpenAI: metadata): what
    #: :meth:`BatchAPI.find_created` returns is ours
    METADATA = "metadata"
    #: nothing but its requests names it (Anthropic): :meth:`BatchAPI.find_created` returns
    #: candidates, and one is ours only once its results carry the custom ids of the
    #: intent's calls, which carry the intent's nonce (:meth:`BatchAPI.custom_id`)
    RESULTS = "results"


class BatchAPI(Protocol):
    """One provider's Batch API I/O. Pure decisions (limits, line formats, outcomes) live
    in :mod:`batchain.providers.batch`; this only moves bytes through ``client``, the
    adapter's :meth:`ProviderAdapter.client` (as copied for the job)."""

    #: the provider's per-batch limits: the engine splits batches under them
    limits: BatchLimits
    #: whether :meth:`find_created` names our batch, or only candidates for it
    identification: Identification

    def custom_id(self, nonce: str, key: str) -> str:
        """The custom id of call ``key`` in the batch whose intent drew ``nonce`` ("" for
        batches recorded before nonces existed): what the batch's results name the call
        by. With :attr:`Identification.RESULTS` it must carry the nonce, so that no other
        batch's results can name it."""
        ...

    def encode(self, custom_id: str, request: CallRequest) -> bytes:
        """One request as its batch line (or entry), under ``custom_id``."""
        ...

    def split_key(self, request: CallRequest) -> str:
        """What, beyond lane and endpoint, requests in one batch must share (e.g. the
        Anthropic beta header sent with the whole batch); "" when nothing."""
        ...

    async def create(
        self, client: Any, uid: str, job_id: str, lines: list[bytes], requests: list[CallRequest]
    ) -> ProviderBatch: ...

    async def retrieve(self, client: Any, provider_id: str) -> BatchView:
        """The batch as it is now; raises :class:`~batchain.errors.BatchNotFound` when the
        provider says it does not exist (any other error counts as transient)."""
        ...

    async def outcomes(self, client: Any, view: BatchView, keys: list[str]) -> list[Outcome]: ...

    async def cancel(self, client: Any, provider_id: str) -> None:
        """Ask the provider to cancel the batch; raises
        :class:`~batchain.errors.BatchNotFound` when it does not know it."""
        ...

    async def find_created(self, client: Any, intent: BatchIntent) -> list[ProviderBatch]:
        """The provider batches that may be the one ``intent`` created, if its create went
        through. :attr:`Identification.METADATA`: the one batch that carries the intent's
        uid, or none. :attr:`Identification.RESULTS`: every batch it could be (none: the
        create never reached the provider, and the engine sends the calls anew)."""
        ...


@runtime_checkable
class PlainTextAnswers(Protocol):
    """What an adapter may add to :class:`ProviderAdapter` (the OpenAI and Anthropic ones
    do): the text of an answer that is only text, read without parsing it the model's way."""

    def plain_text(self, body: Body) -> str | None:
        """The answer's text when the answer is one plain text message and nothing more (no
        tool calls, refusal, citations or other parts): what a string output parser makes
        of it. None for any other answer, which then goes through ``parse``."""
        ...


@runtime_checkable
class BatchEndpoints(Protocol):
    """What an adapter may add to :class:`ProviderAdapter` (the OpenAI and Anthropic ones
    do): where a model's calls go, so that batch mode parks only calls whose endpoint has
    the adapter's Batch API (see :mod:`batchain.providers.endpoints`)."""

    def endpoint(self, model: BaseChatModel) -> str:
        """The base URL the model's calls go to."""
        ...

    def probe_batch_api(self, model: BaseChatModel) -> bool:
        """Does the model's endpoint serve this adapter's Batch API? One listing of its
        batches, at no cost: False only if the endpoint says it has no such route (404, 405)."""
        ...

    def batch_refusal(self, model: BaseChatModel) -> str | None:
        """Why this model's calls cannot go to the Batch API wherever they are sent (e.g.
        they use an API it does not take), as a phrase; None when they can."""
        ...


class ProviderAdapter(Protocol):
    name: str
    #: whether this adapter can run calls through the provider's Batch API
    batchable: bool

    def build(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        salt: str,
    ) -> CallRequest: ...

    def client(self, model: BaseChatModel) -> Any:
        """The model's own SDK client (the job sends through a copy of it), or None."""
        ...

    def job_client(self, client: Any, max_connections: int) -> Any:
        """The copy of ``client`` (from :meth:`client`) one job sends through: same settings,
        its own connection pool for ``max_connections``. A client with no pool of its own
        may be returned as it is."""
        ...

    async def send(self, model: BaseChatModel, client: Any, request: CallRequest, timeout: float) -> Sent: ...

    def parse(self, model: BaseChatModel, request: CallRequest, body: Body) -> ChatResult: ...

    def usage(self, body: Body) -> Usage: ...

    def classify(self, exc: BaseException) -> Failure: ...

    def rate_info(self, headers: Mapping[str, str]) -> RateInfo | None: ...

    def batch_api(self) -> BatchAPI | None:
        """This adapter's Batch API (None when it has none: ``batchable`` is then False)."""
        ...
