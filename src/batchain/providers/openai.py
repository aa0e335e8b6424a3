"""Adapter for ``ChatOpenAI`` (and subclasses such as ``AzureChatOpenAI``): Chat Completions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import BaseModel

from batchain._failpoints import failpoint
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
    Unsupported,
    parsed,
    remember_secret,
)
from batchain.providers.batch import (
    OPENAI_LIMITS,
    BatchView,
    Outcome,
    openai_failed_batch_outcomes,
    openai_line,
    openai_outcomes,
    openai_view,
)
from batchain.providers.promptcache import CachePrefix, PrefixMemo, openai_prefix
from batchain.store.records import Usage

#: ``Unsupported`` lives in :mod:`batchain.providers.base`; still importable from here
__all__ = ["OpenAIAdapter", "OpenAIBatchAPI", "Unsupported"]

ENDPOINT = "/v1/chat/completions"
RESPONSES_ENDPOINT = "/v1/responses"


class OpenAIAdapter:
    name = "openai"
    batchable = True

    def batch_api(self) -> OpenAIBatchAPI:
        return OpenAIBatchAPI()

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
        payload.pop("ls_structured_output_format", None)
        responses = bool(m._use_responses_api(payload))
        clean_payload(payload)
        context: dict[str, Any] = {}
        if responses:
            _responses_format(payload, context)
        else:
            fmt = payload.get("response_format")
            if isinstance(fmt, type) and issubclass(fmt, BaseModel):
                from openai.lib._parsing._completions import type_to_response_format_param

                context["schema"] = fmt
                payload["response_format"] = type_to_response_format_param(fmt)
        headers = dict(payload.pop("extra_headers", None) or {})
        payload.pop("extra_query", None)
        client = m.root_async_client
        remember_secret(getattr(client, "api_key", None))
        limit = (
            payload.get("max_output_tokens")
            if responses
            else payload.get("max_completion_tokens", payload.get("max_tokens"))
        )
        return sdk_request(
            self.name,
            str(client.base_url),
            RESPONSES_ENDPOINT if responses else ENDPOINT,
            payload,
            salt,
            max_tokens=limit
            if responses
            else payload.get("max_completion_tokens", payload.get("max_tokens")),
            headers=headers,
            context=context,
        )

    def client(self, model: BaseChatModel) -> Any:
        m: Any = model  # a BaseChatOpenAI: its client is not part of BaseChatModel
        return m.root_async_client

    def endpoint(self, model: BaseChatModel) -> str:
        return str(self.client(model).base_url)

    def batch_refusal(self, model: BaseChatModel) -> str | None:
        return None  # chat completions and the Responses API both have batch lines

    def probe_batch_api(self, model: BaseChatModel) -> bool:
        m: Any = model
        client = m.root_client.with_options(max_retries=0, timeout=PROBE_TIMEOUT_S)
        return answers_listing(lambda: client.batches.list(limit=1))

    def job_client(self, client: Any, max_connections: int) -> Any:
        return fresh_client(client, max_connections)

    async def send(self, model: BaseChatModel, client: Any, request: CallRequest, timeout: float) -> Sent:
        options: dict[str, Any] = {"max_retries": 0, "timeout": timeout}
        if request.headers:
            options["headers"] = request.headers
        path = "/responses" if request.endpoint == RESPONSES_ENDPOINT else "/chat/completions"
        response: Any = await client.post(
            path, body=request.body, cast_to=response_class(client), options=options
        )
        return Sent(response.text, response.headers)

    def parse(self, model: BaseChatModel, request: CallRequest, body: Body) -> ChatResult:
        m: Any = model
        if request.endpoint == RESPONSES_ENDPOINT:
            result = _responses_result(m, parsed(body))
        else:
            result = m._create_chat_result(parsed(body))
        schema = request.context.get("schema")
        if schema is not None:
            for gen in result.generations:
                msg = gen.message
                if not isinstance(msg, AIMessage) or msg.additional_kwargs.get("refusal"):
                    continue
                # a Responses answer's content is a list of blocks: its text is theirs
                text = msg.content if isinstance(msg.content, str) else msg.text
                if text and not any(b.get("type") == "refusal" for b in _blocks(msg.content)):
                    # what the live `.parse()` path would have put there
                    msg.additional_kwargs["parsed"] = schema.model_validate_json(text)
        return result

    def usage(self, body: Body) -> Usage:
        return usage_from_body(parsed(body))

    def plain_text(self, body: Body) -> str | None:
        data = parsed(body)
        if isinstance(data, dict) and data.get("object") == "response":
            return None  # a Responses answer's content is a list of blocks: parsed the model's way
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            return None
        message = choices[0].get("message")
        if not isinstance(message, dict) or message.get("role") != "assistant":
            return None
        content = message.get("content")
        if not isinstance(content, str):
            return None
        for k in _NOT_PLAIN:  # a loop, not any(...): no generator per answer of a batch
            if message.get(k):
                return None
        return content

    def classify(self, exc: BaseException) -> Failure:
        return classify_sdk_error(exc, self.name)

    def rate_info(self, headers: Mapping[str, str]) -> RateInfo | None:
        return rate_info_from(headers, "x-ratelimit-{field}-{unit}", go_duration)


#: message fields that make an answer more than its text
_NOT_PLAIN = ("tool_calls", "function_call", "refusal", "audio")


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _responses_format(payload: dict[str, Any], context: dict[str, Any]) -> None:
    """A Pydantic ``text_format`` (what ``responses.parse`` takes) as the JSON schema the
    wire carries; the class stays in ``context`` to parse the answer with."""
    fmt = payload.pop("text_format", None)
    if isinstance(fmt, type) and issubclass(fmt, BaseModel):
        from openai.lib._parsing._responses import type_to_text_format_param

        context["schema"] = fmt
        text = dict(payload.get("text") or {})
        text["format"] = type_to_text_format_param(fmt)
        payload["text"] = text


def _responses_result(model: Any, data: Any) -> ChatResult:
    """A Responses API answer as LangChain's own code makes it into a ``ChatResult``."""
    from langchain_openai.chat_models.base import _construct_lc_result_from_responses_api
    from openai.types.responses import Response

    # as the SDK reads an answer: leniently, nested models built, no field required (a
    # field the API added or dropped since this SDK must not fail a paid call)
    response = Response.construct(**data)
    result: ChatResult = _construct_lc_result_from_responses_api(
        response, metadata={}, output_version=model.output_version
    )
    return result


