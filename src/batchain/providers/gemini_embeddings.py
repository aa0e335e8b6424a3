"""Gemini embeddings: google-genai's ``models.embed_content``, realtime and in batches.

A call is caught where every caller makes it: ``Models.embed_content`` /
``AsyncModels.embed_content`` (``GoogleGenerativeAIEmbeddings.embed_documents``,
``aembed_query`` and the rest end there, as does a direct SDK call inside a job; see
:mod:`batchain.engine.hook`). The call's "model" is that SDK resource; its body is what
the SDK itself sends for the Developer API: ``batchEmbedContents`` with one request per
content (``model``, ``content``, ``taskType``, ``title``, ``outputDimensionality``).

In batch mode a call becomes one ``asyncBatchEmbedContent`` item per content (the Batch
API embeds one content a request), keyed ``<call key>#<index>.<count>.<tokens>``; its
answers are put back together into the ``batchEmbedContents`` answer a realtime call gets.

Usage: the Developer API's embedding answers carry no token count (google-genai reads a
``usageMetadata`` when there is one, and so does :meth:`GeminiEmbeddingsAdapter.usage`).
Without one, the call's input tokens are estimated from its texts (~4 characters a
token) and stored with its answer under :data:`ESTIMATE_KEY`, which the SDK ignores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchain import _json
from batchain.cost.tokens import CHARS_PER_TOKEN
from batchain.providers.base import Body, CallRequest, RateInfo, Sent, parsed, remember_secret
from batchain.providers.batch import BatchView, Outcome, OutcomeKind
from batchain.providers.embeddings import EmbeddingsOnly
from batchain.providers.gemini import (
    GeminiAdapter,
    GeminiBatchAPI,
    api_client,
    gemini_request,
    model_path,
    probe,
)
from batchain.store.records import Usage

__all__ = ["ESTIMATE_KEY", "GeminiEmbeddingsAdapter", "GeminiEmbeddingsBatchAPI", "embed_body", "is_genai"]

ENDPOINT = ":batchEmbedContents"
#: where an answer without usage keeps batchain's estimate of its input tokens
ESTIMATE_KEY = "batchainEstimatedInputTokens"


def is_genai(resource: Any) -> bool:
    """Is ``resource`` a google-genai object (its ``models``), not an OpenAI one?"""
    return type(resource).__module__.startswith("google.genai")


def embed_body(api: Any, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model path and REST body google-genai sends (Developer API) for
    ``models.embed_content(**params)``."""
    from google.genai import _common, _transformers, models, types

    model, contents = params["model"], params["contents"]
    if _transformers.t_is_multimodal_embedding_model(model):
        contents = _transformers.t_contents(contents)  # as the SDK's embed_content does
    private = types._EmbedContentParametersPrivate(
        model=model, contents=contents, config=params.get("config")
    )
    body: dict[str, Any] = models._EmbedContentParametersPrivate_to_mldev(api, private, None, private)
    path = str(body["_url"]["model"])
    for key in ("_url", "_query", "config"):
        body.pop(key, None)
    out: dict[str, Any] = _common.encode_unserializable_types(_common.convert_to_dict(body))
    return path, out


