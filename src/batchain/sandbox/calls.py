"""One model call, shared by both providers and both tiers.

A call is: canonical hash -> directives -> parse (provider adapter) -> deterministic
reply -> (realtime only: rate limit, faults, latency) -> usage with prompt-cache
simulation -> ledger entry -> provider response body.  Provider modules supply a
:class:`ProviderSpec`; this module owns the order of operations, so realtime and
batch items behave identically.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import ClientDisconnect

from batchain.sandbox.config import ConfigError, SandboxConfig, header_overrides
from batchain.sandbox.directives import Directives, parse_directives
from batchain.sandbox.errors import ApiError
from batchain.sandbox.flex import requested_flex, unavailable_error
from batchain.sandbox.ledger import LedgerEntry, Provider, Tier, cache_neutral, canonical_json
from batchain.sandbox.limits import Decision
from batchain.sandbox.prompt import Prompt
from batchain.sandbox.responder import Reply, respond
from batchain.sandbox.tokenizer import prompt_tokens

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from batchain.sandbox.state import SandboxState

__all__ = [
    "Endpoint",
    "Evaluated",
    "ProviderSpec",
    "Usage",
    "bill",
    "directive_error",
    "dumps",
    "evaluate",
    "guarded",
    "handle_realtime",
    "parse_json_object",
    "request_config",
    "sleep_unless_disconnected",
]

logger = logging.getLogger("batchain.sandbox")

Endpoint = Callable[["Request"], Awaitable["Response"]]

_NO_DECISION = Decision(allowed=True)
_SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Usage:
    """Normalized usage: ``input_tokens`` is the TOTAL prompt (cached included)."""

    input_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    output_tokens: int
    #: the part of ``cache_creation_tokens`` written with the 1-hour TTL
    cache_write_1h_tokens: int = 0


@dataclass(slots=True)
class Evaluated:
    """A parsed request and its deterministic reply (nothing billed yet)."""

    body: dict[str, Any]
    canonical: str
    digest: str
    directives: Directives
    prompt: Prompt
    reply: Reply
    prompt_tokens: int
    #: the batch it runs in (None: realtime), set when it is billed: a batch request reads
    #: only prompt caches that earlier batches wrote
    batch_id: str | None = None


class ProviderSpec(Protocol):
    name: Provider

    def parse(self, body: dict[str, Any], *, batch: bool) -> Prompt:
        """Validate a request body and normalize it; raises :class:`ApiError` (400)."""
        ...

    def usage(self, state: SandboxState, ev: Evaluated) -> Usage:
        """Usage with the provider's prompt-cache semantics (records cache writes)."""
        ...

    def success_body(self, ev: Evaluated, usage: Usage, tier: Tier) -> dict[str, Any]: ...

    @property
    def bad_json_message(self) -> str: ...

    def error_response(self, error: ApiError, decision: Decision) -> Response:
        """The provider's error envelope (with rate-limit headers when configured)."""
        ...

    def success_response(
        self, ev: Evaluated, payload: dict[str, Any], decision: Decision, started: float
    ) -> Response:
        """The provider's success response (JSON, or SSE when ``stream`` is true)."""
        ...

    def rate_limit_error(self, model: str, decision: Decision) -> ApiError: ...

    def overloaded_error(self) -> ApiError: ...

    def authenticate(self, request: Request) -> ApiError | None: ...


def parse_json_object(raw: bytes, bad_json: str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, bad_json) from None
    if not isinstance(body, dict):
        raise ApiError(400, bad_json)
    return body


def directive_error(status: int) -> ApiError:
    """The error a ``[[fail:<status>]]`` directive produces."""
    if status == 429:
        return ApiError(
            429,
            "Rate limit reached (sandbox directive [[fail:429]]). Please try again in 50ms.",
            code="rate_limit_exceeded",
            headers={"retry-after": "0.05", "retry-after-ms": "50"},
        )
    if status < 400 or status > 599:
        status = 500
    return ApiError(status, f"Sandbox directive [[fail:{status}]] made this request fail.")


def evaluate(spec: ProviderSpec, body: dict[str, Any], *, batch: bool) -> Evaluated:
    """Hash, directives, parse and reply.  Raises ApiError for a failing request."""
    canonical = canonical_json(body)
    neutral = cache_neutral(body, canonical)
    # cache markers change the price, never the answer: the reply's seed ignores them
    hashed = canonical if neutral is body else canonical_json(neutral)
    digest = hashlib.sha256(hashed.encode("utf-8")).hexdigest()
    directives = parse_directives(canonical)
    if directives.fail is not None:
        raise directive_error(directives.fail)
    prompt = spec.parse(body, batch=batch)
    reply = respond(prompt, digest)
    return Evaluated(body, canonical, digest, directives, prompt, reply, prompt_tokens(prompt))


def bill(
    state: SandboxState,
    spec: ProviderSpec,
    ev: Evaluated,
    tier: Tier,
    batch_id: str | None = None,
    custom_id: str | None = None,
) -> dict[str, Any]:
    """Compute usage, record the ledger entry, and return the success body."""
    ev.batch_id = batch_id
    usage = spec.usage(state, ev)
    state.ledger.add(
        LedgerEntry(
            ts=time.time(),
            provider=spec.name,
            model=ev.prompt.model,
            tier=tier,
            input_tokens=usage.input_tokens,
            cached_tokens=usage.cached_tokens,
            cache_creation_tokens=usage.cache_creation_tokens,
            output_tokens=usage.output_tokens,
            request_hash=ev.digest,
            batch_id=batch_id,
            custom_id=custom_id,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
        )
    )
    return spec.success_body(ev, usage, tier)


