"""Gemini Batch Mode on the wire: creation input, the batch Operation, results.

The store, processing and ending of batches are the neutral
:mod:`batchain.sandbox.batches`; this module adds Gemini's state machine, its two
input forms and its two output forms:

* input: inline ``requests`` (each a ``GenerateContentRequest`` with optional
  ``metadata``), or an uploaded JSONL file whose lines are ``{"key", "request"}``;
* output, once the batch is done: inline responses in ``metadata.output.inlinedResponses``
  (each ``response`` or ``error``, with the request's ``metadata``), or for file input a
  generated JSONL ``responsesFile`` of ``{"key", "response" | "error"}`` lines.

Results keep input order (Google documents it for both forms), so ``shuffle_results``
does not apply.  An item's ledger ``custom_id`` is its key (``metadata.key`` inline),
or its position when it has none.  The batch is ``PENDING`` for
``batch_validating_s``, ``RUNNING`` while items are processed and for
``batch_finalizing_s`` after, then ``SUCCEEDED`` (``EXPIRED`` after
``batch_expire_after_fraction``).  Cancelling stops processing at once; the batch becomes
``CANCELLED`` after ``cancel_delay_s``.  Never-run items (cancelled, expired) come back
as errors, so a partial batch still maps every request.  A file that is not valid
JSONL, or ``batch_fail_validation``, makes the batch ``FAILED`` with no output.
Per-item errors are ``google.rpc.Status`` objects with gRPC codes.

An ``asyncBatchEmbedContent`` batch has the same input and output forms, its items
``EmbedContentRequest`` s answered ``{"embedding": ...}`` (google-genai renames its
``inlinedResponses`` to embedding responses by that key).
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchain.sandbox import ids
from batchain.sandbox.batches import Batch, BatchItem, BatchStoreBase, Unrun
from batchain.sandbox.calls import ProviderSpec, dumps
from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.errors import ApiError, grpc_code
from batchain.sandbox.gemini.files import FileStore
from batchain.sandbox.gemini.schema import field as proto_field
from batchain.sandbox.lifecycle import GeminiState, is_terminal, transition

if TYPE_CHECKING:
    from batchain.sandbox.state import SandboxState

__all__ = ["Create", "GeminiBatch", "GeminiBatchStore", "Input", "file_input", "inline_input", "read_create"]

S = GeminiState
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."
_UNRUN: dict[Unrun, dict[str, Any]] = {
    "expired": {"code": 4, "message": "The batch expired before this request was processed."},
    "cancelled": {"code": 1, "message": "The batch was cancelled before this request was processed."},
}


@dataclass(slots=True)
class Input:
    """A batch's requests, and per request what its result echoes (metadata, or key)."""

    items: list[BatchItem]
    echoes: list[Any]


def _missing(path: str) -> ApiError:
    name = path.rsplit(".", 1)[-1]
    return ApiError(400, f"* BatchGenerateContentRequest.{path}: {name} is not specified\n")


def _item_key(echo: Any, index: int) -> str:
    """The ledger's ``custom_id``: the request's key, else its position."""
    key = echo.get("key") if isinstance(echo, dict) else echo
    return str(key) if key is not None else str(index)


def inline_input(raw: Any, model: str) -> Input:
    """``inputConfig.requests.requests``: checked for shape here, contents at processing."""
    if not isinstance(raw, list) or not raw:
        raise _missing("batch.input_config.requests")
    items: list[BatchItem] = []
    echoes: list[Any] = []
    for index, entry in enumerate(raw):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            raise _missing(f"batch.input_config.requests.requests[{index}].request")
        metadata = entry.get("metadata")
        items.append(BatchItem(_item_key(metadata, index), {**request, "model": model}))
        echoes.append(metadata)
    return Input(items, echoes)


def file_input(data: bytes, model: str) -> Input:
    """The JSONL input file; raises ValueError (the batch fails) on a malformed line."""
    items: list[BatchItem] = []
    echoes: list[Any] = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise ValueError(f"Invalid JSON on line {number} of the input file.") from None
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            raise ValueError(f"Line {number} of the input file has no 'request' object.")
        key = entry.get("key")
        items.append(BatchItem(_item_key(key, len(items)), {**request, "model": model}))
        echoes.append(key)
    if not items:
        raise ValueError("The input file contains no requests.")
    return Input(items, echoes)


