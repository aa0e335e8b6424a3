"""Adapter for ``ChatAnthropic``: the Messages API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from batchain.providers._sdk import classify_sdk_error, estimate_tokens, response_class
from batchain.providers.base import (
    CallRequest,
    Failure,
    RateInfo,
    Sent,
    call_key,
    clean_body_json,
    remember_secret,
)
from batchain.store.records import Usage

__all__ = ["AnthropicAdapter"]

ENDPOINT = "/v1/messages"


class AnthropicAdapter:
    name = "anthropic"
    batchable = True

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
        payload.pop("stream", None)
        headers: dict[str, str] = {}
        betas = payload.pop("betas", None)
        if betas:
            # batches take betas as a header too, so keep them out of the body everywhere
            headers["anthropic-beta"] = ",".join(betas)
        extra_body = payload.pop("extra_body", None)
        if isinstance(extra_body, dict):
            payload.update(extra_body)
        client = m._async_client
        remember_secret(getattr(client, "api_key", None))
        remember_secret(getattr(client, "auth_token", None))
        scope = str(client.base_url)
        text = clean_body_json(payload)
        return CallRequest(
            provider=self.name,
            endpoint=ENDPOINT,
            model=str(payload.get("model")),
            body=payload,
            lane=f"anthropic|{scope}|{payload.get('model')}",
            key=call_key(self.name, scope, ENDPOINT + headers.get("anthropic-beta", ""), text, salt),
            est_tokens=estimate_tokens(len(text), payload.get("max_tokens")),
            headers=headers,
            context={"beta": bool(betas)},
        )

    def client(self, model: BaseChatModel) -> Any:
        return model._async_client  # type: ignore[attr-defined]

    async def send(self, model: BaseChatModel, client: Any, request: CallRequest, timeout: float) -> Sent:
        options: dict[str, Any] = {"max_retries": 0, "timeout": timeout}
        if request.headers:
            options["headers"] = request.headers
        response: Any = await client.post(
            "/v1/messages", body=request.body, cast_to=response_class(client), options=options
        )
        return Sent(response.text, response.headers)

    def parse(self, model: BaseChatModel, request: CallRequest, text: str) -> ChatResult:
        from anthropic.types import Message
        from anthropic.types.beta import BetaMessage

        message_type: Any = BetaMessage if request.context.get("beta") else Message
        message = message_type.model_validate_json(text)
        result: ChatResult = model._format_output(message)  # type: ignore[attr-defined]
        return result

    def usage(self, text: str) -> Usage:
        return usage_from_body(json.loads(text))

    def classify(self, exc: BaseException) -> Failure:
        return classify_sdk_error(exc, self.name)

    def rate_info(self, headers: Mapping[str, str]) -> RateInfo | None:
        lim = headers.get("anthropic-ratelimit-requests-limit")
        lim_t = headers.get("anthropic-ratelimit-tokens-limit")
        if lim is None and lim_t is None:
            return None
        return RateInfo(
            limit_requests=_int(lim),
            remaining_requests=_int(headers.get("anthropic-ratelimit-requests-remaining")),
            reset_requests_s=_until(headers.get("anthropic-ratelimit-requests-reset")),
            limit_tokens=_int(lim_t),
            remaining_tokens=_int(headers.get("anthropic-ratelimit-tokens-remaining")),
            reset_tokens_s=_until(headers.get("anthropic-ratelimit-tokens-reset")),
        )


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


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _until(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(when.timestamp() - datetime.now(when.tzinfo).timestamp(), 0.0)