def request_config(state: SandboxState, request: Request) -> SandboxConfig:
    """The effective config for one request (``x-sandbox-*`` header overrides)."""
    raw = request.scope["headers"]
    for key, _ in raw:
        if key.startswith(b"x-sandbox-"):
            try:
                return state.config.merged(header_overrides(raw))
            except ConfigError as exc:
                raise ApiError(400, f"Invalid sandbox header: {exc}") from None
    return state.config


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def sleep_unless_disconnected(request: Request, seconds: float) -> bool:
    """Sleep ``seconds``; return False early if the client went away meanwhile.

    Models a provider that cancels generation when the client disconnects.
    """
    if seconds <= 0:
        return True
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    try:
        done, _ = await asyncio.wait({watcher, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        sleeper.cancel()
    return sleeper in done and watcher not in done


async def upload_latency(state: SandboxState) -> None:
    """The time a provider takes to receive a batch's input (``upload_latency_ms``)."""
    seconds = state.config.upload_latency_ms / 1000.0
    if seconds > 0:
        await asyncio.sleep(seconds)


def realtime_latency(
    config: SandboxConfig, directives: Directives, state: SandboxState, *, flex: bool = False
) -> float:
    """Seconds to wait before answering (directive > header/config), with jitter; a flex
    answer takes the flex latency."""
    latency, jitter = (
        (config.flex_latency_ms, config.flex_latency_jitter_ms)
        if flex
        else (config.latency_ms, config.latency_jitter_ms)
    )
    base = directives.latency_ms if directives.latency_ms is not None else latency
    if jitter > 0:
        base += state.rng.uniform(-jitter, jitter)
    return max(base, 0.0) / 1000.0


async def handle_realtime(
    state: SandboxState,
    spec: ProviderSpec,
    request: Request,
    fields: Mapping[str, Any] | None = None,
) -> Response:
    """Serve one realtime call end to end: the shared order of checks and faults.

    ``fields`` are request values the URL carries rather than the body (Gemini's model
    and streaming mode); they are merged into the body before it is hashed and parsed.
    """
    started = time.perf_counter()
    decision = _NO_DECISION
    model = "*"
    tier: Tier = "realtime"
    try:
        denied = spec.authenticate(request)
        if denied is not None:
            raise denied
        config = request_config(state, request)
        body = parse_json_object(await request.body(), spec.bad_json_message)
        if fields:
            body = {**body, **fields}
        if isinstance(body.get("model"), str):
            model = body["model"]
        if spec.name == "openai" and body.get("service_tier") == "flex":
            tier = "flex"  # what its 429s are counted under, whatever refuses it
        ev = evaluate(spec, body, batch=False)
        model = ev.prompt.model  # as the ledger names it (Gemini's body says models/<id>)
        flex = spec.name == "openai" and requested_flex(config, body, model)
        if flex and state.roll(config.flex_unavailable_rate):
            # before the limiter: a refusal for flex capacity uses no rate-limit quota
            raise unavailable_error()
        decision = state.limiter.admit(
            spec.name, ev.prompt.model, ev.prompt_tokens + ev.reply.completion_tokens
        )
        if not decision.allowed:
            raise spec.rate_limit_error(ev.prompt.model, decision)
        flaky = ev.directives.flaky
        wait = _retry_after(config.server_retry_after_s)
        if flaky is not None and state.flaky_fails(ev.digest, flaky):
            raise ApiError(500, f"Sandbox directive [[flaky:{flaky}]] made this attempt fail.", headers=wait)
        if state.roll(config.error_rate):
            raise ApiError(500, _SERVER_ERROR_MESSAGE, headers=wait)
        if state.roll(config.overloaded_rate):
            raise spec.overloaded_error()
        delay = realtime_latency(config, ev.directives, state, flex=tier == "flex")
        if delay > 0 and not await sleep_unless_disconnected(request, delay):
            # The client is gone: generation is cancelled and nothing is billed.
            return spec.error_response(ApiError(499, "Client closed request."), decision)
        payload = bill(state, spec, ev, tier)
    except ApiError as error:
        if error.code == "resource_unavailable":  # flex capacity: counted apart, never billed
            state.ledger.note_unavailable(spec.name, model)
        elif error.status == 429:  # limiter or [[fail:429]]: counted, never billed
            state.ledger.note_rate_limited(spec.name, model, tier)
        return spec.error_response(error, decision)
    return spec.success_response(ev, payload, decision, started)


def _retry_after(seconds: float) -> dict[str, str]:
    """Retry-After headers for a server error, when the sandbox is told to send them."""
    if seconds <= 0:
        return {}
    return {"retry-after": f"{seconds:.3f}", "retry-after-ms": str(max(1, round(seconds * 1000)))}


def guarded(spec: ProviderSpec, handler: Endpoint) -> Endpoint:
    """Render ApiError in the provider's envelope; never leak a stack trace or plain 500."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as error:
            return spec.error_response(error, _NO_DECISION)
        except ClientDisconnect:
            # the client died while sending its request (a killed process): nothing to
            # answer and nothing billed, as at a real provider
            return spec.error_response(ApiError(499, "Client closed request."), _NO_DECISION)
        except Exception:
            logger.exception("sandbox: unexpected error on %s %s", request.method, request.url.path)
            return spec.error_response(ApiError(500, _SERVER_ERROR_MESSAGE), _NO_DECISION)

    return endpoint