@dataclass(slots=True)
class Create:
    """A ``batchGenerateContent`` body read: its requests, or why the batch will fail."""

    display_name: str | None
    source: Input | str
    input_file: str | None = None


def read_create(body: dict[str, Any], model: str, files: FileStore) -> Create:
    """Create-time checks; an input file that is not valid JSONL fails the batch later."""
    batch = body.get("batch")
    if not isinstance(batch, dict):
        raise _missing("batch")
    config = proto_field(batch, "inputConfig")
    if not isinstance(config, dict):
        raise _missing("batch.input_config")
    file_name = proto_field(config, "fileName")
    inline = config.get("requests")
    if (file_name is None) == (inline is None):
        raise ApiError(400, "Exactly one of input_config.requests or input_config.file_name must be set.")
    display = proto_field(batch, "displayName")
    display_name = display if isinstance(display, str) else None
    if inline is not None:
        requests = inline.get("requests") if isinstance(inline, dict) else None
        return Create(display_name, inline_input(requests, model))
    record = files.get(str(file_name))
    try:
        return Create(display_name, file_input(record.data, model), record.name)
    except ValueError as exc:
        return Create(display_name, str(exc), record.name)


@dataclass(slots=True, kw_only=True)
class GeminiBatch(Batch):
    model: str  # models/<id>
    display_name: str | None = None
    input_file: str | None = None  # files/<id> for file input; None for inline requests
    state: GeminiState = GeminiState.PENDING
    ending: GeminiState | None = None  # the state entered at ``ends_at``
    ends_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    failure: dict[str, Any] | None = None  # the Operation's error, for FAILED
    echoes: dict[str, deque[Any]] = field(default_factory=dict)  # custom_id -> echoes, in order
    output: dict[str, Any] | None = None
    #: an ``asyncBatchEmbedContent`` batch: its items are EmbedContentRequests
    embeddings: bool = False

    def is_final(self) -> bool:
        return is_terminal(self.state)

    def move(self, target: GeminiState) -> None:
        self.state = transition(self.state, target)

    def _stats(self) -> dict[str, str]:
        failed = self.total if self.state is S.FAILED else self.errored + self.expired + self.cancelled
        counts = {
            "requestCount": self.total,
            "successfulRequestCount": self.succeeded,
            "failedRequestCount": failed,
            "pendingRequestCount": self.total - self.succeeded - failed,
        }
        return {name: str(count) for name, count in counts.items() if count or name == "requestCount"}

    def to_operation(self) -> dict[str, Any]:
        """The long-running Operation that create, get and list return."""
        updated = self.ended_at or self.started_at or self.created
        kind = "EmbedContentBatch" if self.embeddings else "GenerateContentBatch"
        metadata: dict[str, Any] = {"@type": _TYPE + kind, "model": self.model}
        if self.display_name is not None:
            metadata["displayName"] = self.display_name
        if self.input_file is not None:
            metadata["inputConfig"] = {"fileName": self.input_file}
        metadata |= {"createTime": ids.rfc3339(self.created), "updateTime": ids.rfc3339(updated)}
        if self.ended_at is not None:
            metadata["endTime"] = ids.rfc3339(self.ended_at)
        metadata |= {"batchStats": self._stats(), "state": self.state.value, "name": self.id}
        if self.output is not None:
            metadata["output"] = self.output
        operation: dict[str, Any] = {"name": self.id, "metadata": metadata}
        if self.is_final():
            operation["done"] = True
            if self.failure is not None:
                operation["error"] = self.failure
            elif self.output is not None:
                operation["response"] = {"@type": _TYPE + kind + "Output", **self.output}
        return operation


