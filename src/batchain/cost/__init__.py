"""Cost: prices from the genai-prices catalog, job cost reports, and a LangChain cost callback.

>>> from batchain.cost import PriceBook, job_cost, render_table   # doctest: +SKIP
>>> report = job_cost(job)                                         # doctest: +SKIP
>>> rich.print(render_table(report))                               # doctest: +SKIP
"""

from __future__ import annotations

from batchain.cost.callback import CostTracker, ModelCost
from batchain.cost.prices import (
    ANTHROPIC_BATCH_MULTIPLIER,
    ANTHROPIC_CACHE_READ_MULTIPLIER,
    ANTHROPIC_CACHE_WRITE_1H_MULTIPLIER,
    ANTHROPIC_CACHE_WRITE_5M_MULTIPLIER,
    DEFAULT_BATCH_MULTIPLIER,
    OPENAI_BATCH_MULTIPLIER,
    OPENAI_FLEX_MULTIPLIER,
    Cost,
    PriceBook,
    PriceSheet,
    Rate,
    Rates,
    UnknownPriceWarning,
    cost_of,
    default_pricebook,
    list_price_of,
    normalize_service_tier,
)
from batchain.cost.render import render_table, to_json
from batchain.cost.report import (
    AvoidedLine,
    BatchCost,
    CostLine,
    ItemCost,
    JobCost,
    RoundCost,
    job_cost,
)

__all__ = [
    "ANTHROPIC_BATCH_MULTIPLIER",
    "ANTHROPIC_CACHE_READ_MULTIPLIER",
    "ANTHROPIC_CACHE_WRITE_1H_MULTIPLIER",
    "ANTHROPIC_CACHE_WRITE_5M_MULTIPLIER",
    "DEFAULT_BATCH_MULTIPLIER",
    "OPENAI_BATCH_MULTIPLIER",
    "OPENAI_FLEX_MULTIPLIER",
    "AvoidedLine",
    "BatchCost",
    "Cost",
    "CostLine",
    "CostTracker",
    "ItemCost",
    "JobCost",
    "ModelCost",
    "PriceBook",
    "PriceSheet",
    "Rate",
    "Rates",
    "RoundCost",
    "UnknownPriceWarning",
    "cost_of",
    "default_pricebook",
    "job_cost",
    "list_price_of",
    "normalize_service_tier",
    "render_table",
    "to_json",
]
