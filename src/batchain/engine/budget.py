"""A hard spending cap across realtime and batch.

Before a call goes out it reserves its worst-case cost: the request's input at a generous
2.5 bytes per token, and its output at ``max_tokens`` (16,384 when the model sets none, so
set ``max_tokens`` for a tight budget); a batch call marked for the prompt cache at the
price of writing all of that input to the cache. A provider batch is submitted only if the sum of
its calls' worst cases fits what is left. When a call is answered its reservation is
replaced by its real cost. Reservations that do not fit wait for outstanding ones to
settle; when nothing is outstanding and the next call still does not fit, the budget is
exhausted: the job pauses, nothing is lost, and it resumes with a higher budget.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from batchain.cost.prices import Pricing
from batchain.errors import BudgetExhausted, UnpricedModel
from batchain.providers.base import CallRequest
from batchain.store.records import Usage

__all__ = ["Budget", "BudgetExhausted", "UnpricedModel", "worst_case_usage"]

BYTES_PER_TOKEN = 2.5
DEFAULT_MAX_OUTPUT = 16_384


def worst_case_usage(request: CallRequest) -> Usage:
    body = request.body_bytes or request.est_tokens * 4
    return Usage(
        input_tokens=int(body / BYTES_PER_TOKEN) + 1,
        output_tokens=request.max_output or DEFAULT_MAX_OUTPUT,
        requests=1,
    )


class Budget:
    def __init__(self, limit: Decimal, spent: Decimal, pricebook: Pricing) -> None:
        self.limit = limit
        self.spent = spent
        self.reserved = Decimal(0)
        self.pricebook = pricebook
        self._settled = asyncio.Event()

    @property
    def remaining(self) -> Decimal:
        return self.limit - self.spent - self.reserved

    def price(self, provider: str, model: str, usage: Usage, tier: str, cache_write_1h: int = 0) -> Decimal:
        cost = self.pricebook.cost_of(provider, model, usage, tier, cache_write_1h_tokens=cache_write_1h)
        if not cost.known or cost.total is None:
            raise UnpricedModel(
                f"cannot enforce the budget: no price is known for {provider} model {model!r}; "
                "add one with a price override"
            )
        return Decimal(cost.total)

    def worst_case(self, request: CallRequest, tier: str, cache_write: bool = False) -> Decimal:
        """``cache_write``: the request is marked for the provider's prompt cache, so its
        input may all be written to it, at the 1-hour write price (Anthropic: 2x input)."""
        usage = worst_case_usage(request)
        if not cache_write:
            return self.price(request.provider, request.model, usage, tier)
        usage.cache_creation_tokens = usage.input_tokens
        return self.price(request.provider, request.model, usage, tier, usage.input_tokens)

    def fits(self, amount: Decimal) -> bool:
        return self.spent + self.reserved + amount <= self.limit

    async def reserve(self, amount: Decimal) -> None:
        """Reserve ``amount``, waiting for outstanding reservations to settle if needed."""
        while not self.fits(amount):
            if self.reserved == 0:
                raise BudgetExhausted(self.describe())
            self._settled.clear()
            await self._settled.wait()
        self.reserved += amount

    def settle(self, reserved: Decimal, actual: Decimal) -> None:
        self.reserved -= reserved
        self.spent += actual
        self._settled.set()

    def describe(self) -> str:
        return (
            f"budget exhausted: spent ${self.spent:.6f} of ${self.limit:.6f}; "
            "resume with a higher budget to continue"
        )
