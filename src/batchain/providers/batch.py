"""Provider Batch API logic without I/O: limits, chunking, line formats, status mapping and
the classification of every per-request outcome.

The I/O (upload, create, retrieve, download, cancel, list) lives in each provider's
``*BatchAPI`` class and only moves bytes; everything that decides lives here and is unit
tested on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from batchain import _json

__all__ = [
    "ANTHROPIC_LIMITS",
    "OPENAI_LIMITS",
    "BatchLimits",
    "BatchView",
    "Outcome",
    "OutcomeKind",
    "Refusal",
    "RefusalKind",
    "anthropic_outcomes",
    "anthropic_view",
    "chunk",
    "counts_inputs",
    "create_refusal",
    "openai_failed_batch_outcomes",
    "openai_line",
    "openai_outcomes",
    "openai_refusal",
    "openai_view",
    "request_inputs",
]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_requests: int
    max_bytes: int
    #: most inputs across a batch's requests, where a request may carry many (OpenAI's
    #: embeddings: 50,000 texts per batch, whatever the number of requests); see
    #: :func:`request_inputs`
    max_inputs: int | None = None


OPENAI_LIMITS = BatchLimits(max_requests=50_000, max_bytes=200 * 1024 * 1024, max_inputs=50_000)
ANTHROPIC_LIMITS = BatchLimits(max_requests=100_000, max_bytes=256 * 1024 * 1024)
#: keep well under the byte limits: envelopes and multipart framing add a little
_BYTE_HEADROOM = 0.95


def counts_inputs(endpoint: str) -> bool:
    """Does a request to ``endpoint`` carry more than one input towards ``max_inputs``
    (embeddings)? Every other request carries one."""
    return endpoint.endswith("/embeddings")


def request_inputs(endpoint: str, body: Mapping[str, Any]) -> int:
    """How many inputs a request carries towards ``max_inputs``: the texts (or token lists)
    of an embeddings request, else 1."""
    if not counts_inputs(endpoint):
        return 1
    value = body.get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


def chunk(
    sized: Sequence[tuple[str, int]],
    limits: BatchLimits,
    max_requests: int | None = None,
    inputs: Mapping[str, int] | None = None,
) -> Iterator[list[str]]:
    """Split ``(key, encoded_size)`` pairs into batches under every limit, in order (with
    ``inputs``, each key's count towards ``max_inputs``). A request larger than a limit on
    its own goes alone: the provider decides."""
    cap_n = min(limits.max_requests, max_requests or limits.max_requests)
    cap_b = int(limits.max_bytes * _BYTE_HEADROOM)
    cap_i = limits.max_inputs if inputs is not None else None
    current: list[str] = []
    size = count = 0
    for key, n in sized:
        k = inputs[key] if inputs is not None else 1
        full = len(current) >= cap_n or size + n > cap_b or (cap_i is not None and count + k > cap_i)
        if current and full:
            yield current
            current, size, count = [], 0, 0
        current.append(key)
        size += n
        count += k
    if current:
        yield current


# -- refusals for size or queue ---------------------------------------------------------------


class RefusalKind(StrEnum):
    """Why a provider refused a whole batch for its size or its queue (never its requests'
    fault: the calls wait or go in smaller batches, never fail for it)."""

    #: the model's queue is full: enqueued input tokens (OpenAI ``token_limit_exceeded``)
    QUEUED_TOKENS = "queued_tokens"
    #: the queue is full: requests waiting to be processed (Anthropic 429 at create)
    QUEUED_REQUESTS = "queued_requests"
    #: too many requests in one batch (OpenAI ``too_many_tasks``, Anthropic "at most N items")
    REQUESTS = "requests"
    #: too many bytes in one batch (OpenAI "File is too large.", HTTP 413)
    BYTES = "bytes"
    #: any other 429 at create (a rate limit on creating batches): wait and try again
    RATE = "rate"

    @property
    def queue(self) -> bool:
        """A refusal that a batch of the model ending can lift (as opposed to its size)."""
        return self in (RefusalKind.QUEUED_TOKENS, RefusalKind.QUEUED_REQUESTS)


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: RefusalKind
    #: the provider's words
    message: str
    #: the limit the provider stated (its tokens or requests), when it did
    limit: int | None = None


_STATED_TOKENS = re.compile(r"Limit:\s*([\d,]+)\s*enqueued tokens", re.IGNORECASE)
_STATED_REQUESTS = re.compile(
    r"(?:at most|maximum of|limit of)\s*([\d,]+)\s*(?:items|requests)", re.IGNORECASE
)
_TOO_LARGE = re.compile(r"too large|exceeds the maximum allowed number of bytes", re.IGNORECASE)


def _stated(pattern: re.Pattern[str], message: str) -> int | None:
    found = pattern.search(message)
    return int(found.group(1).replace(",", "")) if found else None


def openai_refusal(errors: Any) -> Refusal | None:
    """A batch that failed validation only for its queue or its size (every error is
    ``token_limit_exceeded``, or every one ``too_many_tasks``), else None."""
    data = (errors or {}).get("data") or [] if isinstance(errors, dict) else []
    entries = [e for e in data if isinstance(e, dict)]
    codes = {str(e.get("code")) for e in entries}
    message = "; ".join(str(e.get("message")) for e in entries)
    if codes == {"token_limit_exceeded"}:
        return Refusal(RefusalKind.QUEUED_TOKENS, message, _stated(_STATED_TOKENS, message))
    if codes == {"too_many_tasks"}:
        return Refusal(RefusalKind.REQUESTS, message, _stated(_STATED_REQUESTS, message))
    return None


def create_refusal(status: int | None, message: str) -> Refusal | None:
    """A batch create (or its upload) the provider refused for the batch's size or its
    queue, from the HTTP status and the error's text; None for any other failure."""
    if status == 413 or (status == 400 and _TOO_LARGE.search(message)):
        return Refusal(RefusalKind.BYTES, message)
    if status == 400 and (limit := _stated(_STATED_REQUESTS, message)) is not None:
        return Refusal(RefusalKind.REQUESTS, message, limit)
    if status == 429:
        if "queue" in message.lower():  # Anthropic: requests in the processing queue
            return Refusal(RefusalKind.QUEUED_REQUESTS, message, _stated(_STATED_REQUESTS, message))
        return Refusal(RefusalKind.RATE, message)
    return None


# -- per-request outcomes -----------------------------------------------------------------


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    #: the request was fine but did not run or failed transiently: send it again
    RETRY = "retry"
    #: the provider rejected the request itself: the item gets the error
    FAILED = "failed"


# not frozen: a frozen dataclass sets each field through object.__setattr__, four times
# slower to make, and a collect makes one per request (50,000: about 0.1 s of CPU)
@dataclass(slots=True)
class Outcome:
    custom_id: str
    kind: OutcomeKind
    #: the response body (JSON text) when succeeded, else an error message
    body: str
    status: int | None = None
    reason: str = ""
    #: the response body parsed (succeeded only; saves parsing ``body`` again)
    data: Any = None


def openai_line(custom_id: str, endpoint: str, body: Mapping[str, Any]) -> bytes:
    line = {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}
    return _json.dumpb(line) + b"\n"


def _http_outcome(custom_id: str, status: int, body: Any) -> Outcome:
    if status == 200:
        text = _json.dumps(body)
        return Outcome(custom_id, OutcomeKind.SUCCEEDED, text, status, data=body)
    err = body.get("error", body) if isinstance(body, dict) else body
    message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    retryable = status == 429 or status >= 500 or status in (408, 409)
    kind = OutcomeKind.RETRY if retryable else OutcomeKind.FAILED
    return Outcome(custom_id, kind, f"{status}: {message}", status, f"http_{status}")


def openai_outcomes(text: str | bytes) -> Iterator[Outcome]:
    """Outcomes from an OpenAI output or error file (any order; join on custom_id)."""
    for raw in text.splitlines():
        if not raw.strip():
            continue
        line = _json.loads(raw)
        cid = str(line.get("custom_id"))
        response = line.get("response")
        if response is not None:
            yield _http_outcome(cid, int(response.get("status_code", 0)), response.get("body"))
            continue
        error = line.get("error") or {}
        code = str(error.get("code") or "error")
        # expired / cancelled / timed out: the request never ran, so it is safe to resend
        yield Outcome(cid, OutcomeKind.RETRY, str(error.get("message") or code), None, code)


def openai_failed_batch_outcomes(keys: Iterable[str], errors: Any) -> Iterator[Outcome]:
    """A batch that failed validation: nothing ran. Retry only what waiting can fix."""
    data = (errors or {}).get("data") or [] if isinstance(errors, dict) else []
    codes = {str(e.get("code")) for e in data if isinstance(e, dict)}
    message = "; ".join(str(e.get("message")) for e in data if isinstance(e, dict)) or "batch failed"
    transient = codes <= {"token_limit_exceeded", "rate_limit_exceeded"} and bool(codes)
    kind = OutcomeKind.RETRY if transient else OutcomeKind.FAILED
    for key in keys:
        yield Outcome(key, kind, f"batch failed validation: {message}", None, ",".join(sorted(codes)))


def anthropic_outcomes(text: str | bytes) -> Iterator[Outcome]:
    """Outcomes from an Anthropic results JSONL stream."""
    for raw in text.splitlines():
        if not raw.strip():
            continue
        line = _json.loads(raw)
        cid = str(line.get("custom_id"))
        result = line.get("result") or {}
        kind = result.get("type")
        if kind == "succeeded":
            message = result.get("message")
            body = _json.dumps(message)
            yield Outcome(cid, OutcomeKind.SUCCEEDED, body, 200, data=message)
        elif kind == "errored":
            envelope = result.get("error") or {}
            err = envelope.get("error", envelope) if isinstance(envelope, dict) else {}
            etype = str(err.get("type", "api_error"))
            message = f"{etype}: {err.get('message', '')}"
            permanent = etype in (
                "invalid_request_error",
                "authentication_error",
                "permission_error",
                "not_found_error",
                "billing_error",
            )
            yield Outcome(cid, OutcomeKind.FAILED if permanent else OutcomeKind.RETRY, message, None, etype)
        else:  # canceled / expired: never ran
            yield Outcome(cid, OutcomeKind.RETRY, str(kind), None, str(kind))


# -- batch status --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchView:
    """A provider batch reduced to what the engine needs."""

    ended: bool
    status: str
    done: int = 0
    total: int = 0
    #: OpenAI: output and error file ids; Anthropic: results URL
    output_ref: str | None = None
    error_ref: str | None = None
    errors: Any = None
    #: the provider refused the whole batch for its queue or size (nothing in it ran)
    refusal: Refusal | None = None


_OPENAI_ENDED = {"completed", "failed", "expired", "cancelled"}


def openai_view(batch: Mapping[str, Any]) -> BatchView:
    counts = batch.get("request_counts") or {}
    return BatchView(
        ended=batch.get("status") in _OPENAI_ENDED,
        status=str(batch.get("status")),
        done=int(counts.get("completed") or 0) + int(counts.get("failed") or 0),
        total=int(counts.get("total") or 0),
        output_ref=batch.get("output_file_id"),
        error_ref=batch.get("error_file_id"),
        errors=batch.get("errors"),
        refusal=openai_refusal(batch.get("errors")) if batch.get("status") == "failed" else None,
    )


def anthropic_view(batch: Mapping[str, Any]) -> BatchView:
    counts = batch.get("request_counts") or {}
    total = sum(int(v or 0) for v in counts.values())
    return BatchView(
        ended=batch.get("processing_status") == "ended",
        status=str(batch.get("processing_status")),
        done=total - int(counts.get("processing") or 0),
        total=total,
        output_ref=batch.get("results_url"),
    )
