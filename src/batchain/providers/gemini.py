"""Adapter for ``ChatGoogleGenerativeAI`` (langchain-google-genai 4, the Gemini Developer API
through the official google-genai SDK).

The model builds its own request (``_prepare_request``: contents, system instruction,
generation config, tools), the SDK turns it into the REST body it would send
(``generateContent``), and an answer is read back by the SDK and by LangChain's own
``_response_to_result``, as a direct call would. Calls go through the SDK's own HTTP
client (its auth, base URL and API version); batches through the Gemini Batch API: inline
requests up to 20 MB, a JSONL file beyond, results matched by each request's metadata key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from batchain import _json
from batchain.errors import BatchNotFound
from batchain.providers._sdk import PROBE_TIMEOUT_S, answers_listing, sdk_request, unreachable
from batchain.providers.base import (
    BatchIntent,
    Body,
    CallRequest,
    Failure,
    FailureKind,
    Identification,
    ProviderBatch,
    RateInfo,
    Sent,
    parsed,
    redact,
    remember_secret,
)
from batchain.providers.batch import BatchLimits, BatchView, Outcome, OutcomeKind
from batchain.store.records import Usage

__all__ = ["GeminiAdapter", "GeminiBatchAPI", "api_client", "classify_genai_error", "model_path"]

ENDPOINT = ":generateContent"
#: inline requests of one batch: under 20 MB (Gemini's Batch API docs); a file beyond
INLINE_BYTES = 19 * 1024 * 1024
GEMINI_LIMITS = BatchLimits(max_requests=100_000, max_bytes=1024 * 1024 * 1024)

#: wire states -> the status batchain shows
_STATES = {
    "BATCH_STATE_PENDING": "pending",
    "BATCH_STATE_RUNNING": "running",
    "BATCH_STATE_SUCCEEDED": "succeeded",
    "BATCH_STATE_FAILED": "failed",
    "BATCH_STATE_CANCELLED": "cancelled",
    "BATCH_STATE_EXPIRED": "expired",
}
_ENDED = ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED")


def api_client(client: Any) -> Any:
    return client._api_client  # the SDK's HTTP client: auth, base URL, API version


def model_path(model: str) -> str:
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


def probe(api: Any) -> bool:
    """Does the endpoint behind the SDK's HTTP client ``api`` serve the Gemini Batch API?
    One listing of a batch (see :func:`~batchain.providers._sdk.answers_listing`)."""
    options = {"timeout": int(PROBE_TIMEOUT_S * 1000)}
    return answers_listing(lambda: api.request("get", "batches?pageSize=1", {}, options))


def wire_body(client: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    """The REST body the SDK sends for ``client.models.generate_content(**request)``."""
    from google.genai import _common, models, types

    params = types._GenerateContentParameters(
        model=request["model"], contents=request["contents"], config=request.get("config")
    )
    body: dict[str, Any] = models._GenerateContentParameters_to_mldev(
        api_client(client), params, None, params
    )
    for private in ("_url", "_query", "config"):
        body.pop(private, None)
    out: dict[str, Any] = _common.encode_unserializable_types(_common.convert_to_dict(body))
    return out


def gemini_request(
    endpoint: str, path: str, method: str, body: dict[str, Any], salt: str, max_tokens: Any
) -> CallRequest:
    """The call for ``body`` sent to ``{path}{method}`` (``models/<name>:generateContent``):
    the model is in the URL, not the body, so the request is named and laned after it."""
    request = sdk_request(
        GeminiAdapter.name,
        endpoint,
        method,
        body,
        salt,
        max_tokens=max_tokens,
        headers={},
        context={},
        key_endpoint=f"{path}{method}",
    )
    name = path.split("/", 1)[1]
    request.model = name
    request.lane = f"{GeminiAdapter.name}|{endpoint}|{name}"
    return request


def read_response(data: Mapping[str, Any]) -> Any:
    """A ``generateContent`` answer as the SDK reads it (a ``GenerateContentResponse``)."""
    from google.genai import models, types

    converted = models._GenerateContentResponse_from_mldev(dict(data), None, None)
    return types.GenerateContentResponse._from_response(response=converted, kwargs={})


class GeminiAdapter:
    name = "gemini"
    batchable = True

    def batch_api(self) -> GeminiBatchAPI:
        return GeminiBatchAPI()

    def build(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        salt: str,
    ) -> CallRequest:
        m: Any = model
        # LangChain's tracing hint for structured output, not a request setting
        params = {k: v for k, v in kwargs.items() if k != "ls_structured_output_format"}
        prepared = m._prepare_request(messages, stop=stop, **params)
        client = self.client(model)
        body = wire_body(client, prepared)
        remember_secret(getattr(api_client(client), "api_key", None))
        path = model_path(str(prepared["model"]))
        config = body.get("generationConfig") or {}
        return gemini_request(self.endpoint(model), path, ENDPOINT, body, salt, config.get("maxOutputTokens"))

    def client(self, model: BaseChatModel) -> Any:
        m: Any = model
        return m.client

    def job_client(self, client: Any, max_connections: int) -> Any:
        from google import genai

        api = api_client(client)
        return genai.Client(api_key=api.api_key, http_options=api._http_options)

    def endpoint(self, model: BaseChatModel) -> str:
        api = api_client(self.client(model))
        return str(api._http_options.base_url or "https://generativelanguage.googleapis.com/")

    def batch_refusal(self, model: BaseChatModel) -> str | None:
        if getattr(api_client(self.client(model)), "vertexai", False):
            return "it calls Vertex AI, whose batch prediction batchain does not drive yet"
        return None

    def probe_batch_api(self, model: BaseChatModel) -> bool:
        return probe(api_client(self.client(model)))

    async def send(self, model: BaseChatModel, client: Any, request: CallRequest, timeout: float) -> Sent:
        path = f"{model_path(request.model)}{ENDPOINT}"
        options = {"timeout": int(timeout * 1000)}
        response = await api_client(client).async_request("post", path, dict(request.body), options)
        return Sent(response.body, response.headers or {})

    def parse(self, model: BaseChatModel, request: CallRequest, body: Body) -> ChatResult:
        from langchain_google_genai.chat_models import _response_to_result

        result: ChatResult = _response_to_result(read_response(parsed(body)))
        return result

    def usage(self, body: Body) -> Usage:
        data = parsed(body)
        u = (data.get("usageMetadata") if isinstance(data, dict) else None) or {}
        thoughts = int(u.get("thoughtsTokenCount") or 0)
        return Usage(
            input_tokens=int(u.get("promptTokenCount") or 0),
            output_tokens=int(u.get("candidatesTokenCount") or 0) + thoughts,
            cache_read_tokens=int(u.get("cachedContentTokenCount") or 0),
            reasoning_tokens=thoughts,
            requests=1,
        )

    def classify(self, exc: BaseException) -> Failure:
        return classify_genai_error(exc)

    def rate_info(self, headers: Mapping[str, str]) -> RateInfo | None:
        return None  # Gemini sends no rate-limit headers


def classify_genai_error(exc: BaseException) -> Failure:
    """A google-genai error (``errors.APIError``: ``code``, ``status``) or a transport error
    as the engine's retry decision."""
    message = redact(f"gemini: {type(exc).__name__}: {exc}")
    if unreachable(exc) is not None:
        return Failure(FailureKind.UNREACHABLE, message)
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return Failure(FailureKind.TIMEOUT, message)
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        if "Connection" in type(exc).__name__ or isinstance(exc, httpx.TransportError):
            return Failure(FailureKind.CONNECTION, message)
        return Failure(FailureKind.OTHER, message)
    if code == 429:
        return Failure(FailureKind.RATE_LIMIT, message, code)
    if code >= 500 or code in (408, 409):
        return Failure(FailureKind.SERVER, message, code)
    return Failure(FailureKind.REQUEST, message, code)


