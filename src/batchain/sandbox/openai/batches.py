"""OpenAI Batches: creation checks, validation, progressive processing, result files.

Sans-I/O: the store is advanced with explicit timestamps (``step(now, budget)``) by
the server's ticker and by request handlers; status changes go through
:func:`lifecycle.transition`.  Timestamps reported to clients are the *scheduled*
times, so they do not depend on polling.

Result semantics (see the protocol reference, section 2.3):

* output file: successful lines; error file: per-request HTTP errors
  (``response.status_code`` != 200, ``error`` null) and never-run requests
  (``response`` null, ``error.code`` ``batch_expired`` / ``batch_cancelled``);
  ``output_file_id`` / ``error_file_id`` are null when the file would be empty;
* a batch whose every request failed still ends ``completed``;
* ``errors`` is null unless validation failed;
* ``request_counts.completed`` / ``failed`` grow while ``in_progress``; expired and
  cancelled requests are added to ``failed`` when the batch reaches its final state;
  requests dropped by ``batch_drop_rate`` count as completed but have no line.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchain.sandbox import ids
from batchain.sandbox.calls import Evaluated, ProviderSpec, bill, dumps, evaluate, logger
from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.errors import ApiError, openai_error_body
from batchain.sandbox.lifecycle import OpenAIStatus, is_terminal, transition
from batchain.sandbox.openai.files import FileStore, not_found
from batchain.sandbox.progress import Schedule

if TYPE_CHECKING:
    from batchain.sandbox.openai.chat import OpenAISpec
    from batchain.sandbox.state import SandboxState

__all__ = ["ENDPOINTS", "OpenAIBatch", "OpenAIBatchStore"]

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
_WINDOW_S = 24 * 3600
_MAX_ERRORS = 1000
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
_CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
S = OpenAIStatus


@dataclass(slots=True)
class _Item:
    line: int
    custom_id: str
    body: dict[str, Any]


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


@dataclass(slots=True)
class OpenAIBatch:
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    output_expires_after: int | None
    config: SandboxConfig
    created: float
    status: OpenAIStatus = OpenAIStatus.VALIDATING
    model: str | None = None
    errors: list[dict[str, Any]] | None = None
    items: list[_Item] = field(default_factory=list)  # dropped once final, to free memory
    total: int = 0
    processed: int = 0
    stop_count: int = 0
    schedule: Schedule | None = None
    expiring: bool = False
    completed: int = 0
    failed: int = 0
    usage: _Usage | None = None
    output_lines: list[bytes] = field(default_factory=list)
    error_lines: list[bytes] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    rng: random.Random = field(default_factory=random.Random)
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None

    def move(self, target: OpenAIStatus, at: float) -> None:
        self.status = transition(self.status, target)
        setattr(self, f"{target.value}_at", at)

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
            "expires_at": int(self.created) + _WINDOW_S,
            "finalizing_at": stamp(self.finalizing_at),
            "completed_at": stamp(self.completed_at),
            "failed_at": stamp(self.failed_at),
            "expired_at": stamp(self.expired_at),
            "cancelling_at": stamp(self.cancelling_at),
            "cancelled_at": stamp(self.cancelled_at),
            "request_counts": {"total": total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
            "usage": self.usage.to_dict() if self.usage is not None else None,
        }


def _line_error(code: str, line: int | None, message: str, param: str | None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def _missing_line_field(name: str, line: int) -> dict[str, Any]:
    return _line_error("missing_required_parameter", line, f"Missing required parameter: '{name}'.", name)


def validate_input(
    data: bytes, endpoint: str, max_requests: int
) -> tuple[list[_Item], str | None, list[dict[str, Any]]]:
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
    items: list[_Item] = []
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
        items.append(_Item(number, obj["custom_id"], body))
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


class OpenAIBatchStore:
    """All OpenAI batches of one sandbox; advanced by :meth:`step`."""

    def __init__(self, state: SandboxState, spec: OpenAISpec, files: FileStore) -> None:
        self._state = state
        self._spec = spec
        self._files = files
        self._batches: dict[str, OpenAIBatch] = {}
        self._active: dict[str, OpenAIBatch] = {}

    # -- store protocol ----------------------------------------------------------------

    def clear(self) -> None:
        self._batches.clear()
        self._active.clear()
        self._files.clear()

    def active(self) -> bool:
        return bool(self._active)

    def step(self, now: float, budget: int) -> int:
        work = 0
        for batch in list(self._active.values()):
            if work >= budget:
                break
            work += self._advance(batch, now, budget - work)
            if is_terminal(batch.status):
                self._active.pop(batch.id, None)
        return work

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
        batch.rng = random.Random(f"{config.seed}:{batch.id}")
        self._batches[batch.id] = batch
        self._active[batch.id] = batch
        self._state.wake()
        return batch

    def get(self, batch_id: str, now: float | None = None) -> OpenAIBatch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found("Batch", batch_id, "batch_id")
        if batch.id in self._active:
            self._advance(batch, time.time() if now is None else now, 1 << 62)
            if is_terminal(batch.status):
                self._active.pop(batch.id, None)
        return batch

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

    def list(self, after: str | None, limit: int) -> tuple[list[OpenAIBatch], bool]:
        self._state.advance()
        newest_first = list(reversed(self._batches.values()))
        if after is not None:
            position = next((i for i, b in enumerate(newest_first) if b.id == after), None)
            newest_first = newest_first[position + 1 :] if position is not None else []
        return newest_first[:limit], len(newest_first) > limit

    # -- lifecycle -------------------------------------------------------------------

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
                assert batch.schedule is not None
                due = min(batch.schedule.due(now), batch.stop_count)
                count = min(due - batch.processed, budget - work)
                if count > 0:
                    self._run(batch, count)
                    work += count
                if batch.processed < due:
                    return work  # out of budget, continue next tick
                if batch.processed < batch.total:
                    if batch.processed < batch.stop_count:
                        return work  # more items are due later
                    batch.expiring = True  # expiry after the configured fraction
                    batch.move(S.FINALIZING, batch.schedule.time_of(batch.stop_count))
                elif now >= batch.schedule.end:
                    batch.move(S.FINALIZING, batch.schedule.end)
                else:
                    return work
            elif status is S.FINALIZING:
                assert batch.finalizing_at is not None
                at = batch.finalizing_at + cfg.batch_finalizing_s
                if now < at:
                    return work
                target = S.EXPIRED if batch.expiring else S.COMPLETED
                self._finish(batch, _EXPIRED_MESSAGE, "batch_expired")
                batch.move(target, at)
            elif status is S.CANCELLING:
                assert batch.cancelling_at is not None
                at = batch.cancelling_at + cfg.cancel_delay_s
                if now < at:
                    return work
                self._finish(batch, _CANCELLED_MESSAGE, "batch_cancelled")
                batch.move(S.CANCELLED, at)
            else:
                return work

    def _validate(self, batch: OpenAIBatch, at: float) -> None:
        cfg = batch.config
        record = self._files.get_or_none(batch.input_file_id)
        items: list[_Item] = []
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
        if errors:
            batch.errors = errors
            batch.move(S.FAILED, at)
            return
        batch.items = items
        batch.total = len(items)
        batch.model = model
        batch.usage = _Usage()
        total = len(items)
        fraction = cfg.batch_expire_after_fraction
        batch.stop_count = total if fraction is None else int(total * fraction)
        batch.schedule = Schedule(at, cfg.batch_processing_s, total)
        batch.move(S.IN_PROGRESS, at)

    def _run(self, batch: OpenAIBatch, count: int) -> None:
        state, spec, cfg = self._state, self._spec, batch.config
        rng = batch.rng
        usage = batch.usage
        assert usage is not None
        start = batch.processed
        for item in batch.items[start : start + count]:
            dropped = cfg.batch_drop_rate > 0 and rng.random() < cfg.batch_drop_rate
            injected = cfg.batch_item_error_rate > 0 and rng.random() < cfg.batch_item_error_rate
            try:
                ev = _evaluate_safely(spec, item.body)
                flaky = ev.directives.flaky
                if flaky is not None and state.flaky_fails(ev.digest, flaky):
                    raise ApiError(500, f"Sandbox directive [[flaky:{flaky}]] failed this attempt.")
                if injected:
                    raise ApiError(500, "The server had an error while processing your request.")
                if dropped:
                    batch.completed += 1  # the server thinks it answered; the line is lost
                    continue
                payload = bill(state, spec, ev, "batch", batch.id, item.custom_id)
            except ApiError as error:
                batch.failed += 1
                batch.error_lines.append(_result_line(item.custom_id, error.status, openai_error_body(error)))
                continue
            batch.completed += 1
            tokens = payload["usage"]
            usage.input_tokens += tokens["prompt_tokens"]
            usage.cached_tokens += tokens["prompt_tokens_details"]["cached_tokens"]
            usage.output_tokens += tokens["completion_tokens"]
            batch.output_lines.append(_result_line(item.custom_id, 200, payload))
        batch.processed = start + count

    def _finish(self, batch: OpenAIBatch, message: str, code: str) -> None:
        """Write never-run requests as error lines, then the result files."""
        for item in batch.items[batch.processed :]:
            batch.failed += 1
            line = {
                "id": ids.openai_batch_request_id(),
                "custom_id": item.custom_id,
                "response": None,
                "error": {"code": code, "message": message},
            }
            batch.error_lines.append(dumps(line) + b"\n")
        batch.processed = batch.total
        batch.items = []
        for kind in ("output", "error"):
            lines = batch.output_lines if kind == "output" else batch.error_lines
            if not lines:
                continue
            if batch.config.shuffle_results:
                batch.rng.shuffle(lines)
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
        batch.output_lines = []
        batch.error_lines = []


def _result_line(custom_id: str, status: int, body: dict[str, Any]) -> bytes:
    line = {
        "id": ids.openai_batch_request_id(),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": ids.openai_request_id(), "body": body},
        "error": None,
    }
    return dumps(line) + b"\n"


def _evaluate_safely(spec: ProviderSpec, body: dict[str, Any]) -> Evaluated:
    """Evaluate one item; an internal bug fails that item (500), never the whole batch."""
    try:
        return evaluate(spec, body, batch=True)
    except ApiError:
        raise
    except Exception:
        logger.exception("sandbox: unexpected error evaluating a batch item")
        raise ApiError(500, "The server had an error while processing your request.") from None
