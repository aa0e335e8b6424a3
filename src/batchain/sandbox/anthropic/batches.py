"""Anthropic Message Batches on the wire: creation checks, the batch object, results.

The store, processing and ending of batches are the neutral
:mod:`batchain.sandbox.batches`; this module adds Anthropic's status machine, its
create-time request checks and its result lines.  Anthropic has no validating
phase: the batch is ``in_progress`` from creation (``batch_validating_s`` +
``batch_processing_s`` + ``batch_finalizing_s`` are all spent in ``in_progress``),
``request_counts`` stay all ``processing`` until the batch ends, and results (JSONL
at an absolute ``results_url``) exist only once it has ended.  Bad ``params`` are validated
asynchronously and come back as ``errored`` results.  Requests dropped by
``batch_drop_rate`` count as ``succeeded`` but have no result line.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from batchain.sandbox import ids
from batchain.sandbox.batches import WINDOW_S, Batch, BatchItem, BatchStoreBase, Unrun
from batchain.sandbox.calls import dumps
from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.errors import ApiError, anthropic_error_body
from batchain.sandbox.lifecycle import AnthropicStatus, is_terminal, transition

__all__ = ["AnthropicBatch", "AnthropicBatchStore", "check_requests"]

_CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
S = AnthropicStatus

_UNRUN: dict[Unrun, str] = {"expired": "expired", "cancelled": "canceled"}  # -> result type


@dataclass(slots=True, kw_only=True)
class AnthropicBatch(Batch):
    status: AnthropicStatus = AnthropicStatus.IN_PROGRESS
    ends_at: float | None = None  # when the batch will be ``ended``
    ended_at: float | None = None
    cancel_initiated_at: float | None = None
    results: bytes | None = None

    def is_final(self) -> bool:
        return is_terminal(self.status)

    def move(self, target: AnthropicStatus) -> None:
        self.status = transition(self.status, target)

    def to_dict(self, base_url: str) -> dict[str, Any]:
        ended = self.status is S.ENDED
        counts = {
            "processing": 0 if ended else self.total,
            "succeeded": self.succeeded if ended else 0,
            "errored": self.errored if ended else 0,
            "canceled": self.cancelled if ended else 0,
            "expired": self.expired if ended else 0,
        }
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status.value,
            "request_counts": counts,
            "ended_at": ids.rfc3339(self.ended_at) if self.ended_at is not None else None,
            "created_at": ids.rfc3339(self.created),
            "expires_at": ids.rfc3339(self.created + WINDOW_S),
            "archived_at": None,
            "cancel_initiated_at": (
                ids.rfc3339(self.cancel_initiated_at) if self.cancel_initiated_at is not None else None
            ),
            "results_url": (f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None),
        }


def _invalid(message: str) -> ApiError:
    return ApiError(400, message)


def check_requests(body: dict[str, Any], max_requests: int) -> list[BatchItem]:
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
    requests: list[BatchItem] = []
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
        requests.append(BatchItem(custom_id, params))
    return requests


def _not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"No batch found with id '{batch_id}'.")


class AnthropicBatchStore(BatchStoreBase[AnthropicBatch]):
    """All Anthropic message batches of one sandbox."""

    internal_error = "Internal server error"
    errors_apart = False  # one results file, in processing order

    # -- API operations ------------------------------------------------------------------

    def create(self, requests: list[BatchItem], config: SandboxConfig) -> AnthropicBatch:
        now = time.time()
        batch = AnthropicBatch(id=ids.anthropic_batch_id(), config=config, created=now)
        batch.begin(requests, now + config.batch_validating_s)
        return self._add(batch)

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

    def queued(self) -> int:
        """Requests of the batches not yet ended: what the processing queue holds."""
        now = time.time()
        for batch_id in list(self._active):
            self.get(batch_id, now)  # advanced to now: ended ones leave the queue
        return sum(b.total for b in self._batches.values() if not b.is_final())

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

    # -- lifecycle -------------------------------------------------------------------

    def _not_found(self, batch_id: str) -> ApiError:
        return ApiError(404, f"No batch found with id '{batch_id}'.")

    def _advance(self, batch: AnthropicBatch, now: float, budget: int) -> int:
        work = 0
        if batch.status is S.IN_PROGRESS:
            work, ended = self._process(batch, now, budget)
            if ended is not None and batch.ends_at is None:
                batch.ends_at = ended.at + batch.config.batch_finalizing_s
        if batch.ends_at is not None and now >= batch.ends_at and not is_terminal(batch.status):
            self._finish(batch, "cancelled" if batch.status is S.CANCELING else "expired")
            batch.move(S.ENDED)
            batch.ended_at = batch.ends_at
        return work

    # -- wire format -------------------------------------------------------------------

    def _success_line(self, batch: AnthropicBatch, custom_id: str, payload: dict[str, Any]) -> bytes:
        return _result_line(custom_id, {"type": "succeeded", "message": payload})

    def _error_line(self, custom_id: str, error: ApiError) -> bytes:
        return _result_line(custom_id, {"type": "errored", "error": anthropic_error_body(error, None)})

    def _unrun_line(self, custom_id: str, reason: Unrun) -> bytes:
        return _result_line(custom_id, {"type": _UNRUN[reason]})

    def _seal(self, batch: AnthropicBatch) -> None:
        batch.results = b"".join(batch.lines)


def _result_line(custom_id: str, result: dict[str, Any]) -> bytes:
    return dumps({"custom_id": custom_id, "result": result}) + b"\n"
