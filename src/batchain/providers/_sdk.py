"""Helpers shared by the adapters of Stainless-generated SDKs (openai, anthropic)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import importlib
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from batchain.errors import BatchNotFound
from batchain.providers.base import (
    CallRequest,
    Failure,
    FailureKind,
    RateInfo,
    call_identity,
    clean_body_json,
    hash_of,
    key_for,
    redact,
)

__all__ = [
    "batch_not_found",
    "cap",
    "classify_sdk_error",
    "clean_payload",
    "estimate_tokens",
    "fresh_client",
    "is_resource_unavailable",
    "rate_info_from",
    "rebody",
    "response_class",
    "retry_after_seconds",
    "sdk_request",
]


def _http_module(client: Any) -> Any:
    """The HTTP library under an SDK client: ``httpx`` or (newer SDKs) ``httpx2``."""
    base = next(c for c in type(client._client).__mro__ if c.__name__ == "AsyncClient")
    return importlib.import_module(base.__module__.split(".")[0])


def response_class(client: Any) -> Any:
    """``cast_to`` that makes the SDK hand back the raw HTTP response."""
    return _http_module(client).Response


def fresh_client(original: Any, max_connections: int) -> Any:
    """A copy of an SDK client (same key, base URL, headers) with its own connection pool.

    LangChain models share one cached HTTP client per process, bound to the first event
    loop that used it; a job runs on its own loop, so it needs its own pool, sized to its
    concurrency.
    """
    sdk = importlib.import_module(type(original).__module__.split(".")[0])
    http_mod = _http_module(original)
    limits = http_mod.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    options: dict[str, Any] = {"limits": limits}
    ssl_context = _ssl_context_of(original)
    if ssl_context is not None:
        options["verify"] = ssl_context  # the original's trust settings, and no CA reload
    return original.copy(http_client=sdk.DefaultAsyncHttpxClient(**options))


def _ssl_context_of(client: Any) -> ssl.SSLContext | None:
    """The TLS context of an SDK client's connection pool, when it has a plain one (loading
    the CA bundle for a new one takes ~20 ms, a noticeable part of a small job)."""
    pool = getattr(getattr(getattr(client, "_client", None), "_transport", None), "_pool", None)
    ctx = getattr(pool, "_ssl_context", None)
    return ctx if isinstance(ctx, ssl.SSLContext) else None


@contextlib.contextmanager
def batch_not_found(provider_id: str) -> Iterator[None]:
    """The SDK's 404 (``NotFoundError``) for batch ``provider_id`` as :class:`BatchNotFound`:
    the provider says the batch does not exist, which no retry changes."""
    try:
        yield
    except Exception as exc:
        if getattr(exc, "status_code", None) == 404:
            raise BatchNotFound(provider_id) from None
        raise


def answers_listing(list_batches: Callable[[], Any]) -> bool:
    """Does an endpoint serve a Batch API? ``list_batches`` lists one batch through the SDK
    (no cost). Only "no such route" (404, 405) says no; any other failure (a wrong key, a
    flaky server) says yes and shows up where it would anyway: on the first upload."""
    try:
        list_batches()
    except Exception as exc:
        return getattr(exc, "status_code", None) not in (404, 405)
    return True


#: a probe's own limit: an endpoint that does not answer in this time is taken to have one
PROBE_TIMEOUT_S = 10.0


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """``retry-after-ms``, then ``retry-after`` as seconds or an HTTP date."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(float(ra), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(ra)
        return max(parsed.timestamp() - time.time(), 0.0) if parsed else None


