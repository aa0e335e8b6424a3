"""Flex mode: which calls go to OpenAI's flex tier, and what the others do.

OpenAI Flex processing (``service_tier="flex"``) answers a synchronous request at Batch
API rates, more slowly, and sometimes refuses it for lack of capacity (429 "Resource
Unavailable", not billed). In flex mode every realtime call of an OpenAI model that offers
flex is sent with ``service_tier="flex"`` added to its body at send time: the model is
asked exactly the same thing, and the call keeps its key (``service_tier`` is not part of
it, see :func:`batchain.providers.base.clean_body_json`), so an answer paid at flex and
one paid at the standard tier are the same cached call.

Which models offer flex is decided in one place, :func:`offers_flex`: an OpenAI model the
price catalog (or the job's ``prices``) has a flex price for, or, when the job names them,
one of its ``flex_models`` (names or ``fnmatch`` patterns). A call that cannot go at flex
(another provider, a model without flex) goes by ``flex_fallback`` at once: ``standard``
sends it at the standard tier, ``fail`` fails it with :class:`~batchain.errors.FlexUnavailable`.
A flex call that flex keeps refusing backs off on its own (never slowing its lane, see
:class:`~batchain.engine.scheduler.Scheduler`) for ``flex_patience`` seconds, then goes by
``flex_fallback`` too, and so does one OpenAI refuses with a 400 naming
``service_tier`` (a model listed with a flex price that does not offer it). A body that
already names a ``service_tier`` (the model's own setting) is sent as it is.

:meth:`FlexPolicy.route` is the one decision "does this call go flex?"; the call manager
asks it per call and item (:meth:`batchain.engine.calls.CallManager.flex_route`), so auto
mode can route single items to flex.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from batchain.cost.prices import PriceBook
from batchain.options import FlexFallback, Mode, RunOptions
from batchain.priority import Route, auto_routes
from batchain.providers.base import CallRequest

__all__ = ["FlexPolicy", "FlexRoute", "flex_body", "offers_flex"]

#: the request parameter that asks OpenAI for a service tier, and flex's value of it
SERVICE_TIER = "service_tier"
FLEX = "flex"


class FlexRoute(Enum):
    """How one call is sent."""

    #: with ``service_tier="flex"`` added to its body
    FLEX = "flex"
    #: as it was built (standard tier, or the tier its body names)
    STANDARD = "standard"
    #: not at all: flex mode with ``flex_fallback="fail"`` and no flex for this call
    REFUSE = "refuse"


def offers_flex(provider: str, model: str, pricebook: PriceBook, models: Sequence[str] | None = None) -> bool:
    """Does ``provider``'s ``model`` offer OpenAI flex processing? With ``models`` (the
    job's ``flex_models``): is it one of them; else does the price catalog (or an
    override's ``flex`` section) list a flex price for it."""
    if provider != "openai":
        return False
    if models is not None:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in models)
    return pricebook.lists_price(provider, model, FLEX)


def flex_body(request: CallRequest) -> CallRequest:
    """The request to send at flex: its body with ``service_tier="flex"``, everything else
    (key, hash, lane) unchanged."""
    return CallRequest(
        provider=request.provider,
        endpoint=request.endpoint,
        model=request.model,
        body={**request.body, SERVICE_TIER: FLEX},
        lane=request.lane,
        key=request.key,
        est_tokens=request.est_tokens,
        headers=request.headers,
        body_bytes=request.body_bytes,
        max_output=request.max_output,
        body_hash=request.body_hash,
        context=request.context,
        identity=request.identity,
    )


@dataclass(slots=True)
class FlexPolicy:
    """A flex-mode job's rules for its calls (built from its options: :meth:`of`)."""

    #: the timeout of one flex request (seconds)
    timeout: float
    #: seconds a call retries while flex refuses it, before the fallback
    patience: float
    fallback: FlexFallback
    #: does (provider, model) offer flex
    offers: Callable[[str, str], bool]
    _known: dict[tuple[str, str], bool] = field(default_factory=dict)

    @classmethod
    def of(cls, options: RunOptions, pricebook: PriceBook) -> FlexPolicy | None:
        """The policy of a job run with ``options``: flex mode's, or auto mode's when a
        priority level routes to flex (:func:`batchain.priority.auto_routes`); else None."""
        if options.mode == Mode.AUTO:
            if Route.FLEX not in auto_routes(options.auto_routes).values():
                return None
        elif options.mode != Mode.FLEX:
            return None
        models = options.flex_models
        return cls(
            timeout=options.flex_timeout,
            patience=options.flex_patience,
            fallback=FlexFallback(options.flex_fallback),
            offers=lambda provider, model: offers_flex(provider, model, pricebook, models),
        )

    def route(self, request: CallRequest) -> FlexRoute:
        """How ``request`` is sent: at flex where its model offers it, else by the fallback."""
        if SERVICE_TIER in request.body:
            return FlexRoute.STANDARD  # the model's own setting: sent as it is
        if self.flex_capable(request.provider, request.model):
            return FlexRoute.FLEX
        return self.fallback_route()

    def fallback_route(self) -> FlexRoute:
        """Where a call goes that cannot (or can no longer) go at flex, when it is sent now
        (``batch``: a call that reaches this was refused at flex, or has no Batch API)."""
        return FlexRoute.REFUSE if self.fallback is FlexFallback.FAIL else FlexRoute.STANDARD

    def flex_capable(self, provider: str, model: str) -> bool:
        key = (provider, model)
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = self.offers(provider, model)
        return known
