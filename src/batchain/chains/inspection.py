"""Find the chat models inside a chain before running it.

Batch mode refuses, before anything is submitted, a chain that holds a model with no
Batch API adapter (it would otherwise run at full price). Models are found by walking the
chain's object graph: Runnable fields, bindings, branches, fallbacks, LangGraph nodes, and
the closures and globals a lambda refers to. A model created inside a lambda at call time
cannot be seen here; the call hook catches it at its first call instead.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel

from batchain.providers import adapter_for
from batchain.providers.endpoints import batch_support, model_name

if TYPE_CHECKING:
    from batchain.cost.prices import PriceBook

__all__ = ["check_batchable", "check_priced", "find_models"]

_MAX_DEPTH = 12
_SKIP = (str, bytes, int, float, bool, type(None), type, types.ModuleType)


def find_models(root: Any) -> Iterator[BaseChatModel]:
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, _SKIP) or id(obj) in seen or depth > _MAX_DEPTH:
            continue
        seen.add(id(obj))
        if isinstance(obj, BaseChatModel):
            yield obj
            continue
        stack.extend((child, depth + 1) for child in _children(obj))


def _children(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, list | tuple | set | frozenset):
        return list(obj)
    if isinstance(obj, types.FunctionType | types.MethodType):
        return _function_refs(obj)
    out: list[Any] = []
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        out.extend(d.values())
    for name in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, name):
            out.append(getattr(obj, name))
    return out


def _function_refs(fn: Any) -> list[Any]:
    func = getattr(fn, "__func__", fn)
    refs: list[Any] = [getattr(fn, "__self__", None)]
    for cell in func.__closure__ or ():
        with contextlib.suppress(ValueError):  # an empty cell
            refs.append(cell.cell_contents)
    globs = func.__globals__
    refs.extend(globs[n] for n in func.__code__.co_names if n in globs)
    return refs


def check_batchable(
    chain: Any, endpoint_modes: Mapping[str, str] | None = None, *, batch_only: bool = False
) -> None:
    """Raise before submitting anything if a model in the chain cannot use a Batch API:
    batchain has no adapter for it, or it uses an API the Batch API does not take; and,
    with ``batch_only``, its endpoint has no Batch API (see
    :mod:`batchain.providers.endpoints`). A model the user chose to run realtime
    (``endpoint_modes``) passes."""
    from batchain.errors import BatchUnsupportedError

    for model in find_models(chain):
        adapter = adapter_for(model)
        if adapter is None:
            raise BatchUnsupportedError(model)
        support = batch_support(adapter, model, endpoint_modes)
        if support.refused(batch_only=batch_only):
            raise BatchUnsupportedError(model, support.why, support.base_url)


def check_priced(chain: Any, book: PriceBook) -> None:
    """Warn, before a job runs, about each model of ``chain`` the price catalog does not
    know (often a typo of a model name: the warning names the nearest known ones)."""
    for model in find_models(chain):
        adapter = adapter_for(model)
        name = model_name(model)
        if adapter is not None and name:
            book.check_known(adapter.name, name)