class GeminiBatchStore(BatchStoreBase[GeminiBatch]):
    """All Gemini batches of one sandbox (and the files they read and write)."""

    internal_error = "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
    errors_apart = False  # one result list, in input order
    ordered_results = True

    def __init__(
        self, state: SandboxState, spec: ProviderSpec, files: FileStore, embeddings: ProviderSpec
    ) -> None:
        super().__init__(state, spec)
        self._files = files
        self._embeddings = embeddings

    def spec_for(self, batch: GeminiBatch) -> ProviderSpec:
        return self._embeddings if batch.embeddings else self._spec

    def clear(self) -> None:
        super().clear()
        self._files.clear()

    # -- API operations ------------------------------------------------------------------

    def create(
        self,
        model: str,
        display_name: str | None,
        source: Input | str,
        config: SandboxConfig,
        input_file: str | None = None,
        *,
        embeddings: bool = False,
    ) -> GeminiBatch:
        """A new batch of ``source`` (or failing with ``source`` as the reason); an
        ``embeddings`` batch's items are embedded, not generated."""
        now = time.time()
        batch = GeminiBatch(
            id=ids.gemini_batch_name(),
            config=config,
            created=now,
            model=model,
            display_name=display_name,
            input_file=input_file,
            embeddings=embeddings,
        )
        if isinstance(source, Input):
            for item, echo in zip(source.items, source.echoes, strict=True):
                batch.echoes.setdefault(item.custom_id, deque()).append(echo)
            batch.begin(source.items, now + config.batch_validating_s)
        if config.batch_fail_validation and not isinstance(source, str):
            source = "The batch failed validation (sandbox knob batch_fail_validation)."
        if isinstance(source, str):
            batch.failure = {"code": 3, "message": source}
            batch.ending, batch.ends_at = S.FAILED, now + config.batch_validating_s
        return self._add(batch)

    def cancel(self, batch_id: str) -> GeminiBatch:
        batch = self.get(batch_id)
        if batch.is_final():
            raise ApiError(
                400,
                f"Batch {batch_id} is already {batch.state.value} and cannot be cancelled.",
                code="FAILED_PRECONDITION",
            )
        if batch.ending not in (S.CANCELLED, S.FAILED):
            batch.ending, batch.ends_at = S.CANCELLED, time.time() + batch.config.cancel_delay_s
            self._state.wake()
        return batch

    def delete(self, batch_id: str) -> None:
        """Google deletes the Operation without cancelling it; here it simply stops."""
        self.get(batch_id)
        self.forget([batch_id])

    # -- lifecycle -----------------------------------------------------------------------

    def _not_found(self, batch_id: str) -> ApiError:
        return ApiError(404, f"Batch {batch_id} not found.")

    def _advance(self, batch: GeminiBatch, now: float, budget: int) -> int:
        work = 0
        schedule = batch.schedule
        if batch.state is S.PENDING and batch.ending is None and schedule and now >= schedule.start:
            batch.move(S.RUNNING)
            batch.started_at = schedule.start
        if batch.state is S.RUNNING and batch.ending is None:
            work, ended = self._process(batch, now, budget)
            if ended is not None:
                batch.ending = S.EXPIRED if ended.expired else S.SUCCEEDED
                batch.ends_at = ended.at + batch.config.batch_finalizing_s
        if batch.ends_at is not None and now >= batch.ends_at and not batch.is_final():
            self._end(batch)
        return work

    def _end(self, batch: GeminiBatch) -> None:
        ending = batch.ending
        assert ending is not None
        if ending is S.FAILED:
            batch.items, batch.echoes = [], {}
        else:
            self._finish(batch, "cancelled" if ending is S.CANCELLED else "expired")
        batch.move(ending)
        batch.ended_at = batch.ends_at

    # -- wire format ---------------------------------------------------------------------

    def _success_line(self, batch: GeminiBatch, custom_id: str, payload: dict[str, Any]) -> bytes:
        del batch
        return dumps({"_id": custom_id, "response": payload})

    def _error_line(self, custom_id: str, error: ApiError) -> bytes:
        return dumps({"_id": custom_id, "error": {"code": grpc_code(error), "message": error.message}})

    def _unrun_line(self, custom_id: str, reason: Unrun) -> bytes:
        return dumps({"_id": custom_id, "error": _UNRUN[reason]})

    def _seal(self, batch: GeminiBatch) -> None:
        """Give each result its request's metadata (or key), then write the output."""
        results: list[dict[str, Any]] = []
        for line in batch.lines:
            entry = json.loads(line)
            queue = batch.echoes.get(entry.pop("_id"))
            echo = queue.popleft() if queue else None
            if batch.input_file is None:
                results.append(entry if echo is None else {**entry, "metadata": echo})
            else:
                results.append(entry if echo is None else {"key": echo, **entry})
        batch.echoes = {}
        if batch.input_file is None:
            batch.output = {"inlinedResponses": {"inlinedResponses": results}}
            return
        suffix = batch.id.removeprefix("batches/")
        data = b"".join(dumps(result) + b"\n" for result in results)
        record = self._files.add_generated(f"batch-{suffix}", data, f"Batch {batch.id} responses")
        batch.output = {"responsesFile": record.name}
