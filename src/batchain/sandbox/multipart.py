"""A small ``multipart/form-data`` parser (the sandbox has no python-multipart).

Enough for what the OpenAI SDK sends to ``POST /v1/files``: text fields (with
bracket-flattened names such as ``expires_after[anchor]``) and one file part.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MultipartError", "Part", "boundary_of", "parse_multipart"]


class MultipartError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def boundary_of(content_type: str) -> bytes:
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "multipart/form-data":
        raise MultipartError("expected multipart/form-data")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    raise MultipartError("missing multipart boundary")


def _disposition(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in value.split(";")[1:]:
        key, _, raw = item.strip().partition("=")
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"'):
            raw = raw[1:-1].replace('\\"', '"')
        params[key.lower()] = raw
    return params


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    delimiter = b"--" + boundary_of(content_type)
    segments = body.split(delimiter)
    if len(segments) < 3:
        raise MultipartError("malformed multipart body")
    parts: list[Part] = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            break  # closing delimiter
        segment = segment.removeprefix(b"\r\n")
        head, sep, data = segment.partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("multipart part without headers")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        params = _disposition(headers.get("content-disposition", ""))
        if "name" not in params:
            raise MultipartError("multipart part without a name")
        parts.append(
            Part(
                params["name"],
                params.get("filename"),
                headers.get("content-type"),
                data.removesuffix(b"\r\n"),
            )
        )
    return parts
