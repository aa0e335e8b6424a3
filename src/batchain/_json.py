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
    fast = _fast(obj)
    return fast if fast is not None else _standard(obj).encode()


def dumps(obj: Any) -> str:
    """Compact JSON text, non-ASCII kept as is (NaN and infinities, which JSON does not
    have, become null)."""
    fast = _fast(obj)
    return fast.decode() if fast is not None else _standard(obj)


def _fast(obj: Any) -> bytes | None:
    """``obj`` encoded by orjson; None where it cannot (an integer beyond 64 bits, a
    non-string key...) or is not installed."""
    if orjson is None:
        return None
    try:
        encoded: bytes = orjson.dumps(obj)
    except TypeError:
        return None
    return encoded


def _standard(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
