"""Adapter for ``ChatAnthropic``: the Messages API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from batchain import _json
from batchain.providers._sdk import (
    PROBE_TIMEOUT_S,
    answers_listing,
    batch_not_found,
    classify_sdk_error,
    clean_payload,
    fresh_client,
    rate_info_from,
    response_class,
    sdk_request,
)
from batchain.providers.base import (
    BatchIntent,
    Body,
    CallRequest,
    Failure,
    Identification,
    ProviderBatch,
    RateInfo,
    Sent,
    parsed,
    remember_secret,
)
from batchain.providers.batch import (
    ANTHROPIC_LIMITS,
    BatchView,
    Outcome,
    anthropic_outcomes,
    anthropic_view,
)
from batchain.providers.promptcache import (
    CachePrefix,
    PrefixMemo,
    anthropic_mark,
    anthropic_min_cacheable,
    anthropic_prefix,
)
from batchain.store.records import Usage

__all__ = ["AnthropicAdapter", "AnthropicBatchAPI"]

ENDPOINT = "/v1/messages"
#: Anthropic's custom ids: ``^[a-zA-Z0-9_-]{1,64}$``
_MAX_CUSTOM_ID = 64
#: how far the provider's clock may be from ours when listing batches by creation time
_CLOCK_SKEW_S = 120.0


class AnthropicAdapter:
    name = "anthropic"
    batchable = True

    def batch_api(self) -> AnthropicBatchAPI:
        return AnthropicBatchAPI()

    def build(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        salt: str,
    ) -> CallRequest:
        m: Any = model
        payload: dict[str, Any] = m._get_request_payload(messages, stop=stop, **kwargs)
        headers: dict[str, str] = {}
        betas = payload.pop("betas", None)
        if betas:
            # batches take betas as a header too, so keep them out of the body everywhere
            headers["anthropic-beta"] = ",".join(betas)
        clean_payload(payload)
        client = m._async_client
        remember_secret(getattr(client, "api_key", None))
        remember_secret(getattr(client, "auth_token", None))
        return sdk_request(
            self.name,
            str(client.base_url),
            ENDPOINT,
            payload,
            salt,
            max_tokens=payload.get("max_tokens"),
            headers=headers,
            context={"beta": bool(betas)},
            key_endpoint=ENDPOINT + headers.get("anthropic-beta", ""),
        )

    def client(self, model: BaseChatModel) -> Any:
        m: Any = model  # a ChatAnthropic: its client is not part of BaseChatModel
        return m._async_client

    def endpoint(self, model: BaseChatModel) -> str:
        return str(self.client(model).base_url)

    def batch_refusal(self, model: BaseChatModel) -> str | None:
        return None

    def probe_batch_api(self, model: BaseChatModel) -> bool:
        m: Any = model
        client = m._client.with_options(max_retries=0, timeout=PROBE_TIMEOUT_S)
        return answers_listing(lambda: client.messages.batches.list(limit=1))

    def job_client(self, client: Any, max_connections: int) -> Any:
        return fresh_client(client, max_connections)

    async def send(self, model: BaseChatModel, client: Any, request: CallRequest, timeout: float) -> Sent:
        options: dict[str, Any] = {"max_retries": 0, "timeout": timeout}
        if request.headers:
            options["headers"] = request.headers
        response: Any = await client.post(
            "/v1/messages", body=request.body, cast_to=response_class(client), options=options
        )
        return Sent(response.text, response.headers)

    def parse(self, model: BaseChatModel, request: CallRequest, body: Body) -> ChatResult:
        from anthropic.types import Message
        from anthropic.types.beta import BetaMessage

        message_type: Any = BetaMessage if request.context.get("beta") else Message
        if isinstance(body, str):
            message = message_type.model_validate_json(body)
        else:
            message = message_type.model_validate(body)
        m: Any = model
        result: ChatResult = m._format_output(message)
        return result

    def usage(self, body: Body) -> Usage:
        return usage_from_body(parsed(body))

    def plain_text(self, body: Body) -> str | None:
        data = parsed(body)
        if (
            not isinstance(data, dict)
            or data.get("type") != "message"
            or data.get("stop_reason") == "refusal"
        ):
            return None
        content = data.get("content")
        if not isinstance(content, list) or len(content) != 1 or not isinstance(content[0], dict):
            return None
        block = content[0]
        text = block.get("text")
        if block.get("type") != "text" or block.get("citations") or not isinstance(text, str):
            return None
        return text

    def classify(self, exc: BaseException) -> Failure:
        return classify_sdk_error(exc, self.name)

    def rate_info(self, headers: Mapping[str, str]) -> RateInfo | None:
        return rate_info_from(headers, "anthropic-ratelimit-{unit}-{field}", _until)


def usage_from_body(body: Mapping[str, Any]) -> Usage:
    """Anthropic's ``input_tokens`` exclude cache tokens; ours include them."""
    u = body.get("usage") or {}
    read = int(u.get("cache_read_input_tokens") or 0)
    created = int(u.get("cache_creation_input_tokens") or 0)
    details = u.get("output_tokens_details") or {}
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0) + read + created,
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=read,
        cache_creation_tokens=created,
        reasoning_tokens=int(details.get("thinking_tokens") or 0),
        requests=1,
    )


