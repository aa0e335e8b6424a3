"""Gemini routes (Developer API), under both ``v1`` and ``v1beta``.

google-genai 3.x calls ``v1`` unless told otherwise, where ``/v1/batches`` and
``/v1/files`` are also OpenAI's paths.  So the Gemini routes form their own app, and
:func:`claims` decides which requests it answers: every Gemini-only path
(``/v1beta/...``, ``/v1/models/...``, ``/upload/...``, ``/download/...``), and the
shared paths when the caller is a Google client (an ``x-goog-api-key`` or
``x-goog-api-client`` header, or a ``key`` query parameter).

Routes (``{v}`` = ``v1`` | ``v1beta``)::

    POST   /{v}/models/{model}:generateContent | :streamGenerateContent | :batchGenerateContent
    POST   /{v}/models/{model}:embedContent | :batchEmbedContents | :asyncBatchEmbedContent
    GET    /{v}/batches                 ?pageSize&pageToken -> {operations, nextPageToken}
    GET    /{v}/batches/{id}            DELETE /{v}/batches/{id}   POST /{v}/batches/{id}:cancel
    POST   /upload/{v}/files            resumable upload: start, then the bytes (?upload_id=)
    GET    /{v}/files                   GET | DELETE /{v}/files/{id}
    GET    /{v}/files/{id}:download     and /download/{v}/files/{id}:download (?alt=media)
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from batchain.sandbox.calls import dumps, guarded, handle_realtime, parse_json_object, request_config
from batchain.sandbox.errors import ApiError, gemini_error_body
from batchain.sandbox.gemini.batches import GeminiBatchStore, read_create
from batchain.sandbox.gemini.embeddings import GeminiEmbeddingsSpec
from batchain.sandbox.gemini.files import FileStore
from batchain.sandbox.gemini.generate import (
    BAD_JSON,
    GeminiSpec,
    check_auth,
    gemini_json_response,
    retry_info,
)
from batchain.sandbox.state import SandboxState

__all__ = ["VERSIONS", "app", "claims"]

VERSIONS = ("v1", "v1beta")
_MB = 1024 * 1024
MAX_INLINE_BATCH_BYTES = 20 * _MB  # Google: inline requests under 20 MB, else use a file
_OWN = ("/upload/", "/download/", "/v1/models/", *(f"/v1beta/{p}" for p in ("models/", "batches", "files")))
_SHARED = ("/v1/batches", "/v1/files")
_GOOGLE_HEADERS = (b"x-goog-api-key", b"x-goog-api-client")


def claims(scope: Scope) -> bool:
    """True for a request the Gemini routes answer (see the module docstring)."""
    path: str = scope["path"]
    if path.startswith(_OWN):
        return True
    if not path.startswith(_SHARED):
        return False
    if any(name in _GOOGLE_HEADERS for name, _ in scope["headers"]):
        return True
    query: bytes = scope.get("query_string", b"")
    return query.startswith(b"key=") or b"&key=" in query


def _ok(payload: Any) -> Response:
    return gemini_json_response(dumps(payload))


def _authenticate(request: Request) -> None:
    denied = check_auth(request)
    if denied is not None:
        raise denied


def _version(request: Request) -> str:
    return "v1beta" if "/v1beta/" in request.url.path else "v1"


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _page_size(request: Request, default: int, high: int) -> int:
    raw = request.query_params.get("pageSize")
    if raw is None:
        return default
    if not raw.isdigit():
        raise ApiError(400, f"Invalid value at 'page_size' (TYPE_INT32), \"{raw}\"")
    return min(max(int(raw), 1), high) if int(raw) else default


def routes(state: SandboxState) -> list[BaseRoute]:
    spec = GeminiSpec()
    embeddings_spec = GeminiEmbeddingsSpec()
    files = FileStore()
    batches = GeminiBatchStore(state, spec, files, embeddings_spec)
    state.register(batches)

    async def generate(request: Request) -> Response:
        model = "models/" + request.path_params["model"]
        return await handle_realtime(state, spec, request, {"model": model, "stream": False})

    async def stream(request: Request) -> Response:
        mode = "sse" if request.query_params.get("alt") == "sse" else "json"
        model = "models/" + request.path_params["model"]
        return await handle_realtime(state, spec, request, {"model": model, "stream": mode})

    async def embed(request: Request) -> Response:
        model = "models/" + request.path_params["model"]
        return await handle_realtime(state, embeddings_spec, request, {"model": model})

    # -- batches -----------------------------------------------------------------------

    async def create_batch(request: Request) -> Response:
        return await _create_batch(request, embeddings=False)

    async def create_embed_batch(request: Request) -> Response:
        return await _create_batch(request, embeddings=True)

    async def _create_batch(request: Request, *, embeddings: bool) -> Response:
        _authenticate(request)
        config = request_config(state, request)
        if state.take_batch_create_429():
            state.ledger.note_rate_limited("gemini", "*", "batch")
            raise ApiError(
                429,
                "Too many batch creation requests (sandbox knob batch_create_429).",
                details=[retry_info(0.05)],
            )
        raw = await request.body()
        if len(raw) > MAX_INLINE_BATCH_BYTES:
            raise ApiError(400, "Request payload size exceeds the limit: 20971520 bytes.")
        model = "models/" + request.path_params["model"]
        new = read_create(parse_json_object(raw, BAD_JSON), model, files)
        batch = batches.create(
            model, new.display_name, new.source, config, new.input_file, embeddings=embeddings
        )
        return _ok(batch.to_operation())

    async def list_batches(request: Request) -> Response:
        _authenticate(request)
        size = _page_size(request, 50, 1000)
        page, more = batches.list(request.query_params.get("pageToken") or None, size)
        payload: dict[str, Any] = {"operations": [b.to_operation() for b in page]}
        if more and page:
            payload["nextPageToken"] = page[-1].id
        return _ok(payload)

    async def get_batch(request: Request) -> Response:
        _authenticate(request)
        return _ok(batches.get("batches/" + request.path_params["name"]).to_operation())

    async def cancel_batch(request: Request) -> Response:
        _authenticate(request)
        batches.cancel("batches/" + request.path_params["name"])
        return _ok({})

    async def delete_batch(request: Request) -> Response:
        _authenticate(request)
        batches.delete("batches/" + request.path_params["name"])
        return _ok({})

    # -- files -------------------------------------------------------------------------

    async def upload(request: Request) -> Response:
        upload_id = request.query_params.get("upload_id")
        if upload_id is not None:
            return await _upload_bytes(request, files, upload_id)
        _authenticate(request)
        return await _start_upload(request, files)

    async def list_files(request: Request) -> Response:
        _authenticate(request)
        base, version = _base_url(request), _version(request)
        page, token = files.list(request.query_params.get("pageToken") or None, _page_size(request, 10, 100))
        payload: dict[str, Any] = {"files": [f.to_dict(base, version) for f in page]}
        if token is not None:
            payload["nextPageToken"] = token
        return _ok(payload)

    async def get_file(request: Request) -> Response:
        _authenticate(request)
        record = files.get(request.path_params["file_id"])
        return _ok(record.to_dict(_base_url(request), _version(request)))

    async def delete_file(request: Request) -> Response:
        _authenticate(request)
        files.delete(request.path_params["file_id"])
        return _ok({})

    async def download(request: Request) -> Response:
        _authenticate(request)
        record = files.get(request.path_params["file_id"])
        if not record.generated:
            raise ApiError(400, "Only files generated by the API can be downloaded; this file was uploaded.")
        return Response(record.data, 200, media_type=record.mime_type)

    def route(path: str, handler: Any, method: str) -> Route:
        return Route(path, guarded(spec, handler), methods=[method])

    table: list[BaseRoute] = []
    for v in VERSIONS:
        table += [
            route(f"/{v}/models/{{model}}:generateContent", generate, "POST"),
            route(f"/{v}/models/{{model}}:streamGenerateContent", stream, "POST"),
            route(f"/{v}/models/{{model}}:batchGenerateContent", create_batch, "POST"),
            route(f"/{v}/models/{{model}}:embedContent", embed, "POST"),
            route(f"/{v}/models/{{model}}:batchEmbedContents", embed, "POST"),
            route(f"/{v}/models/{{model}}:asyncBatchEmbedContent", create_embed_batch, "POST"),
            route(f"/{v}/batches", list_batches, "GET"),
            route(f"/{v}/batches/{{name}}:cancel", cancel_batch, "POST"),
            route(f"/{v}/batches/{{name}}", get_batch, "GET"),
            route(f"/{v}/batches/{{name}}", delete_batch, "DELETE"),
            route(f"/upload/{v}/files", upload, "POST"),
            route(f"/{v}/files", list_files, "GET"),
            route(f"/{v}/files/{{file_id}}:download", download, "GET"),
            route(f"/download/{v}/files/{{file_id}}:download", download, "GET"),
            route(f"/{v}/files/{{file_id}}", get_file, "GET"),
            route(f"/{v}/files/{{file_id}}", delete_file, "DELETE"),
        ]
    return table


async def _start_upload(request: Request, files: FileStore) -> Response:
    """The ``start`` of a resumable upload: the file's metadata in, the session URL out."""
    if request.headers.get("x-goog-upload-protocol") != "resumable":
        raise ApiError(
            400, "Only the resumable upload protocol is supported (X-Goog-Upload-Protocol: resumable)."
        )
    if request.headers.get("x-goog-upload-command") != "start":
        raise ApiError(400, "A resumable upload starts with X-Goog-Upload-Command: start.")
    raw = await request.body()
    meta = parse_json_object(raw, BAD_JSON).get("file") if raw.strip() else None
    meta = meta if isinstance(meta, dict) else {}
    size = request.headers.get("x-goog-upload-header-content-length")
    mime = request.headers.get("x-goog-upload-header-content-type") or meta.get("mimeType")
    session = files.start(
        meta.get("name"),
        str(mime or "application/octet-stream"),
        int(size) if size is not None and size.isdigit() else None,
        meta.get("displayName") or meta.get("display_name"),
    )
    query = f"upload_id={session}&upload_protocol=resumable"
    url = f"{_base_url(request)}/upload/{_version(request)}/files?{query}"
    headers = {
        "x-goog-upload-url": url,
        "x-goog-upload-status": "active",
        "x-goog-upload-chunk-granularity": str(8 * _MB),
    }
    return gemini_json_response(b"", 200, headers)