def usage_from_body(body: Mapping[str, Any]) -> Usage:
    if body.get("object") == "response":
        return _responses_usage(body.get("usage") or {})
    u = body.get("usage") or {}
    prompt_details = u.get("prompt_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(u.get("prompt_tokens") or 0),
        output_tokens=int(u.get("completion_tokens") or 0),
        cache_read_tokens=int(prompt_details.get("cached_tokens") or 0),
        cache_creation_tokens=int(prompt_details.get("cache_write_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
        requests=1,
    )


def _responses_usage(u: Mapping[str, Any]) -> Usage:
    details = u.get("input_tokens_details") or {}
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0),
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=int(details.get("cached_tokens") or 0),
        cache_creation_tokens=int(details.get("cache_write_tokens") or 0),
        reasoning_tokens=int((u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
        requests=1,
    )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def go_duration(value: str | None) -> float | None:
    """Parse OpenAI's Go-style durations: ``12ms``, ``1s``, ``6m0s``, ``1h2m3.5s``."""
    if not value:
        return None
    parts = _DURATION.findall(value)
    if not parts:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


class OpenAIBatchAPI:
    """OpenAI Batch I/O through the official SDK: one JSONL file per batch."""

    limits = OPENAI_LIMITS
    identification = Identification.METADATA
    #: OpenAI caches shared prefixes by itself: grouping them is all it takes
    primes = False

    def __init__(self) -> None:
        self._prefixes = PrefixMemo()

    def cache_prefix(self, request: CallRequest) -> CachePrefix | None:
        return openai_prefix(request.body, self._prefixes)

    def min_cacheable(self, model: str) -> int:
        return 1024

    def mark(self, request: CallRequest) -> CallRequest:
        return request

    def custom_id(self, nonce: str, key: str) -> str:
        return key  # the batch's metadata names it: its custom ids need no nonce

    def encode(self, custom_id: str, request: CallRequest) -> bytes:
        return openai_line(custom_id, request.endpoint, request.body)

    def split_key(self, request: CallRequest) -> str:
        return ""

    async def create(
        self, client: Any, uid: str, job_id: str, lines: list[bytes], requests: list[CallRequest]
    ) -> ProviderBatch:
        data = b"".join(lines)
        upload = await client.files.create(
            file=(f"batchain-{uid}.jsonl", data, "application/jsonl"), purpose="batch"
        )
        failpoint("batch_after_upload")
        # never retried by the SDK: a retry after a lost answer would create a second batch;
        # the coordinator settles a failed create by finding the batch by its metadata
        batch = await client.with_options(max_retries=0).batches.create(
            input_file_id=upload.id,
            endpoint=requests[0].endpoint,
            completion_window="24h",
            metadata={"batchain_uid": uid, "batchain_job": job_id[:500]},
        )
        return _provider_batch(batch)

    async def retrieve(self, client: Any, provider_id: str) -> BatchView:
        with batch_not_found(provider_id):
            batch = await client.batches.retrieve(provider_id)
        return openai_view(batch.model_dump())

    async def outcomes(self, client: Any, view: BatchView, keys: list[str]) -> list[Outcome]:
        if view.status == "failed":
            return list(openai_failed_batch_outcomes(keys, view.errors))
        found: list[Outcome] = []
        for ref in (view.output_ref, view.error_ref):
            if ref:
                content = await client.files.content(ref)
                found.extend(openai_outcomes(content.content))
        return found

    async def cancel(self, client: Any, provider_id: str) -> None:
        with batch_not_found(provider_id):
            await client.batches.cancel(provider_id)

    async def find_created(self, client: Any, intent: BatchIntent) -> list[ProviderBatch]:
        """The batch we created with the intent's uid in its metadata, if the create went
        through (OpenAI batches carry metadata, so the match is certain)."""
        async for listed in client.batches.list(limit=100):
            batch = _provider_batch(listed)
            if batch.metadata.get("batchain_uid") == intent.uid:
                return [batch]
            if batch.created_at is not None and batch.created_at < intent.created_after - 3600:
                return []  # listed newest first: older ones cannot be ours
        return []


def _provider_batch(batch: Any) -> ProviderBatch:
    """An SDK ``Batch`` as a :class:`ProviderBatch`."""
    counts = getattr(batch, "request_counts", None)
    total = getattr(counts, "total", None)
    created = getattr(batch, "created_at", None)
    return ProviderBatch(
        id=str(batch.id),
        created_at=float(created) if created is not None else None,
        n_requests=int(total) if total is not None else None,
        metadata=dict(batch.metadata or {}),
    )
