"""OpenAI Batches on the wire: input-file validation, the Batch object, result files.

The store, processing and ending of batches are the neutral
:mod:`batchain.sandbox.batches`; this module adds OpenAI's status machine (a
validating phase, finalizing, ``completed`` / ``expired`` / ``cancelled``; changes go
through :func:`lifecycle.transition`), its JSONL input checks and result lines, and
the output / error files.  Timestamps reported to clients are the *scheduled* times,
so they do not depend on polling.

Result semantics (see the protocol reference, section 2.3):

* output file: successful lines; error file: per-request HTTP errors
  (``response.status_code`` != 200, ``error`` null) and never-run requests
  (``response`` null, ``error.code`` ``batch_expired`` / ``batch_cancelled``);
  ``output_file_id`` / ``error_file_id`` are null when the file would be empty;
* a batch whose every request failed still ends ``completed``;
* ``errors`` is null unless validation failed;
* with ``openai_enqueued_token_limit``, a model's *enqueued tokens* are the input
  tokens of its batches that passed validation and have not ended (the sandbox's
  tokenizer counts them); a batch that would take them past the limit fails validation
  with ``token_limit_exceeded``, like OpenAI's per-model batch queue limit;
* ``request_counts.completed`` / ``failed`` grow while ``in_progress``; expired and
  cancelled requests are added to ``failed`` when the batch reaches its final state;
  requests dropped by ``batch_drop_rate`` count as completed but have no line.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchain.sandbox import ids
from batchain.sandbox.batches import WINDOW_S, Batch, BatchItem, BatchStoreBase, Unrun
from batchain.sandbox.calls import dumps
from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.errors import ApiError, openai_error_body
from batchain.sandbox.lifecycle import OpenAIStatus, is_terminal, transition
from batchain.sandbox.openai.files import FileStore, not_found
from batchain.sandbox.tokenizer import prompt_tokens

if TYPE_CHECKING:
    from batchain.sandbox.openai.chat import OpenAISpec
    from batchain.sandbox.state import SandboxState

__all__ = ["ENDPOINTS", "SUPPORTED_ENDPOINTS", "OpenAIBatch", "OpenAIBatchStore"]

ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
SUPPORTED_ENDPOINT = "/v1/chat/completions"
#: the endpoints the sandbox runs batches of
SUPPORTED_ENDPOINTS = (SUPPORTED_ENDPOINT, "/v1/responses", "/v1/embeddings")
_MAX_ERRORS = 1000
_UNRUN: dict[Unrun, tuple[str, str]] = {  # reason -> (error code, message)
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}
S = OpenAIStatus


@dataclass(slots=True)
class _Usage:
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


@dataclass(slots=True, kw_only=True)
class OpenAIBatch(Batch):
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    output_expires_after: int | None
    status: OpenAIStatus = OpenAIStatus.VALIDATING
    model: str | None = None
    errors: list[dict[str, Any]] | None = None
    expiring: bool = False
    usage: _Usage | None = None
    #: input tokens the batch holds in its model's queue (counted when the limit is set)
    enqueued_tokens: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None

    def is_final(self) -> bool:
        return is_terminal(self.status)

    def move(self, target: OpenAIStatus, at: float) -> None:
        self.status = transition(self.status, target)
        setattr(self, f"{target.value}_at", at)

    def enqueued_at(self, at: float) -> int:
        """Input tokens this batch holds in its model's queue at time ``at``: from passing
        validation until it ends (completed, expired or cancelled)."""
        if self.in_progress_at is None or self.in_progress_at > at:
            return 0
        ended = self.completed_at or self.expired_at or self.cancelled_at
        return self.enqueued_tokens if ended is None or ended > at else 0

    @property
    def failed(self) -> int:
        """Errored requests, plus never-run ones once the batch expired or was cancelled."""
        return self.errored + self.expired + self.cancelled

    def to_dict(self) -> dict[str, Any]:
        def stamp(value: float | None) -> int | None:
            return int(value) if value is not None else None

        total = self.total
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.value,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created),
            "in_progress_at": stamp(self.in_progress_at),
            "expires_at": int(self.created) + WINDOW_S,
            "finalizing_at": stamp(self.finalizing_at),
            "completed_at": stamp(self.completed_at),
            "failed_at": stamp(self.failed_at),
            "expired_at": stamp(self.expired_at),
            "cancelling_at": stamp(self.cancelling_at),
            "cancelled_at": stamp(self.cancelled_at),
            "request_counts": {"total": total, "completed": self.succeeded, "failed": self.failed},
            "metadata": self.metadata,
            "usage": self.usage.to_dict() if self.usage is not None else None,
        }


def _line_error(code: str, line: int | None, message: str, param: str | None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def _missing_line_field(name: str, line: int) -> dict[str, Any]:
    return _line_error("missing_required_parameter", line, f"Missing required parameter: '{name}'.", name)


def validate_input(
    data: bytes, endpoint: str, max_requests: int
) -> tuple[list[BatchItem], str | None, list[dict[str, Any]]]:
    """Parse and check a batch input file: (items, model, errors)."""
    lines = data.split(b"\n")
    numbered = [(n, raw.strip()) for n, raw in enumerate(lines, start=1) if raw.strip()]
    if not numbered:
        return [], None, [_line_error("empty_file", None, "The batch input file is empty.", None)]
    if len(numbered) > max_requests:
        message = (
            f"The batch input file has {len(numbered)} requests, which exceeds the maximum of "
            f"{max_requests} requests per batch."
        )
        return [], None, [_line_error("too_many_tasks", None, message, None)]
    items: list[BatchItem] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    loads = json.loads
    for number, raw in numbered:
        if len(errors) >= _MAX_ERRORS:
            break
        try:
            obj = loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            errors.append(
                _line_error("invalid_json_line", number, "This line is not parseable as valid JSON.", None)
            )
            continue
        problem = _check_line(obj, number, endpoint, seen, model)
        if problem is not None:
            errors.append(problem)
            continue
        body = obj["body"]
        line_model = body.get("model")
        if model is None and isinstance(line_model, str):
            model = line_model
        seen.add(obj["custom_id"])
        items.append(BatchItem(obj["custom_id"], body))
    return items, model, errors


def _check_line(
    obj: dict[str, Any], number: int, endpoint: str, seen: set[str], model: str | None
) -> dict[str, Any] | None:
    for name in ("custom_id", "method", "url", "body"):
        if name not in obj or obj[name] is None:
            return _missing_line_field(name, number)
    custom_id = obj["custom_id"]
    if not isinstance(custom_id, str):
        return _line_error("invalid_custom_id", number, "The custom_id must be a string.", "custom_id")
    if obj["method"] != "POST":
        message = f"Invalid method '{obj['method']}'. Only 'POST' is supported."
        return _line_error("invalid_method", number, message, "method")
    if obj["url"] != endpoint:
        message = f"The URL provided for this request does not match the batch endpoint '{endpoint}'."
        return _line_error("url_mismatch", number, message, "url")
    if not isinstance(obj["body"], dict):
        return _line_error("invalid_body", number, "The request body must be an object.", "body")
    if custom_id in seen:
        message = (
            "The custom_id for this request is a duplicate of another request. The custom_id "
            "parameter must be unique for each request in a batch."
        )
        return _line_error("duplicate_custom_id", number, message, "custom_id")
    line_model = obj["body"].get("model")
    if model is not None and isinstance(line_model, str) and line_model != model:
        message = (
            f"The provided model '{line_model}' does not match the model '{model}' of the other "
            "requests in the batch. All requests in a batch must use the same model."
        )
        return _line_error("model_mismatch", number, message, "body.model")
    return None


class OpenAIBatchStore(BatchStoreBase[OpenAIBatch]):
    """All OpenAI batches of one sandbox, with the files their input and results live in."""

    internal_error = "The server had an error while processing your request."
    errors_apart = True  # per-request errors go to the batch's error file

    def __init__(
        self, state: SandboxState, spec: OpenAISpec, files: FileStore, **by_endpoint: OpenAISpec
    ) -> None:
        super().__init__(state, spec)
        self._files = files
        self._chat = spec
        #: the wire format of batches of other endpoints, by endpoint (``responses=``: "/v1/responses")
        self._by_endpoint = {f"/v1/{name}": other for name, other in by_endpoint.items()}

    def spec_for(self, batch: OpenAIBatch) -> OpenAISpec:
        return self._by_endpoint.get(batch.endpoint, self._chat)

    def clear(self) -> None:
        super().clear()
        self._files.clear()

    # -- API operations ------------------------------------------------------------------

    def create(
        self,
        input_file_id: str,
        endpoint: str,
        window: str,
        metadata: dict[str, str] | None,
        output_expires_after: int | None,
        config: SandboxConfig,
    ) -> OpenAIBatch:
        record = self._files.get_or_none(input_file_id)
        if record is None:
            raise not_found("File", input_file_id, "input_file_id")
        if record.purpose != "batch":
            raise ApiError(
                400,
                f"Invalid 'input_file_id': '{input_file_id}'. The file must have purpose "
                f"'batch', but it has purpose '{record.purpose}'.",
                param="input_file_id",
                code="invalid_value",
            )
        batch = OpenAIBatch(
            id=ids.openai_batch_id(),
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=window,
            metadata=metadata,
            output_expires_after=output_expires_after,
            config=config,
            created=time.time(),
        )
        return self._add(batch)

    def cancel(self, batch_id: str) -> OpenAIBatch:
        now = time.time()
        batch = self.get(batch_id, now)
        if batch.status is S.CANCELLING:
            return batch
        if is_terminal(batch.status):
            raise ApiError(400, f"Cannot cancel a batch with status '{batch.status.value}'.", param=None)
        batch.move(S.CANCELLING, now)
        self._state.wake()
        return batch

    # -- lifecycle -------------------------------------------------------------------

    def _not_found(self, batch_id: str) -> ApiError:
        return not_found("Batch", batch_id, "batch_id")

    def _advance(self, batch: OpenAIBatch, now: float, budget: int) -> int:
        work = 0
        cfg = batch.config
        while True:
            status = batch.status
            if status is S.VALIDATING:
                at = batch.created + cfg.batch_validating_s
                if now < at:
                    return work
                self._validate(batch, at)
            elif status is S.IN_PROGRESS:
                done, ended = self._process(batch, now, budget - work)
                work += done
                if ended is None:
                    return work
                batch.expiring = ended.expired
                batch.move(S.FINALIZING, ended.at)
            elif status is S.FINALIZING:
                assert batch.finalizing_at is not None
                at = batch.finalizing_at + cfg.batch_finalizing_s
                if now < at:
                    return work
                self._finish(batch, "expired")
                batch.move(S.EXPIRED if batch.expiring else S.COMPLETED, at)
            elif status is S.CANCELLING:
                assert batch.cancelling_at is not None
                at = batch.cancelling_at + cfg.cancel_delay_s
                if now < at:
                    return work
                self._finish(batch, "cancelled")
                batch.move(S.CANCELLED, at)
            else:
                return work

    def _validate(self, batch: OpenAIBatch, at: float) -> None:
        cfg = batch.config
        record = self._files.get_or_none(batch.input_file_id)
        items: list[BatchItem] = []
        model: str | None = None
        if cfg.batch_fail_validation:
            errors = [
                _line_error(
                    "invalid_request",
                    None,
                    "The batch failed validation (sandbox knob batch_fail_validation).",
                    None,
                )
            ]
        elif record is None:
            errors = [_line_error("invalid_file", None, "The input file was deleted.", None)]
        else:
            items, model, errors = validate_input(record.data, batch.endpoint, cfg.openai_max_batch_requests)
        if not errors and model is not None and cfg.openai_enqueued_token_limit is not None:
            batch.enqueued_tokens = self._input_tokens(batch, items)
            errors = self._check_queue(batch, model, at, cfg.openai_enqueued_token_limit)
        if errors:
            batch.errors = errors
            batch.move(S.FAILED, at)
            return
        batch.model = model
        batch.usage = _Usage()
        batch.begin(items, at)
        batch.move(S.IN_PROGRESS, at)

    def _input_tokens(self, batch: OpenAIBatch, items: list[BatchItem]) -> int:
        """The prompt tokens of ``items``, as they will be billed (a body that does not
        parse counts nothing: it fails when it runs)."""
        total = 0
        for item in items:
            try:
                total += prompt_tokens(self.spec_for(batch).parse(item.body, batch=True))
            except ApiError:
                continue
        return total

    def _check_queue(self, batch: OpenAIBatch, model: str, at: float, limit: int) -> list[dict[str, Any]]:
        """``token_limit_exceeded`` when ``batch`` would take its model's enqueued tokens
        past ``limit`` at time ``at`` (its validation), else no error."""
        for other in list(self._active.values()):  # created first, so validated first
            if other is batch:
                break
            if other.status is S.VALIDATING:
                self._advance(other, at, 1 << 62)
        queued = sum(b.enqueued_at(at) for b in self._batches.values() if b.model == model and b is not batch)
        if queued + batch.enqueued_tokens <= limit:
            return []
        message = (
            f"Enqueued token limit reached for {model} in organization org-sandbox. "
            f"Limit: {limit:,} enqueued tokens. Please try submitting an equal or smaller "
            "batch after some of your enqueued batches have completed."
        )
        return [_line_error("token_limit_exceeded", None, message, None)]

    # -- wire format -------------------------------------------------------------------

    def _success_line(self, batch: OpenAIBatch, custom_id: str, payload: dict[str, Any]) -> bytes:
        usage = batch.usage
        assert usage is not None
        tokens = payload["usage"]
        if "prompt_tokens" in tokens:  # chat completions, embeddings
            usage.input_tokens += tokens["prompt_tokens"]
            usage.cached_tokens += (tokens.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            usage.output_tokens += tokens.get("completion_tokens", 0)
        else:  # responses
            usage.input_tokens += tokens["input_tokens"]
            usage.cached_tokens += tokens["input_tokens_details"]["cached_tokens"]
            usage.output_tokens += tokens["output_tokens"]
        return _result_line(custom_id, 200, payload)

    def _error_line(self, custom_id: str, error: ApiError) -> bytes:
        return _result_line(custom_id, error.status, openai_error_body(error))

    def _unrun_line(self, custom_id: str, reason: Unrun) -> bytes:
        code, message = _UNRUN[reason]
        line = {
            "id": ids.openai_batch_request_id(),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
        return dumps(line) + b"\n"

    def _seal(self, batch: OpenAIBatch) -> None:
        """Write the output and error files (none for a kind without lines)."""
        for kind, lines in (("output", batch.lines), ("error", batch.error_lines)):
            if not lines:
                continue
            record = self._files.add(
                f"batch_{batch.id.removeprefix('batch_')}_{kind}.jsonl",
                "batch_output",
                b"".join(lines),
                batch.output_expires_after,
            )
            if kind == "output":
                batch.output_file_id = record.id
            else:
                batch.error_file_id = record.id


def _result_line(custom_id: str, status: int, body: dict[str, Any]) -> bytes:
    line = {
        "id": ids.openai_batch_request_id(),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": ids.openai_request_id(), "body": body},
        "error": None,
    }
    return dumps(line) + b"\n"