def _tokens(request: Mapping[str, Any]) -> int:
    """About how many input tokens one embed request is (its texts' characters / 4)."""
    content = request.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    chars = sum(len(str(p.get("text") or "")) for p in parts or () if isinstance(p, dict))
    return max(1, chars // CHARS_PER_TOKEN)


def with_estimate(data: dict[str, Any], requests: list[Mapping[str, Any]]) -> dict[str, Any]:
    """An answer with batchain's token estimate when it carries no usage of its own."""
    if not data.get("usageMetadata"):
        data[ESTIMATE_KEY] = sum(_tokens(r) for r in requests)
    return data


class GeminiEmbeddingsAdapter(EmbeddingsOnly, GeminiAdapter):
    """The adapter of ``embed_content`` calls; its "model" is the SDK's ``models`` resource,
    which has the SDK's HTTP client like a ``genai.Client``."""

    def batch_api(self) -> GeminiEmbeddingsBatchAPI:
        return GeminiEmbeddingsBatchAPI()

    def request(self, resource: Any, params: Mapping[str, Any], salt: str) -> CallRequest:
        api = api_client(resource)
        if getattr(api, "vertexai", False):
            raise TypeError(
                "a Vertex AI embed_content call inside a batchain job: batchain sends Gemini "
                "embeddings through the Gemini Developer API only (an API key client)"
            )
        path, body = embed_body(api, params)
        remember_secret(getattr(api, "api_key", None))
        request = gemini_request(self.endpoint(resource), path, ENDPOINT, body, salt, None)
        request.max_output = 0  # nothing is generated: the call's cost is its input
        return request

    def client(self, model: Any) -> Any:
        return model  # the models resource: its ``_api_client`` is all a send needs

    def probe_batch_api(self, model: Any) -> bool:
        return probe(api_client(model))

    async def send(self, model: Any, client: Any, request: CallRequest, timeout: float) -> Sent:
        path = f"{model_path(request.model)}{ENDPOINT}"
        options = {"timeout": int(timeout * 1000)}
        response = await api_client(client).async_request("post", path, dict(request.body), options)
        data = with_estimate(_json.loads(response.body or "{}"), request.body.get("requests") or [])
        return Sent(_json.dumps(data), response.headers or {})

    def usage(self, body: Body) -> Usage:
        data = parsed(body)
        data = data if isinstance(data, dict) else {}
        u = data.get("usageMetadata") or {}
        tokens = u.get("promptTokenCount") if u else data.get(ESTIMATE_KEY)
        return Usage(input_tokens=int(tokens or 0), output_tokens=0, requests=1)

    def rate_info(self, headers: Mapping[str, str]) -> RateInfo | None:
        return None  # Gemini sends no rate-limit headers


def _sub_key(custom_id: str, index: int, count: int, tokens: int) -> str:
    return f"{custom_id}#{index}.{count}.{tokens}"


def _split_key(key: str) -> tuple[str, int, int, int]:
    custom_id, _, rest = key.rpartition("#")
    index, count, tokens = (int(x) for x in rest.split("."))
    return custom_id, index, count, tokens


class GeminiEmbeddingsBatchAPI(GeminiBatchAPI):
    """``asyncBatchEmbedContent``: a call's contents go as one item each (see the module
    docstring); everything else is the generate batches' (same Operation, same output)."""

    method = ":asyncBatchEmbedContent"

    def encode(self, custom_id: str, request: CallRequest) -> bytes:
        requests = request.body.get("requests") or []
        lines = []
        for index, item in enumerate(requests):
            # the SDK's batch items carry no model: the batch's is theirs
            inner = {k: v for k, v in item.items() if k != "model"}
            key = _sub_key(custom_id, index, len(requests), _tokens(item))
            lines.append(_json.dumps({"key": key, "request": inner}))
        return "\n".join(lines).encode()

    async def outcomes(self, client: Any, view: BatchView, keys: list[str]) -> list[Outcome]:
        parts: dict[str, dict[int, Outcome]] = {}
        counts: dict[str, tuple[int, int]] = {}  # custom_id -> (contents, estimated tokens)
        for outcome in await super().outcomes(client, view, keys):
            custom_id, index, count, tokens = _split_key(outcome.custom_id)
            parts.setdefault(custom_id, {})[index] = outcome
            n, total = counts.get(custom_id, (count, 0))
            counts[custom_id] = (n, total + tokens)
        return [_joined(custom_id, parts[custom_id], *counts[custom_id]) for custom_id in parts]


def _joined(custom_id: str, parts: dict[int, Outcome], count: int, tokens: int) -> Outcome:
    """One call's outcome from its contents': its answer, or its first failure."""
    ordered = [parts.get(i) for i in range(count)]
    for part in ordered:
        if part is None:
            return Outcome(custom_id, OutcomeKind.RETRY, "gemini: a content of the call has no result", 500)
        if part.kind is not OutcomeKind.SUCCEEDED:
            return Outcome(custom_id, part.kind, part.body, part.status, part.reason)
    embeddings = [(p.data or {}).get("embedding") for p in ordered if p is not None]
    data: dict[str, Any] = {"embeddings": embeddings}
    if tokens:
        data[ESTIMATE_KEY] = tokens
    return Outcome(custom_id, OutcomeKind.SUCCEEDED, _json.dumps(data), 200, data=data)
