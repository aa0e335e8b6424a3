"""OpenAI embeddings: ``/v1/embeddings`` calls, realtime and as batch lines.

An embeddings call is caught where every caller makes it: the OpenAI SDK's
``embeddings.create`` (``OpenAIEmbeddings.embed_documents`` / ``aembed_documents`` /
``embed_query`` and their length-safe chunking all end there, as does a direct SDK call
inside a job; see :mod:`batchain.engine.hook`). The call's "model" is that SDK resource:
its client is where the call goes, its body what LangChain built. Everything else is a
chat call's: the key (so identical texts are embedded once and reused by later jobs),
the store, the budget, the Batch API (OpenAI takes ``/v1/embeddings`` batch lines, at half
price) and the report.
"""

from __future__ import annotations

import array
import base64
from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from batchain.providers._sdk import (
    PROBE_TIMEOUT_S,
    answers_listing,
    classify_sdk_error,
    clean_payload,
    fresh_client,
    rate_info_from,
    response_class,
    sdk_request,
)
from batchain.providers.base import (
    Body,
    CallRequest,
    Failure,
    RateInfo,
    Sent,
    parsed,
    remember_secret,
)
from batchain.providers.openai import OpenAIBatchAPI, go_duration
from batchain.store.records import Usage

__all__ = ["EMBEDDINGS_ENDPOINT", "EmbeddingsOnly", "OpenAIEmbeddingsAdapter", "async_twin", "decoded"]

EMBEDDINGS_ENDPOINT = "/v1/embeddings"


def async_twin(client: Any) -> Any:
    """An async client with the settings of ``client`` (itself when it is async): a sync
    SDK call inside a job is sent, and batched, by the job's async machinery."""
    import openai

    if isinstance(client, openai.AsyncOpenAI):
        return client
    if type(client) is not openai.OpenAI:  # Azure's sync client carries more than these
        raise TypeError(
            f"an embeddings call through a sync {type(client).__name__} inside a batchain job: "
            "call it with `await ...aembed_documents(...)` (the async client) instead"
        )
    return _twin(openai.AsyncOpenAI, client)


def sync_twin(client: Any) -> Any:
    """A sync client with the settings of an async ``client`` (for a probe made from sync code)."""
    import openai

    return _twin(openai.OpenAI, client)


def _twin(cls: Any, client: Any) -> Any:
    return cls(
        api_key=client.api_key,
        organization=client.organization,
        project=client.project,
        base_url=client.base_url,
        timeout=client.timeout,
        max_retries=client.max_retries,
        default_headers=client._custom_headers,
        default_query=client._custom_query,
    )


def decoded(data: dict[str, Any]) -> dict[str, Any]:
    """An answer to a call whose caller chose no encoding: its base64 vectors as floats,
    exactly as the SDK decodes them (float32 values)."""
    for item in data.get("data") or []:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, str):
            item["embedding"] = array.array("f", base64.b64decode(vector)).tolist()
    return data


class EmbeddingsOnly:
    """The chat half of :class:`~batchain.providers.base.ProviderAdapter`, as an embeddings
    adapter has it: its calls are built by ``request()`` and answered with vectors."""

    def build(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        salt: str,
    ) -> CallRequest:
        raise TypeError("embeddings calls are built with request(), not from chat messages")

    def parse(self, model: Any, request: CallRequest, body: Body) -> ChatResult:
        raise TypeError("an embeddings answer is a list of vectors, not a chat result")


class OpenAIEmbeddingsAdapter(EmbeddingsOnly):
    """The adapter of ``/v1/embeddings`` calls; its "model" is the SDK's embeddings resource."""

    name = "openai"
    batchable = True

    def __init__(self) -> None:
        self._twins: dict[int, Any] = {}

    def batch_api(self) -> OpenAIBatchAPI:
        return OpenAIBatchAPI()

    def request(self, resource: Any, params: Mapping[str, Any], salt: str) -> CallRequest:
        """The call for ``resource.create(**params)``: the body the SDK itself sends (extras
        merged; base64 vectors unless the caller chose an encoding, which
        :func:`decoded` turns into floats as the SDK does)."""
        import openai

        unset = (openai.NotGiven, openai.Omit)  # the SDK's "not given" markers
        body = {
            k: v
            for k, v in params.items()
            if not k.startswith("extra_") and k != "timeout" and not isinstance(v, unset)
        }
        body.update(params.get("extra_body") or {})
        body.setdefault("encoding_format", "base64")
        clean_payload(body)
        client = self.client(resource)
        remember_secret(getattr(client, "api_key", None))
        request = sdk_request(
            self.name,
            str(client.base_url),
            EMBEDDINGS_ENDPOINT,
            body,
            salt,
            max_tokens=None,
            headers=dict(params.get("extra_headers") or {}),
            context={},
        )
        request.max_output = 0  # nothing is generated: the call's cost is its input
        return request

    def client(self, model: Any) -> Any:
        original = model._client  # the resource's root client
        twin = self._twins.get(id(original))
        if twin is None:
            twin = self._twins[id(original)] = (original, async_twin(original))
        return twin[1]

    def job_client(self, client: Any, max_connections: int) -> Any:
        return fresh_client(client, max_connections)

    def endpoint(self, model: Any) -> str:
        return str(self.client(model).base_url)

    def batch_refusal(self, model: Any) -> str | None:
        return None

    def probe_batch_api(self, model: Any) -> bool:
        import openai

        original = model._client
        if isinstance(original, openai.AsyncAzureOpenAI | openai.AzureOpenAI):
            return True  # Azure's hosts are in the table; a proxy in front of one is taken at its word
        sync = original if isinstance(original, openai.OpenAI) else sync_twin(original)
        client = sync.with_options(max_retries=0, timeout=PROBE_TIMEOUT_S)
        return answers_listing(lambda: client.batches.list(limit=1))

    async def send(self, model: Any, client: Any, request: CallRequest, timeout: float) -> Sent:
        options: dict[str, Any] = {"max_retries": 0, "timeout": timeout}
        if request.headers:
            options["headers"] = request.headers
        response: Any = await client.post(
            "/embeddings", body=request.body, cast_to=response_class(client), options=options
        )
        return Sent(response.text, response.headers)

    def usage(self, body: Body) -> Usage:
        data = parsed(body)
        u = (data.get("usage") if isinstance(data, dict) else None) or {}
        return Usage(input_tokens=int(u.get("prompt_tokens") or 0), output_tokens=0, requests=1)

    def classify(self, exc: BaseException) -> Failure:
        return classify_sdk_error(exc, self.name)

    def rate_info(self, headers: Mapping[str, str]) -> RateInfo | None:
        return rate_info_from(headers, "x-ratelimit-{field}-{unit}", go_duration)
