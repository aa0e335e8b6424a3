"""batchain: run LangChain chains over large datasets, realtime or through provider Batch APIs.

>>> import batchain
>>> job = batchain.run(chain, inputs)          # doctest: +SKIP
>>> job.outputs()                              # doctest: +SKIP
"""

from __future__ import annotations

from batchain.api import aas_completed, arun, as_completed, asubmit, run, submit
from batchain.estimate import Estimate, aestimate, estimate
from batchain.job import ItemResult, Job
from batchain.states import CallStatus, ItemStatus, JobStatus
from batchain.store import SQLiteStore, Usage, default_store_path

__version__ = "0.1.0"

__all__ = [
    "CallStatus",
    "Estimate",
    "ItemResult",
    "ItemStatus",
    "Job",
    "JobStatus",
    "SQLiteStore",
    "Usage",
    "__version__",
    "aas_completed",
    "aestimate",
    "arun",
    "as_completed",
    "asubmit",
    "default_store_path",
    "estimate",
    "run",
    "submit",
]
