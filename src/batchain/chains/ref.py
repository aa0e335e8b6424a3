"""Chain references: ``package.module:attr`` or ``path/to/file.py:attr``.

A job records the reference of its chain (never pickled code), so later commands and
other processes can load the same chain again.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.runnables import Runnable, RunnableLambda

from batchain.errors import ChainRefError

__all__ = ["ChainRefError", "load_ref", "resolve_chain"]


def load_ref(ref: str) -> Any:
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise ChainRefError(f"chain reference {ref!r} must look like 'module:attr' or 'file.py:attr'")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ChainRefError(f"chain file not found: {path}")
        name = f"batchain_chain_{abs(hash(str(path)))}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ChainRefError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            # let the chain file import its siblings
            sys.path.insert(0, str(path.parent))
            spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ChainRefError(f"cannot import module {target!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ChainRefError(f"{target} has no attribute {attr!r}") from exc
    return obj


def embedding_chain(model: Embeddings) -> Runnable[Any, Any]:
    """An embeddings model as a chain: an item that is a text becomes its vector
    (``aembed_query``), a list of texts their vectors (``aembed_documents``)."""

    async def embed(value: Any) -> Any:
        if isinstance(value, str):
            return await model.aembed_query(value)
        if isinstance(value, list) and all(isinstance(t, str) for t in value):
            return await model.aembed_documents(value)
        raise TypeError(
            f"an embeddings job takes a text or a list of texts per item, not {type(value).__name__}"
        )

    return RunnableLambda(embed, name=f"embed:{type(model).__name__}")


def resolve_chain(chain: Runnable[Any, Any] | str | Any) -> Runnable[Any, Any]:
    """A Runnable from a Runnable, a reference, a YAML chain file, an embeddings model, or a
    callable (wrapped)."""
    if isinstance(chain, str) and chain.strip().lower().endswith((".yaml", ".yml")):
        from batchain.chains.yamlchain import load_yaml_chain  # imports this module: import late

        return load_yaml_chain(chain)
    if isinstance(chain, str):
        chain = load_ref(chain)
    if isinstance(chain, Runnable):
        return chain
    if isinstance(chain, Embeddings):
        return embedding_chain(chain)
    if callable(chain):
        return RunnableLambda(chain)
    raise ChainRefError(f"expected a LangChain Runnable, got {type(chain).__name__}")