async def _upload_bytes(request: Request, files: FileStore, upload_id: str) -> Response:
    """One ``upload`` / ``upload, finalize`` request of a resumable upload.

    Every answer carries ``x-goog-upload-status``: without it google-genai retries the
    chunk, so errors are ``final`` too."""
    command = {c.strip() for c in request.headers.get("x-goog-upload-command", "").split(",")}
    offset_header = request.headers.get("x-goog-upload-offset", "0")
    try:
        if command - {"upload", "finalize", "query"} or not command:
            raise ApiError(400, "X-Goog-Upload-Command must be upload, finalize or query.")
        if not offset_header.isdigit():
            raise ApiError(400, "X-Goog-Upload-Offset must be a non-negative integer.")
        chunk = await request.body() if "upload" in command else b""
        record = files.append(upload_id, int(offset_header), chunk, "finalize" in command)
    except ApiError as error:
        body = dumps(gemini_error_body(error))
        return gemini_json_response(body, error.status, {"x-goog-upload-status": "final"})
    if record is None:
        received = int(offset_header) + len(chunk)
        headers = {"x-goog-upload-status": "active", "x-goog-upload-size-received": str(received)}
        return gemini_json_response(b"", 200, headers)
    payload = {"file": record.to_dict(_base_url(request), _version(request))}
    return gemini_json_response(dumps(payload), 200, {"x-goog-upload-status": "final"})


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status in (404, 405):
        error = ApiError(404, f"Method not found: {request.method} {request.url.path}")
    else:
        error = ApiError(status, "An internal error has occurred.")
    return gemini_json_response(dumps(gemini_error_body(error)), error.status)


def app(state: SandboxState) -> Starlette:
    """The Gemini routes as an app of their own, with Google's envelope for unknown paths."""
    return Starlette(routes=routes(state), exception_handlers={404: _not_found, 405: _not_found})