class GeminiBatchAPI:
    """The Gemini Batch API (``batchGenerateContent``) through the SDK's HTTP client."""

    limits = GEMINI_LIMITS
    identification = Identification.METADATA

    def custom_id(self, nonce: str, key: str) -> str:
        return key

    def encode(self, custom_id: str, request: CallRequest) -> bytes:
        return _json.dumpb({"key": custom_id, "request": request.body})

    def split_key(self, request: CallRequest) -> str:
        return ""

    #: the model method that creates a batch of these requests
    method = ":batchGenerateContent"

    async def create(
        self, client: Any, uid: str, job_id: str, lines: list[bytes], requests: list[CallRequest]
    ) -> ProviderBatch:
        api = api_client(client)
        path = f"{model_path(requests[0].model)}{self.method}"
        batch: dict[str, Any] = {"displayName": f"batchain-{uid}"}
        if sum(map(len, lines)) <= INLINE_BYTES:
            inline = []
            # an encoded call may be several JSONL lines (an embeddings call: one a text)
            for raw in b"\n".join(lines).splitlines():
                line = _json.loads(raw)
                inline.append({"request": line["request"], "metadata": {"key": line["key"]}})
            batch["inputConfig"] = {"requests": {"requests": inline}}
        else:
            uploaded = await client.aio.files.upload(
                file=_bytes_io(b"\n".join(lines)),
                config={"mime_type": "jsonl", "display_name": f"batchain-{uid}"},
            )
            batch["inputConfig"] = {"fileName": uploaded.name}
        response = await api.async_request("post", path, {"batch": batch})
        return _provider_batch(_json.loads(response.body or "{}"))

    async def retrieve(self, client: Any, provider_id: str) -> BatchView:
        data = await _get(client, provider_id)
        return _view(data)

    async def outcomes(self, client: Any, view: BatchView, keys: list[str]) -> list[Outcome]:
        assert view.output_ref is not None  # the batch's name (see _view)
        data = await _get(client, view.output_ref)
        output = (data.get("metadata") or {}).get("output") or data.get("response") or {}
        if output.get("responsesFile"):
            raw = await client.aio.files.download(file=output["responsesFile"])
            return list(_file_outcomes(raw))
        inlined = (output.get("inlinedResponses") or {}).get("inlinedResponses") or []
        return [_outcome(item, (item.get("metadata") or {}).get("key")) for item in inlined]

    async def cancel(self, client: Any, provider_id: str) -> None:
        try:
            await api_client(client).async_request("post", f"{provider_id}:cancel", {})
        except Exception as exc:
            if getattr(exc, "code", None) == 404:
                raise BatchNotFound(provider_id) from exc
            raise

    async def find_created(self, client: Any, intent: BatchIntent) -> list[ProviderBatch]:
        """The batch whose display name carries the intent's uid, if the create went through."""
        name = f"batchain-{intent.uid}"
        token: str | None = None
        for _ in range(50):  # at most 50 pages of 100 (newest first)
            query = "batches?pageSize=100" + (f"&pageToken={token}" if token else "")
            response = await api_client(client).async_request("get", query, {})
            data = _json.loads(response.body or "{}")
            for op in data.get("operations") or []:
                if (op.get("metadata") or {}).get("displayName") == name:
                    return [_provider_batch(op)]
            token = data.get("nextPageToken")
            if not token:
                break
        return []


