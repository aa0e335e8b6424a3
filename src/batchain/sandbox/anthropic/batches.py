"""Anthropic Message Batches: creation checks, progressive processing, results.

Sans-I/O like :mod:`batchain.sandbox.openai.batches`.  Anthropic has no validating phase: the batch
is ``in_progress`` from creation (``batch_validating_s`` + ``batch_processing_s`` +
``batch_finalizing_s`` are all spent in ``in_progress``), ``request_counts`` stay
all ``processing`` until the batch ends, and results (JSONL at an absolute
``results_url``) exist only once it has ended.  Bad ``params`` are validated
asynchronously and come back as ``errored`` results.  Requests dropped by
``batch_drop_rate`` count as ``succeeded`` but have no result line.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchain.sandbox import ids
from batchain.sandbox.calls import Evaluated, ProviderSpec, bill, dumps, evaluate, logger
from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.errors import ApiError, anthropic_error_body
from batchain.sandbox.lifecycle import AnthropicStatus, is_terminal, transition
from batchain.sandbox.progress import Schedule

if TYPE_CHECKING:
    from batchain.sandbox.anthropic.messages import AnthropicSpec
    from batchain.sandbox.state import SandboxState

__all__ = ["AnthropicBatch", "AnthropicBatchStore", "BatchRequest", "check_requests"]

_WINDOW_S = 24 * 3600
_CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
S = AnthropicStatus


@dataclass(slots=True)
class BatchRequest:
    custom_id: str
    params: dict[str, Any]


@dataclass(slots=True)
class AnthropicBatch:
    id: str
    config: SandboxConfig
    created: float
    requests: list[BatchRequest]  # dropped once ended, to free memory
    total: int
    schedule: Schedule
    stop_count: int
    rng: random.Random
    status: AnthropicStatus = AnthropicStatus.IN_PROGRESS
    processed: int = 0
    ends_at: float | None = None  # when the batch will be ``ended``
    ended_at: float | None = None
    cancel_initiated_at: float | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("succeeded", "errored", "canceled", "expired"), 0)
    )
    lines: list[bytes] = field(default_factory=list)
    results: bytes | None = None

    def move(self, target: AnthropicStatus) -> None:
        self.status = transition(self.status, target)

    def to_dict(self, base_url: str) -> dict[str, Any]:
        ended = self.status is S.ENDED
        if ended:
            counts = {"processing": 0, **self.counts}
        else:
            counts = {"processing": self.total, **dict.fromkeys(self.counts, 0)}
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status.value,
            "request_counts": counts,
            "ended_at": ids.rfc3339(self.ended_at) if self.ended_at is not None else None,
            "created_at": ids.rfc3339(self.created),
            "expires_at": ids.rfc3339(self.created + _WINDOW_S),
            "archived_at": None,
            "cancel_initiated_at": (
                ids.rfc3339(self.cancel_initiated_at) if self.cancel_initiated_at is not None else None
            ),
            "results_url": (f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None),
        }


def _invalid(message: str) -> ApiError:
    return ApiError(400, message)


def check_requests(body: dict[str, Any], max_requests: int) -> list[BatchRequest]:
    """Create-time checks: shape, count, ``custom_id`` format and uniqueness."""
    raw = body.get("requests")
    if raw is None:
        raise _invalid("requests: Field required")
    if not isinstance(raw, list):
        raise _invalid("requests: Input should be a valid list")
    if not raw:
        raise _invalid("requests: List should have at least 1 item after validation, not 0")
    if len(raw) > max_requests:
        raise _invalid(
            f"requests: List should have at most {max_requests} items after validation, not {len(raw)}"
        )
    requests: list[BatchRequest] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"requests.{index}"
        if not isinstance(item, dict):
            raise _invalid(f"{where}: Input should be a valid dictionary")
        custom_id = item.get("custom_id")
        if custom_id is None:
            raise _invalid(f"{where}.custom_id: Field required")
        if not isinstance(custom_id, str):
            raise _invalid(f"{where}.custom_id: Input should be a valid string")
        if len(custom_id) > 64:
            raise _invalid(f"{where}.custom_id: String should have at most 64 characters")
        if not custom_id:
            raise _invalid(f"{where}.custom_id: String should have at least 1 character")
        if not _CUSTOM_ID_RE.match(custom_id):
            raise _invalid(f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if custom_id in seen:
            raise _invalid(
                f"{where}.custom_id: Duplicate custom_id '{custom_id}'. Each request in a "
                "batch must have a unique custom_id."
            )
        params = item.get("params")
        if params is None:
            raise _invalid(f"{where}.params: Field required")
        if not isinstance(params, dict):
            raise _invalid(f"{where}.params: Input should be a valid dictionary")
        seen.add(custom_id)
        requests.append(BatchRequest(custom_id, params))
    return requests


def _not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"No batch found with id '{batch_id}'.")


class AnthropicBatchStore:
    """All Anthropic message batches of one sandbox; advanced by :meth:`step`."""

    def __init__(self, state: SandboxState, spec: AnthropicSpec) -> None:
        self._state = state
        self._spec = spec
        self._batches: dict[str, AnthropicBatch] = {}
        self._active: dict[str, AnthropicBatch] = {}

    # -- store protocol ----------------------------------------------------------------

    def clear(self) -> None:
        self._batches.clear()
        self._active.clear()

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

    def create(self, requests: list[BatchRequest], config: SandboxConfig) -> AnthropicBatch:
        now = time.time()
        batch_id = ids.anthropic_batch_id()
        total = len(requests)
        fraction = config.batch_expire_after_fraction
        batch = AnthropicBatch(
            id=batch_id,
            config=config,
            created=now,
            requests=requests,
            total=total,
            schedule=Schedule(now + config.batch_validating_s, config.batch_processing_s, total),
            stop_count=total if fraction is None else int(total * fraction),
            rng=random.Random(f"{config.seed}:{batch_id}"),
        )
        self._batches[batch_id] = batch
        self._active[batch_id] = batch
        self._state.wake()
        return batch

    def get(self, batch_id: str) -> AnthropicBatch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise _not_found(batch_id)
        if batch.id in self._active:
            self._advance(batch, time.time(), 1 << 62)
            if is_terminal(batch.status):
                self._active.pop(batch.id, None)
        return batch

    def cancel(self, batch_id: str) -> AnthropicBatch:
        batch = self.get(batch_id)
        if batch.status is S.IN_PROGRESS:
            now = time.time()
            batch.move(S.CANCELING)
            batch.cancel_initiated_at = now
            batch.ends_at = now + batch.config.cancel_delay_s
            self._state.wake()
        elif batch.status is S.ENDED:
            raise _invalid(f"Batch {batch_id} has already ended and cannot be canceled.")
        return batch

    def delete(self, batch_id: str) -> None:
        batch = self.get(batch_id)
        if batch.status is not S.ENDED:
            raise _invalid(
                f"Batch {batch_id} cannot be deleted while it is {batch.status.value}. "
                "Cancel it first and wait for it to end."
            )
        del self._batches[batch_id]

    def results(self, batch_id: str) -> bytes:
        batch = self.get(batch_id)
        if batch.results is None:
            raise _invalid(
                f"Batch {batch_id} has not ended yet; results are available once "
                "processing_status is 'ended'."
            )
        return batch.results

    def list(
        self, after_id: str | None, before_id: str | None, limit: int
    ) -> tuple[list[AnthropicBatch], bool]:
        self._state.advance()
        newest_first = list(reversed(self._batches.values()))
        if before_id is not None:
            position = next((i for i, b in enumerate(newest_first) if b.id == before_id), None)
            newer = newest_first[:position] if position is not None else []
            return newer[-limit:], len(newer) > limit
        if after_id is not None:
            position = next((i for i, b in enumerate(newest_first) if b.id == after_id), None)
            newest_first = newest_first[position + 1 :] if position is not None else []
        return newest_first[:limit], len(newest_first) > limit

    # -- lifecycle -------------------------------------------------------------------

    def _advance(self, batch: AnthropicBatch, now: float, budget: int) -> int:
        work = 0
        if batch.status is S.IN_PROGRESS:
            total = batch.total
            due = min(batch.schedule.due(now), batch.stop_count)
            count = min(due - batch.processed, budget)
            if count > 0:
                self._run(batch, count)
                work = count
            if batch.processed < due:
                return work
            if batch.ends_at is None:
                if batch.processed == total and now >= batch.schedule.end:
                    batch.ends_at = batch.schedule.end + batch.config.batch_finalizing_s
                elif batch.processed == batch.stop_count < total:
                    expiry = batch.schedule.time_of(batch.stop_count)
                    batch.ends_at = expiry + batch.config.batch_finalizing_s
        if batch.ends_at is not None and now >= batch.ends_at and not is_terminal(batch.status):
            kind = "canceled" if batch.status is S.CANCELING else "expired"
            self._finish(batch, kind)
            batch.move(S.ENDED)
            batch.ended_at = batch.ends_at
        return work

    def _run(self, batch: AnthropicBatch, count: int) -> None:
        state, spec, cfg, rng = self._state, self._spec, batch.config, batch.rng
        start = batch.processed
        for request in batch.requests[start : start + count]:
            dropped = cfg.batch_drop_rate > 0 and rng.random() < cfg.batch_drop_rate
            injected = cfg.batch_item_error_rate > 0 and rng.random() < cfg.batch_item_error_rate
            try:
                ev = _evaluate_safely(spec, request.params)
                flaky = ev.directives.flaky
                if flaky is not None and state.flaky_fails(ev.digest, flaky):
                    raise ApiError(500, f"Sandbox directive [[flaky:{flaky}]] failed this attempt.")
                if injected:
                    raise ApiError(500, "Internal server error")
                if dropped:
                    batch.counts["succeeded"] += 1  # counted, but its line is lost
                    continue
                message = bill(state, spec, ev, "batch", batch.id, request.custom_id)
            except ApiError as error:
                batch.counts["errored"] += 1
                result: dict[str, Any] = {
                    "type": "errored",
                    "error": anthropic_error_body(error, None),
                }
            else:
                batch.counts["succeeded"] += 1
                result = {"type": "succeeded", "message": message}
            batch.lines.append(dumps({"custom_id": request.custom_id, "result": result}) + b"\n")
        batch.processed = start + count

    def _finish(self, batch: AnthropicBatch, kind: str) -> None:
        """Mark never-run requests ``canceled``/``expired`` and freeze the results."""
        for request in batch.requests[batch.processed :]:
            batch.counts[kind] += 1
            line = {"custom_id": request.custom_id, "result": {"type": kind}}
            batch.lines.append(dumps(line) + b"\n")
        batch.processed = batch.total
        batch.requests = []
        if batch.config.shuffle_results:
            batch.rng.shuffle(batch.lines)
        batch.results = b"".join(batch.lines)
        batch.lines = []


def _evaluate_safely(spec: ProviderSpec, body: dict[str, Any]) -> Evaluated:
    """Evaluate one item; an internal bug fails that item (500), never the whole batch."""
    try:
        return evaluate(spec, body, batch=True)
    except ApiError:
        raise
    except Exception:
        logger.exception("sandbox: unexpected error evaluating a batch item")
        raise ApiError(500, "Internal server error") from None