def _until(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(when.timestamp() - datetime.now(when.tzinfo).timestamp(), 0.0)


class AnthropicBatchAPI:
    """Anthropic Message Batches I/O through the official SDK.

    Anthropic batches carry no metadata, so a batch is named by its requests alone: every
    custom id is the batch's nonce (its uid) and a prefix of the call's key, and a batch
    found after a lost create answer is ours only once its results show our custom ids."""

    limits = ANTHROPIC_LIMITS
    identification = Identification.RESULTS
    #: a batch reads only the prompt caches earlier batches wrote (see PromptCaching)
    primes = True

    def __init__(self) -> None:
        self._prefixes = PrefixMemo()

    def cache_prefix(self, request: CallRequest) -> CachePrefix | None:
        return anthropic_prefix(request.body, self._prefixes)

    def min_cacheable(self, model: str) -> int:
        return anthropic_min_cacheable(model)

    def mark(self, request: CallRequest) -> CallRequest:
        return replace(request, body=anthropic_mark(request.body))

    def custom_id(self, nonce: str, key: str) -> str:
        if not nonce:
            return key  # a batch recorded before nonces: its custom ids are the keys
        # the key's first 44 hex digits (176 bits) after a 19-character uid: 64 in all
        return f"{nonce}-{key[: _MAX_CUSTOM_ID - len(nonce) - 1]}"

    def encode(self, custom_id: str, request: CallRequest) -> bytes:
        entry = {"custom_id": custom_id, "params": request.body}
        return _json.dumpb(entry)

    def split_key(self, request: CallRequest) -> str:
        # a batch sends its beta header for all its requests
        return request.headers.get("anthropic-beta", "")

    async def create(
        self, client: Any, uid: str, job_id: str, lines: list[bytes], requests: list[CallRequest]
    ) -> ProviderBatch:
        # the encoded entries are exactly the JSON array's elements: send them as they are
        body = b'{"requests":[' + b",".join(lines) + b"]}"
        # no SDK retries: a create retried after a lost answer would be a second batch,
        # billed again; the engine settles a failed create by finding it instead
        options: dict[str, Any] = {"headers": {"content-type": "application/json"}, "max_retries": 0}
        beta = requests[0].headers.get("anthropic-beta")
        if beta:
            options["headers"]["anthropic-beta"] = beta
        response = await client.post(
            "/v1/messages/batches", content=body, cast_to=response_class(client), options=options
        )
        created = json.loads(response.text)
        return ProviderBatch(
            id=str(created["id"]),
            created_at=_timestamp(created.get("created_at")),
            n_requests=len(lines),
        )

    async def retrieve(self, client: Any, provider_id: str) -> BatchView:
        with batch_not_found(provider_id):
            batch = await client.messages.batches.retrieve(provider_id)
        return anthropic_view(json.loads(batch.model_dump_json()))

    async def outcomes(self, client: Any, view: BatchView, keys: list[str]) -> list[Outcome]:
        if not view.output_ref:
            return []
        response = await client.get(
            view.output_ref,
            cast_to=response_class(client),
            options={"headers": {"Accept": "application/binary"}},
        )
        return list(anthropic_outcomes(response.content))

    async def cancel(self, client: Any, provider_id: str) -> None:
        with batch_not_found(provider_id):
            await client.messages.batches.cancel(provider_id)

    async def find_created(self, client: Any, intent: BatchIntent) -> list[ProviderBatch]:
        """Every batch the intent's create could have made: created within its window, with
        its number of requests, owned by no batch the store knows. Which one (if any) is
        ours only their results tell."""
        candidates: list[ProviderBatch] = []
        async for listed in client.messages.batches.list(limit=100):
            created = listed.created_at.timestamp()
            if created < intent.created_after - _CLOCK_SKEW_S:
                break  # listed newest first: the rest are older still
            total = sum(listed.request_counts.model_dump().values())
            if (
                total == intent.n_requests
                and str(listed.id) not in intent.taken
                and created <= intent.created_before + _CLOCK_SKEW_S
            ):
                candidates.append(ProviderBatch(id=str(listed.id), created_at=created, n_requests=total))
        return candidates


def _timestamp(stamp: Any) -> float | None:
    """An RFC 3339 time as Unix seconds (None when absent or unreadable)."""
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
