"""Faithful JSON round-trips for item inputs and outputs.

Inputs must come back exactly as given (a resumed item must build the same model requests,
or its calls would not replay from the store); outputs should come back as the same kind
of object: strings and dicts as they are, LangChain messages and documents through
``langchain_core.load``, Pydantic models by class path.

Data is data: a plain dict that happens to use one of the tag keys is stored escaped and
comes back as the same plain dict, so an input row can never make this module revive an
object or import code, and both modes see the same row. A Pydantic class is revived only
from a module already imported (the user's own code), never imported on a row's word.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from typing import Any

from langchain_core.load import dumpd, load
from langchain_core.load.serializable import Serializable
from pydantic import BaseModel

from batchain import _json
from batchain.errors import Unserializable

__all__ = ["Unserializable", "dumps", "loads", "to_jsonable"]

_LC = "__lc__"
_PYD = "__pydantic__"
#: wraps a plain dict whose keys include a tag, so it is not taken for a tagged object
_ESC = "__batchain_dict__"
_TAGS = frozenset({_LC, _PYD, _ESC})


def to_jsonable(obj: Any) -> Any:
    """Turn ``obj`` into plain JSON data, tagging objects that need reviving."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, dict):
        plain = {str(k): to_jsonable(v) for k, v in obj.items()}
        return {_ESC: plain} if _TAGS.intersection(plain) else plain
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Serializable):
        return {_LC: dumpd(obj)}
    if isinstance(obj, BaseModel):
        cls = type(obj)
        return {_PYD: f"{cls.__module__}:{cls.__qualname__}", "data": obj.model_dump(mode="json")}
    raise Unserializable(f"cannot store a value of type {type(obj).__name__}: {obj!r:.80}")


def _revive(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_revive(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _ESC in obj and len(obj) == 1 and isinstance(obj[_ESC], dict):
        return {k: _revive(v) for k, v in obj[_ESC].items()}
    if _LC in obj and len(obj) == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # `load` is marked beta
            return load(obj[_LC], allowed_objects="core")
    if _PYD in obj and len(obj) == 2 and "data" in obj:
        return _load_pydantic(obj[_PYD], obj["data"])
    return {k: _revive(v) for k, v in obj.items()}


def _load_pydantic(path: str, data: Any) -> Any:
    module, _, qualname = path.partition(":")
    target: Any = sys.modules.get(module)
    if target is None:  # never import a module because stored data names it
        return data
    try:
        for part in qualname.split("."):
            target = getattr(target, part)
        if not (isinstance(target, type) and issubclass(target, BaseModel)):
            return data
        return target.model_validate(data)
    except Exception:  # class not importable here (e.g. defined in __main__): keep the data
        return data


def dumps(obj: Any) -> str:
    if type(obj) is str:  # most outputs: the same JSON string, written many times faster
        return _json.dumps(obj)
    if type(obj) is dict and _flat(obj):  # most inputs: already plain JSON, no float in it
        return _json.dumps(obj)
    plain = to_jsonable(obj)
    text = _json.dumps(plain)
    if "null" in text:  # maybe a NaN or an infinity, which the fast encoder writes as null
        return json.dumps(plain, ensure_ascii=False, separators=(",", ":"))
    return text


def _flat(obj: dict[Any, Any]) -> bool:
    """A dict :func:`to_jsonable` would give back as it is, with nothing the fast encoder
    writes differently (floats: NaN): string keys (no tag) to strings, integers, booleans
    or None."""
    for k, v in obj.items():
        if type(k) is not str or k in _TAGS or not (v is None or type(v) in _SCALARS):
            return False
    return True


#: value types a flat dict holds (exact types: a subclass may serialize otherwise)
_SCALARS = frozenset({str, int, bool})


def loads(text: str | None) -> Any:
    if text is None:
        return None
    if text[:1] == '"':  # a JSON string (most outputs): exact as the fast decoder reads it
        return _json.loads(text)
    value = json.loads(text) if _LONG_NUMBER.search(text) else _json.loads(text)
    if "__" not in text:  # no tag can be in it: nothing to revive (most inputs)
        return value
    return _revive(value)


#: a run of digits that may be an integer beyond 64 bits: the fast decoder would make it
#: a float, so such text goes to the standard library's, which keeps every integer exact
_LONG_NUMBER = re.compile(r"\d{16}")
