"""JSON for the hot paths of batch files: orjson when it can, the standard library when not.

orjson is already installed with langchain-core (through langsmith) on CPython; it parses a
result line about twice as fast and writes one many times faster. Nothing here is used for
call keys: their canonical JSON stays the standard library's, byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumpb", "dumps", "loads"]

orjson: Any
try:
    import orjson
except ImportError:  # e.g. PyPy
    orjson = None


def loads(text: str | bytes) -> Any:
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # e.g. NaN, which the standard library accepts: let it decide
    return json.loads(text)


def dumpb(obj: Any) -> bytes:
    """:func:`dumps` as UTF-8 bytes (what goes in a batch file, without a round trip
    through ``str``)."""
    if orjson is not None:
        try:
            encoded: bytes = orjson.dumps(obj)
            return encoded
        except TypeError:
            pass
    return dumps(obj).encode()


def dumps(obj: Any) -> str:
    """Compact JSON text, non-ASCII kept as is (NaN and infinities, which JSON does not
    have, become null)."""
    if orjson is not None:
        try:
            encoded: bytes = orjson.dumps(obj)
            return encoded.decode()
        except TypeError:  # an integer beyond 64 bits, a non-string key...
            pass
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
