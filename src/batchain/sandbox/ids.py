"""Identifier and timestamp helpers shaped like each provider's.

Ids are random (not seeded): two sandboxes, or one restarted, never hand out the
same batch or file id, which matters to clients that persist provider ids.
"""

from __future__ import annotations

import datetime as dt
import os
import random

__all__ = [
    "anthropic_batch_id",
    "anthropic_message_id",
    "anthropic_request_id",
    "anthropic_tool_id",
    "base36",
    "base62",
    "gemini_batch_name",
    "gemini_file_id",
    "gemini_response_id",
    "openai_batch_id",
    "openai_batch_request_id",
    "openai_chat_id",
    "openai_file_id",
    "openai_request_id",
    "openai_tool_call_id",
    "rfc3339",
]

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Not cryptographic: ids only need to be unique, and this is ~10x faster than secrets.
_rng = random.Random(os.urandom(16))


# byte -> base62 character (a slight modulo bias is irrelevant for ids)
_TABLE = bytes(ord(_ALPHABET[b % 62]) for b in range(256))


def base62(length: int) -> str:
    raw = _rng.getrandbits(8 * length).to_bytes(length, "big")
    return raw.translate(_TABLE).decode("ascii")


_LOWER = "0123456789abcdefghijklmnopqrstuvwxyz"
_LOWER_TABLE = bytes(ord(_LOWER[b % 36]) for b in range(256))


def base36(length: int) -> str:
    """Lowercase letters and digits: the only ids the google-genai SDK parses back out of
    a file URI (``t_file_name`` matches ``[a-z0-9]+``)."""
    raw = _rng.getrandbits(8 * length).to_bytes(length, "big")
    return raw.translate(_LOWER_TABLE).decode("ascii")


def openai_file_id() -> str:
    return "file-" + base62(22)


def openai_batch_id() -> str:
    return f"batch_{_rng.getrandbits(128):032x}"


def openai_batch_request_id() -> str:
    return "batch_req_" + base62(24)


def openai_chat_id() -> str:
    return "chatcmpl-" + base62(29)


def openai_request_id() -> str:
    return "req_" + base62(32)


def openai_tool_call_id() -> str:
    return "call_" + base62(24)


def anthropic_batch_id() -> str:
    return "msgbatch_01" + base62(22)


def anthropic_message_id() -> str:
    return "msg_01" + base62(22)


def anthropic_request_id() -> str:
    return "req_011C" + base62(20)


def anthropic_tool_id() -> str:
    return "toolu_01" + base62(22)


def gemini_batch_name() -> str:
    return "batches/" + base36(24)


def gemini_file_id() -> str:
    return base36(12)


def gemini_response_id() -> str:
    return base62(22)


def rfc3339(timestamp: float) -> str:
    """``2024-08-20T18:37:24.100435Z`` (Anthropic's timestamp style)."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
