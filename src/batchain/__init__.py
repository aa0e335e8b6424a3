"""batchain: run LangChain chains over large datasets, realtime or through provider Batch APIs.

>>> import batchain
>>> job = batchain.run(chain, inputs, mode="batch")   # doctest: +SKIP
>>> job.outputs()                                     # doctest: +SKIP
>>> batchain.wrap(chain, mode="batch").batch(inputs)  # doctest: +SKIP

The names below are imported on first use, so ``import batchain`` (and the command line's
``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "run": "batchain.api",
    "arun": "batchain.api",
    "submit": "batchain.api",
    "asubmit": "batchain.api",
    "as_completed": "batchain.api",
    "aas_completed": "batchain.api",
    "wrap": "batchain.wrapped",
    "WrappedChain": "batchain.wrapped",
    "work": "batchain.worker",
    "awork": "batchain.worker",
    "WorkReport": "batchain.worker",
    "estimate": "batchain.cost.estimate",
    "aestimate": "batchain.cost.estimate",
    "Estimate": "batchain.cost.estimate",
    "Job": "batchain.job",
    "ItemResult": "batchain.job",
    "JobStatus": "batchain.states",
    "ItemStatus": "batchain.states",
    "CallStatus": "batchain.states",
    "SQLiteStore": "batchain.store",
    "Usage": "batchain.store",
    "default_store_path": "batchain.store",
    "BatchCallError": "batchain.errors",
    "BatchNotFound": "batchain.errors",
    "BatchUnsupportedError": "batchain.errors",
    "BatchainError": "batchain.errors",
    "BudgetExhausted": "batchain.errors",
    "CallCancelled": "batchain.errors",
    "ChainRefError": "batchain.errors",
    "HostUnreachable": "batchain.errors",
    "IllegalTransition": "batchain.errors",
    "InputError": "batchain.errors",
    "InvalidLabel": "batchain.errors",
    "LLMCacheNotSet": "batchain.errors",
    "InvalidOption": "batchain.errors",
    "InvalidPriority": "batchain.errors",
    "ItemFailed": "batchain.errors",
    "JobBusy": "batchain.errors",
    "JobIncomplete": "batchain.errors",
    "LeaseLost": "batchain.errors",
    "MissingInputVariable": "batchain.errors",
    "OutputError": "batchain.errors",
    "SchemaMismatch": "batchain.errors",
    "StoreError": "batchain.errors",
    "StreamedCallRefused": "batchain.errors",
    "FlexUnavailable": "batchain.errors",
    "UnknownPriceWarning": "batchain.errors",
    "UnpricedModel": "batchain.errors",
    "Unserializable": "batchain.errors",
    "YamlChainError": "batchain.errors",
    "Mode": "batchain.options",
    "Priority": "batchain.priority",
    "Tier": "batchain.options",
    "register_adapter": "batchain.providers.registry",
}

__all__ = [
    "BatchCallError",
    "BatchNotFound",
    "BatchUnsupportedError",
    "BatchainError",
    "BudgetExhausted",
    "CallCancelled",
    "CallStatus",
    "ChainRefError",
    "Estimate",
    "FlexUnavailable",
    "HostUnreachable",
    "IllegalTransition",
    "InputError",
    "InvalidLabel",
    "InvalidOption",
    "InvalidPriority",
    "ItemFailed",
    "ItemResult",
    "ItemStatus",
    "Job",
    "JobBusy",
    "JobIncomplete",
    "JobStatus",
    "LLMCacheNotSet",
    "LeaseLost",
    "MissingInputVariable",
    "Mode",
    "OutputError",
    "Priority",
    "SQLiteStore",
    "SchemaMismatch",
    "StoreError",
    "StreamedCallRefused",
    "Tier",
    "UnknownPriceWarning",
    "UnpricedModel",
    "Unserializable",
    "Usage",
    "WorkReport",
    "WrappedChain",
    "YamlChainError",
    "__version__",
    "aas_completed",
    "aestimate",
    "arun",
    "as_completed",
    "asubmit",
    "awork",
    "default_store_path",
    "estimate",
    "register_adapter",
    "run",
    "submit",
    "work",
    "wrap",
]

if TYPE_CHECKING:
    from batchain.api import aas_completed, arun, as_completed, asubmit, run, submit
    from batchain.cost.estimate import Estimate, aestimate, estimate
    from batchain.errors import (
        BatchainError,
        BatchCallError,
        BatchNotFound,
        BatchUnsupportedError,
        BudgetExhausted,
        CallCancelled,
        ChainRefError,
        FlexUnavailable,
        HostUnreachable,
        IllegalTransition,
        InputError,
        InvalidLabel,
        InvalidOption,
        InvalidPriority,
        ItemFailed,
        JobBusy,
        JobIncomplete,
        LeaseLost,
        LLMCacheNotSet,
        MissingInputVariable,
        OutputError,
        SchemaMismatch,
        StoreError,
        StreamedCallRefused,
        UnknownPriceWarning,
        UnpricedModel,
        Unserializable,
        YamlChainError,
    )
    from batchain.job import ItemResult, Job
    from batchain.options import Mode, Tier
    from batchain.priority import Priority
    from batchain.providers.registry import register_adapter
    from batchain.states import CallStatus, ItemStatus, JobStatus
    from batchain.store import SQLiteStore, Usage, default_store_path
    from batchain.worker import WorkReport, awork, work
    from batchain.wrapped import WrappedChain, wrap


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'batchain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