def classify_sdk_error(exc: BaseException, provider: str) -> Failure:
    """Map an SDK (or transport) exception to a retry decision."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    message = redact(f"{provider}: {type(exc).__name__}: {exc}")
    if unreachable(exc) is not None:
        return Failure(FailureKind.UNREACHABLE, message)
    if isinstance(exc, asyncio.TimeoutError | TimeoutError) or "Timeout" in type(exc).__name__:
        return Failure(FailureKind.TIMEOUT, message)
    if "Connection" in type(exc).__name__ or isinstance(exc, httpx.TransportError):
        return Failure(FailureKind.CONNECTION, message)
    if isinstance(status, int):
        body = getattr(exc, "body", None)
        if status == 429 and _is_quota_error(body):
            # out of credit: waiting does not help, so fail instead of retrying forever
            return Failure(FailureKind.REQUEST, message, status)
        if status == 429 and is_resource_unavailable(body):
            return Failure(FailureKind.UNAVAILABLE, message, status, retry_after_seconds(headers))
        if status == 429:
            return Failure(FailureKind.RATE_LIMIT, message, status, retry_after_seconds(headers))
        if status >= 500 or status in (408, 409):
            return Failure(FailureKind.SERVER, message, status, retry_after_seconds(headers))
        return Failure(FailureKind.REQUEST, message, status)
    return Failure(FailureKind.OTHER, message)


#: failures to reach a host at all (an SDK wraps them: its exception's cause chain has one)
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, ConnectionRefusedError, socket.gaierror)


def unreachable(exc: BaseException) -> BaseException | None:
    """If the request never reached the host (refused, name not resolved, or no connection
    in time), the exception that says so; None for an HTTP answer, or a connection that
    broke after opening."""
    seen: set[int] = set()
    inner: BaseException | None = exc
    while inner is not None and id(inner) not in seen:
        if isinstance(inner, _UNREACHABLE):
            return inner
        seen.add(id(inner))
        inner = inner.__cause__ or inner.__context__
    return None


def _is_quota_error(body: Any) -> bool:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return err.get("code") == "insufficient_quota" or err.get("type") == "insufficient_quota"
    return False


def is_resource_unavailable(body: Any) -> bool:
    """Is this 429 OpenAI flex processing's "Resource Unavailable" (no flex capacity now),
    rather than a rate limit? Its ``code`` or ``type`` says ``resource_unavailable``, or
    its message starts with "Resource Unavailable" (OpenAI documents the status and those
    words, not the code)."""
    if not isinstance(body, dict):
        return False
    err = body.get("error", body)
    if not isinstance(err, dict):
        return False
    if "resource_unavailable" in (err.get("code"), err.get("type")):
        return True
    message = err.get("message")
    return isinstance(message, str) and message.lower().startswith("resource unavailable")


def estimate_tokens(body_json_len: int, max_tokens: Any) -> int:
    """Rough request size for TPM pacing: ~4 characters a token, plus the output cap."""
    out = max_tokens if isinstance(max_tokens, int) else 0
    return body_json_len // 4 + out


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def cap(value: Any) -> int | None:
    """A positive integer token cap, else None (no cap)."""
    return value if isinstance(value, int) and value > 0 else None


def rate_info_from(
    headers: Mapping[str, str], name: str, reset: Callable[[str | None], float | None]
) -> RateInfo | None:
    """Rate-limit headers named by ``name.format(field=..., unit=...)``, with
    ``field`` in limit/remaining/reset and ``unit`` in requests/tokens."""

    def get(field: str, unit: str) -> str | None:
        return headers.get(name.format(field=field, unit=unit))

    if get("limit", "requests") is None and get("limit", "tokens") is None:
        return None
    return RateInfo(
        limit_requests=_int(get("limit", "requests")),
        remaining_requests=_int(get("remaining", "requests")),
        reset_requests_s=reset(get("reset", "requests")),
        limit_tokens=_int(get("limit", "tokens")),
        remaining_tokens=_int(get("remaining", "tokens")),
        reset_tokens_s=reset(get("reset", "tokens")),
    )


def clean_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A model's payload as the provider takes it: LangChain-internal and streaming keys
    dropped, ``extra_body`` merged in (the SDK would merge it on the wire)."""
    payload.pop("ls_structured_output_format", None)
    payload.pop("stream", None)
    extra_body = payload.pop("extra_body", None)
    if isinstance(extra_body, dict):
        payload.update(extra_body)
    return payload


def sdk_request(
    provider: str,
    scope: str,
    endpoint: str,
    payload: dict[str, Any],
    salt: str,
    *,
    max_tokens: Any,
    headers: dict[str, str],
    context: dict[str, Any],
    key_endpoint: str | None = None,
) -> CallRequest:
    """The call for ``payload``: its key, provider-side hash, size and token estimate,
    all from one canonical JSON text."""
    text = clean_body_json(payload)
    raw = text.encode()
    identity = call_identity(provider, scope, key_endpoint or endpoint, salt)
    return CallRequest(
        provider=provider,
        endpoint=endpoint,
        model=str(payload.get("model")),
        body=payload,
        lane=f"{provider}|{scope}|{payload.get('model')}",
        key=key_for(identity, text),
        est_tokens=estimate_tokens(len(text), max_tokens),
        headers=headers,
        body_bytes=len(raw),
        body_hash=hash_of(payload, text, raw),
        max_output=cap(max_tokens),
        context=context,
        identity=identity,
    )


def rebody(
    template: CallRequest,
    payload: dict[str, Any],
    text: str | None = None,
    keyed: hashlib._Hash | None = None,
) -> CallRequest:
    """``template``'s call with another body of the same shape (same model, endpoint,
    destination and headers): what :func:`sdk_request` would give for ``payload``.
    ``text``: ``clean_body_json(payload)``, when the caller has it; ``keyed``: the
    template identity's :func:`~.base.key_hasher`, when the caller builds many (its key's hash resumes
    from it instead of hashing the identity again)."""
    if text is None:
        text = clean_body_json(payload)
    raw = text.encode()
    if keyed is None:
        key = key_for(template.identity, text)
    else:
        hasher = keyed.copy()
        hasher.update(raw)
        key = hasher.hexdigest()
    return CallRequest(
        provider=template.provider,
        endpoint=template.endpoint,
        model=template.model,
        body=payload,
        lane=template.lane,
        key=key,
        est_tokens=estimate_tokens(len(text), template.max_output),
        headers=dict(template.headers),
        body_bytes=len(raw),
        max_output=template.max_output,
        body_hash=hash_of(payload, text, raw),
        context=dict(template.context),
        identity=template.identity,
    )
