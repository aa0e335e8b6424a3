"""OpenAI routes: ``/v1/chat/completions``, Files and Batches."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from batchain.sandbox.calls import (
    dumps,
    guarded,
    handle_realtime,
    parse_json_object,
    request_config,
    upload_latency,
)
from batchain.sandbox.errors import ApiError
from batchain.sandbox.multipart import MultipartError, Part, parse_multipart
from batchain.sandbox.openai.batches import ENDPOINTS, SUPPORTED_ENDPOINTS, OpenAIBatchStore
from batchain.sandbox.openai.chat import BAD_JSON, OpenAISpec, check_auth, openai_json_response
from batchain.sandbox.openai.embeddings import EmbeddingsSpec
from batchain.sandbox.openai.files import FileStore
from batchain.sandbox.openai.responses import ResponsesSpec
from batchain.sandbox.state import SandboxState

__all__ = ["routes"]

_MB = 1024 * 1024
MAX_FILE_BYTES = 512 * _MB
_UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_MIN_EXPIRY_S = 3600
_MAX_EXPIRY_S = 30 * 24 * 3600


def _ok(payload: Any) -> Response:
    return openai_json_response(dumps(payload))


def _authenticate(request: Request) -> None:
    denied = check_auth(request.headers.get("authorization"))
    if denied is not None:
        raise denied


def _missing(param: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _invalid_value(param: str, value: Any, allowed: tuple[str, ...]) -> ApiError:
    options = ", ".join(f"'{a}'" for a in allowed)
    return ApiError(
        400,
        f"Invalid value: '{value}'. Supported values are: {options}.",
        param=param,
        code="invalid_value",
    )


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400,
            f"Invalid type for '{name}': expected an integer, but got a string instead.",
            param=name,
            code="invalid_type",
        ) from None
    if not low <= value <= high:
        raise ApiError(
            400,
            f"Invalid '{name}': expected a value between {low} and {high}, but got {value}.",
            param=name,
            code="invalid_value",
        )
    return value


def _expiry_seconds(anchor: Any, seconds: Any, param: str) -> int | None:
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise _invalid_value(f"{param}.anchor", anchor, ("created_at",))
    try:
        value = int(seconds)
    except (TypeError, ValueError):
        raise _missing(f"{param}.seconds") from None
    if not _MIN_EXPIRY_S <= value <= _MAX_EXPIRY_S:
        raise ApiError(
            400,
            f"Invalid '{param}.seconds': expected a value between {_MIN_EXPIRY_S} and "
            f"{_MAX_EXPIRY_S}, but got {value}.",
            param=f"{param}.seconds",
            code="invalid_value",
        )
    return value


def _field_text(fields: dict[str, Part], name: str) -> str | None:
    part = fields.get(name)
    return part.data.decode("utf-8", "replace") if part is not None else None


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ApiError(
            400,
            "Invalid type for 'metadata': expected an object.",
            param="metadata",
            code="invalid_type",
        )
    if len(metadata) > 16:
        raise ApiError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(metadata)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise ApiError(
                400,
                f"Invalid 'metadata': string too long. Expected a key with maximum length 64, "
                f"but got a key with length {len(key)} instead.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(value, str):
            raise ApiError(
                400,
                f"Invalid type for 'metadata.{key}': expected a string.",
                param=f"metadata.{key}",
                code="invalid_type",
            )
        if len(value) > 512:
            raise ApiError(
                400,
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length 512, but got a string with length {len(value)} instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )
    return dict(metadata)


def routes(state: SandboxState) -> list[BaseRoute]:
    spec = OpenAISpec()
    responses_spec = ResponsesSpec()
    embeddings_spec = EmbeddingsSpec()
    files = FileStore()
    batches = OpenAIBatchStore(state, spec, files, responses=responses_spec, embeddings=embeddings_spec)
    state.register(batches)

    async def chat_completions(request: Request) -> Response:
        return await handle_realtime(state, spec, request)

    async def responses(request: Request) -> Response:
        return await handle_realtime(state, responses_spec, request)

    async def embeddings(request: Request) -> Response:
        return await handle_realtime(state, embeddings_spec, request)

    # -- files -----------------------------------------------------------------------

    async def upload_file(request: Request) -> Response:
        _authenticate(request)
        await upload_latency(state)
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_FILE_BYTES + _MB:
            raise ApiError(400, "File is too large.")
        body = await request.body()
        try:
            parts = parse_multipart(body, request.headers.get("content-type", ""))
        except MultipartError as exc:
            raise ApiError(400, f"Invalid multipart/form-data request: {exc}.") from None
        fields = {part.name: part for part in parts}
        purpose = _field_text(fields, "purpose")
        if purpose is None:
            raise _missing("purpose")
        upload = fields.get("file")
        if upload is None:
            raise _missing("file")
        if purpose not in _UPLOAD_PURPOSES:
            raise _invalid_value("purpose", purpose, _UPLOAD_PURPOSES)
        filename = upload.filename or "upload"
        size = len(upload.data)
        # a batch input file has its own limit (200 MB; knob openai_max_batch_bytes)
        batch_limit = state.config.openai_max_batch_bytes
        if size > MAX_FILE_BYTES or (purpose == "batch" and size > batch_limit):
            raise ApiError(400, "File is too large.")
        if purpose == "batch" and not filename.endswith(".jsonl"):
            raise ApiError(400, "Invalid file format for Batch API. Must be .jsonl")
        expires = _expiry_seconds(
            _field_text(fields, "expires_after[anchor]"),
            _field_text(fields, "expires_after[seconds]"),
            "expires_after",
        )
        record = files.add(filename, purpose, upload.data, expires)
        return _ok(record.to_dict())

    async def list_files(request: Request) -> Response:
        _authenticate(request)
        limit = _query_int(request, "limit", 10_000, 1, 10_000)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise _invalid_value("order", order, ("asc", "desc"))
        records, has_more = files.list(
            request.query_params.get("purpose"), request.query_params.get("after"), limit, order
        )
        return _ok(_page([r.to_dict() for r in records], has_more))

    async def retrieve_file(request: Request) -> Response:
        _authenticate(request)
        return _ok(files.get(request.path_params["file_id"]).to_dict())

    async def delete_file(request: Request) -> Response:
        _authenticate(request)
        file_id = request.path_params["file_id"]
        files.delete(file_id)
        return _ok({"id": file_id, "object": "file", "deleted": True})

    async def file_content(request: Request) -> Response:
        _authenticate(request)
        record = files.get(request.path_params["file_id"])
        response = openai_json_response(record.data)
        response.headers["content-type"] = "application/octet-stream"
        return response

    # -- batches -----------------------------------------------------------------------

    async def create_batch(request: Request) -> Response:
        _authenticate(request)
        config = request_config(state, request)
        if state.take_batch_create_429():
            state.ledger.note_rate_limited("openai", "*", "batch")
            raise ApiError(
                429,
                "Too many batch creation requests (sandbox knob batch_create_429). Please try again in 50ms.",
                code="rate_limit_exceeded",
                type="requests",
                headers={"retry-after": "0.05", "retry-after-ms": "50"},
            )
        body = parse_json_object(await request.body(), BAD_JSON)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if body.get(name) is None:
                raise _missing(name)
            if not isinstance(body[name], str):
                raise ApiError(
                    400,
                    f"Invalid type for '{name}': expected a string.",
                    param=name,
                    code="invalid_type",
                )
        endpoint = body["endpoint"]
        if endpoint not in ENDPOINTS:
            raise _invalid_value("endpoint", endpoint, ENDPOINTS)
        if endpoint not in SUPPORTED_ENDPOINTS:
            raise ApiError(
                400,
                f"The sandbox only supports {' and '.join(repr(e) for e in SUPPORTED_ENDPOINTS)} batches.",
                param="endpoint",
                code="unsupported_value",
            )
        if body["completion_window"] != "24h":
            raise _invalid_value("completion_window", body["completion_window"], ("24h",))
        metadata = _check_metadata(body.get("metadata"))
        expiry = body.get("output_expires_after")
        output_expiry = None
        if expiry is not None:
            if not isinstance(expiry, dict):
                raise _missing("output_expires_after.anchor")
            output_expiry = _expiry_seconds(
                expiry.get("anchor"), expiry.get("seconds"), "output_expires_after"
            )
        batch = batches.create(body["input_file_id"], endpoint, "24h", metadata, output_expiry, config)
        return _ok(batch.to_dict())

    async def retrieve_batch(request: Request) -> Response:
        _authenticate(request)
        return _ok(batches.get(request.path_params["batch_id"]).to_dict())

    async def cancel_batch(request: Request) -> Response:
        _authenticate(request)
        return _ok(batches.cancel(request.path_params["batch_id"]).to_dict())

    async def list_batches(request: Request) -> Response:
        _authenticate(request)
        limit = _query_int(request, "limit", 20, 1, 100)
        page, has_more = batches.list(request.query_params.get("after"), limit)
        return _ok(_page([b.to_dict() for b in page], has_more))

    def route(path: str, handler: Any, method: str) -> Route:
        return Route(path, guarded(spec, handler), methods=[method])

    return [
        route("/v1/chat/completions", chat_completions, "POST"),
        route("/v1/responses", responses, "POST"),
        route("/v1/embeddings", embeddings, "POST"),
        # an OpenAI-compatible endpoint without a Batch API (as Gemini's is): no files, no
        # batches under it, so batch mode must not send its calls there
        route(COMPAT_PREFIX + "/chat/completions", chat_completions, "POST"),
        route(COMPAT_PREFIX + "/embeddings", embeddings, "POST"),
        route("/v1/files", upload_file, "POST"),
        route("/v1/files", list_files, "GET"),
        route("/v1/files/{file_id}", retrieve_file, "GET"),
        route("/v1/files/{file_id}", delete_file, "DELETE"),
        route("/v1/files/{file_id}/content", file_content, "GET"),
        route("/v1/batches", create_batch, "POST"),
        route("/v1/batches", list_batches, "GET"),
        route("/v1/batches/{batch_id}", retrieve_batch, "GET"),
        route("/v1/batches/{batch_id}/cancel", cancel_batch, "POST"),
    ]


#: where the sandbox serves OpenAI's chat completions and embeddings, and no Batch API
#: (Gemini's OpenAI-compatible path)
COMPAT_PREFIX = "/v1beta/openai"


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
