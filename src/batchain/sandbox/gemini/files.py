"""Gemini Files: records, resumable upload sessions, listing (sans-I/O).

google-genai uploads with Google's resumable protocol: a ``start`` request carrying the
file's metadata opens a session and gets its URL back (``x-goog-upload-url``); the
bytes follow in one or more ``upload`` requests at that URL, the last one also
``finalize``, and the file exists from then on.  A batch's responses file is created
here directly, as ``source: GENERATED``; only such files have a ``downloadUri`` and
can be downloaded (uploaded files cannot, as at Google).  A missing file answers
Google's 403, which does not reveal whether the file exists.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any

from batchain.sandbox import ids
from batchain.sandbox.errors import ApiError

__all__ = ["MAX_FILE_BYTES", "FileStore", "GeminiFile", "Upload"]

MAX_FILE_BYTES = 2 * 1024**3
_LIFETIME_S = 48 * 3600  # uploaded and generated files expire after 48 hours
_NAME_RE = re.compile(r"^[a-z0-9-]{1,40}$")


@dataclass(slots=True)
class GeminiFile:
    id: str
    mime_type: str
    data: bytes
    created: float
    generated: bool  # a batch's responses file (downloadable), not an upload
    seq: int
    display_name: str | None = None

    @property
    def name(self) -> str:
        return "files/" + self.id

    def to_dict(self, base_url: str, version: str) -> dict[str, Any]:
        digest = hashlib.sha256(self.data).hexdigest().encode()
        record: dict[str, Any] = {"name": self.name}
        if self.display_name is not None:
            record["displayName"] = self.display_name
        record |= {
            "mimeType": self.mime_type,
            "sizeBytes": str(len(self.data)),
            "createTime": ids.rfc3339(self.created),
            "updateTime": ids.rfc3339(self.created),
            "expirationTime": ids.rfc3339(self.created + _LIFETIME_S),
            "sha256Hash": base64.b64encode(digest).decode(),
            "uri": f"{base_url}/{version}/files/{self.id}",
            "state": "ACTIVE",
            "source": "GENERATED" if self.generated else "UPLOADED",
        }
        if self.generated:
            record["downloadUri"] = f"{base_url}/download/{version}/files/{self.id}:download?alt=media"
        return record


@dataclass(slots=True)
class Upload:
    """An open resumable upload: the file's metadata and the bytes received so far."""

    file_id: str
    mime_type: str
    size: int | None
    display_name: str | None
    data: bytearray = field(default_factory=bytearray)


def not_found(file_id: str) -> ApiError:
    return ApiError(
        403,
        f"You do not have permission to access the File {file_id} or it may not exist.",
        code="PERMISSION_DENIED",
    )


class FileStore:
    def __init__(self) -> None:
        self._files: dict[str, GeminiFile] = {}
        self._uploads: dict[str, Upload] = {}
        self._seq = itertools.count()

    def clear(self) -> None:
        self._files.clear()
        self._uploads.clear()

    # -- uploads -------------------------------------------------------------------------

    def start(self, name: Any, mime_type: str, size: int | None, display_name: Any) -> str:
        """Open an upload session for a file (named ``files/<name>`` if given); its id."""
        if size is not None and size > MAX_FILE_BYTES:
            raise ApiError(400, f"File size {size} exceeds the maximum of {MAX_FILE_BYTES} bytes.")
        file_id = self._new_id(name)
        upload_id = ids.base62(32)
        label = display_name if isinstance(display_name, str) else None
        self._uploads[upload_id] = Upload(file_id, mime_type, size, label)
        return upload_id

    def _new_id(self, name: Any) -> str:
        if name is None:
            return ids.gemini_file_id()
        wanted = str(name).removeprefix("files/")
        if not _NAME_RE.match(wanted):
            raise ApiError(
                400,
                f"Invalid file name '{name}': a name must be 1-40 lowercase letters, digits or dashes.",
            )
        if wanted in self._files or any(u.file_id == wanted for u in self._uploads.values()):
            raise ApiError(409, f"File files/{wanted} already exists.")
        return wanted

    def append(self, upload_id: str, offset: int, chunk: bytes, finalize: bool) -> GeminiFile | None:
        """Add ``chunk`` at ``offset``; the file once ``finalize``\\ d, else None."""
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise ApiError(404, "Failed to find the upload session (unknown or already finalized upload_id).")
        if offset != len(upload.data):
            raise ApiError(400, f"Invalid upload offset {offset}; {len(upload.data)} bytes were received.")
        upload.data += chunk
        if len(upload.data) > MAX_FILE_BYTES:
            del self._uploads[upload_id]
            raise ApiError(400, f"File exceeds the maximum of {MAX_FILE_BYTES} bytes.")
        if not finalize:
            return None
        del self._uploads[upload_id]
        if upload.size is not None and upload.size != len(upload.data):
            raise ApiError(
                400, f"Upload size mismatch: {upload.size} bytes declared, {len(upload.data)} received."
            )
        return self._store(upload.file_id, upload.mime_type, bytes(upload.data), False, upload.display_name)

    # -- records -------------------------------------------------------------------------

    def add_generated(self, file_id: str, data: bytes, display_name: str) -> GeminiFile:
        """A file the sandbox writes itself (a batch's responses), downloadable."""
        return self._store(file_id, "application/jsonl", data, True, display_name)

    def _store(
        self, file_id: str, mime_type: str, data: bytes, generated: bool, display_name: str | None
    ) -> GeminiFile:
        record = GeminiFile(file_id, mime_type, data, time.time(), generated, next(self._seq), display_name)
        self._files[file_id] = record
        return record

    def get(self, file_id: str) -> GeminiFile:
        record = self._files.get(file_id.removeprefix("files/"))
        if record is None:
            raise not_found(file_id.removeprefix("files/"))
        return record

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        del self._files[file_id.removeprefix("files/")]

    def list(self, page_token: str | None, page_size: int) -> tuple[list[GeminiFile], str | None]:
        """A page of files, newest first, after the file named by ``page_token``."""
        newest_first = sorted(self._files.values(), key=lambda f: f.seq, reverse=True)
        if page_token:
            position = next((i for i, f in enumerate(newest_first) if f.id == page_token), None)
            if position is None:
                raise ApiError(400, "Invalid page token.")
            newest_first = newest_first[position + 1 :]
        page = newest_first[:page_size]
        more = len(newest_first) > page_size
        return page, (page[-1].id if more and page else None)