async def _get(client: Any, provider_id: str) -> dict[str, Any]:
    try:
        response = await api_client(client).async_request("get", provider_id, {})
    except Exception as exc:
        if getattr(exc, "code", None) == 404:
            raise BatchNotFound(provider_id) from exc
        raise
    data: dict[str, Any] = _json.loads(response.body or "{}")
    return data


def _bytes_io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def _provider_batch(op: Mapping[str, Any]) -> ProviderBatch:
    meta = op.get("metadata") or {}
    stats = meta.get("batchStats") or {}
    return ProviderBatch(
        id=str(op.get("name") or meta.get("name")),
        created_at=_seconds(meta.get("createTime")),
        n_requests=int(stats["requestCount"]) if stats.get("requestCount") is not None else None,
        metadata={"display_name": str(meta.get("displayName") or "")},
    )


def _seconds(stamp: Any) -> float | None:
    """An RFC 3339 time (``2026-11-01T00:00:00.000000Z``) as Unix seconds."""
    if not isinstance(stamp, str):
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _view(op: Mapping[str, Any]) -> BatchView:
    meta = op.get("metadata") or {}
    state = str(meta.get("state") or "BATCH_STATE_PENDING")
    stats = meta.get("batchStats") or {}
    total = int(stats.get("requestCount") or 0)
    pending = int(stats.get("pendingRequestCount") or 0)
    return BatchView(
        ended=bool(op.get("done")) or state in _ENDED,
        status=_STATES.get(state, state),
        done=total - pending,
        total=total,
        output_ref=str(op.get("name")),  # results are read from the batch itself
        errors=op.get("error"),
    )


def _outcome(item: Mapping[str, Any], key: Any) -> Outcome:
    response = item.get("response")
    if response is not None:
        return Outcome(str(key), OutcomeKind.SUCCEEDED, _json.dumps(response), 200, data=response)
    error = item.get("error") or {}
    code = int(error.get("code") or 500)
    message = f"gemini: {error.get('status', '')}: {error.get('message', '')}"
    kind = OutcomeKind.RETRY if code == 429 or code >= 500 or code in (408, 409) else OutcomeKind.FAILED
    return Outcome(str(key), kind, message, code, str(error.get("status") or ""))


def _file_outcomes(raw: bytes) -> Iterator[Outcome]:
    for line in raw.splitlines():
        if line.strip():
            item = _json.loads(line)
            yield _outcome(item, item.get("key"))
