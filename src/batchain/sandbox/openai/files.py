"""OpenAI Files: records, storage and listing (sans-I/O)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from batchain.sandbox import ids
from batchain.sandbox.errors import ApiError

__all__ = ["FileRecord", "FileStore", "not_found"]

THIRTY_DAYS = 30 * 24 * 3600


@dataclass(slots=True)
class FileRecord:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    expires_at: int | None
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.expires_at,
            "status_details": None,
        }


def not_found(kind: str, object_id: str, param: str = "id") -> ApiError:
    return ApiError(404, f"No such {kind} object: {object_id}", param=param)


class FileStore:
    def __init__(self) -> None:
        self._files: dict[str, FileRecord] = {}
        self._seq = itertools.count()

    def clear(self) -> None:
        self._files.clear()

    def add(self, filename: str, purpose: str, data: bytes, expires_after: int | None) -> FileRecord:
        now = int(time.time())
        if expires_after is None and purpose == "batch":
            expires_after = THIRTY_DAYS
        if expires_after is None and purpose == "batch_output":
            expires_after = THIRTY_DAYS
        record = FileRecord(
            ids.openai_file_id(),
            filename,
            purpose,
            data,
            now,
            now + expires_after if expires_after is not None else None,
            next(self._seq),
        )
        self._files[record.id] = record
        return record

    def get(self, file_id: str) -> FileRecord:
        record = self._files.get(file_id)
        if record is None:
            raise not_found("File", file_id)
        return record

    def get_or_none(self, file_id: str) -> FileRecord | None:
        return self._files.get(file_id)

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        del self._files[file_id]

    def list(
        self, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[FileRecord], bool]:
        records = sorted(
            (r for r in self._files.values() if purpose is None or r.purpose == purpose),
            key=lambda r: (r.created_at, r.seq),
            reverse=order == "desc",
        )
        if after is not None:
            position = next((i for i, r in enumerate(records) if r.id == after), None)
            records = records[position + 1 :] if position is not None else []
        return records[:limit], len(records) > limit
