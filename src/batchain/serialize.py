"""Faithful JSON round-trips for item inputs and outputs.

Inputs must come back exactly as given (a resumed item must build the same model requests,
or its calls would not replay from the store); outputs should come back as the same kind
of object: strings and dicts as they are, LangChain messages and documents through
``langchain_core.load``, Pydantic models by class path.
"""

from __future__ import annotations

import importlib
import json
import warnings
from typing import Any

from langchain_core.load import dumpd, load
from langchain_core.load.serializable import Serializable
from pydantic import BaseModel

from batchain.errors import Unserializable

__all__ = ["Unserializable", "dumps", "loads", "to_jsonable"]

_LC = "__lc__"
_PYD = "__pydantic__"


def to_jsonable(obj: Any) -> Any:
    """Turn ``obj`` into plain JSON data, tagging objects that need reviving."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
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
    if _LC in obj and len(obj) == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # `load` is marked beta
            return load(obj[_LC], allowed_objects="core")
    if _PYD in obj and len(obj) == 2 and "data" in obj:
        return _load_pydantic(obj[_PYD], obj["data"])
    return {k: _revive(v) for k, v in obj.items()}


def _load_pydantic(path: str, data: Any) -> Any:
    module, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        return target.model_validate(data)
    except Exception:  # class not importable here (e.g. defined in __main__): keep the data
        return data


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), ensure_ascii=False, separators=(",", ":"))


def loads(text: str | None) -> Any:
    if text is None:
        return None
    return _revive(json.loads(text))
