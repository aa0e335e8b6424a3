"""``CostTracker``: a LangChain callback that prices the model calls of your own chains.

For chains run outside batchain (batchain's own jobs are priced from the store by
:func:`batchain.cost.job_cost`). Pass one instance in ``config={"callbacks": [tracker]}``
(inheritable, reaches every model in the chain) or to a model's ``callbacks=``.

What it gets right (langchain-internals.md sections 3 and 5.3):

* every request in ``on_llm_end`` is counted: ``generations[i]`` is one request (one prompt of
  a batched ``generate``); with ``n > 1`` the request-level usage that ChatOpenAI repeats on
  each of the ``n`` choices is counted once (identical usage on every choice), distinct
  per-choice usage is summed;
* LangChain LLM-cache hits are detected by the ``usage_metadata["total_cost"] == 0`` marker
  core adds to replayed generations, and booked at zero cost (their tokens are kept apart in
  ``cache_hit_usage``); a request with no usage at all and ``llm_output is None`` is taken
  as a cache hit too (the weaker signal);
* answers inside a batchain job that no request paid for carry batchain's marker
  (``response_metadata["batchain"]["source"]``: ``cache``, ``replay``, ``shared`` or
  ``langchain_cache``, see :mod:`batchain.engine.lccache`) and are booked as cache hits too,
  so the tracker's cost is what the provider billed;
* the model name comes from ``response_metadata["model_name"]`` (or ``"model"``), else
  ``llm_output``, else what ``on_chat_model_start`` saw for the run (``invocation_params``
  ``model``/``model_name``, ``metadata["ls_model_name"]``); usage is never dropped: an unnamed
  model is booked under ``"unknown"`` with its cost unknown;
* provider from ``metadata["ls_provider"]``, ``response_metadata["model_provider"]``, or the
  model name; service tier (OpenAI ``flex``/``priority``) from the response;
* cache reads / writes from ``usage_metadata["input_token_details"]`` including the
  tier-prefixed keys ChatOpenAI uses for flex/priority (``flex_cache_read``) and Anthropic's
  ``ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``;
* thread-safe: one lock around all state (sync handlers run on executor threads in
  ``batch``/``abatch``);
* a model without a price keeps its usage, reports ``cost_by_model[model] = None`` and makes
  ``complete`` False; ``total_cost`` is the sum of the known costs.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from batchain.cost.prices import PriceBook, default_pricebook, normalize_service_tier
from batchain.engine.lccache import source_of, tier_of
from batchain.options import Tier
from batchain.store.records import Usage

__all__ = ["CostTracker", "ModelCost"]

_ZERO = Decimal(0)
UNKNOWN_MODEL = "unknown"
_OPENAI_PREFIXES = ("gpt-", "gpt4", "o1", "o3", "o4", "chatgpt", "text-", "ft:gpt", "davinci", "babbage")


@dataclass(slots=True)
class ModelCost:
    """What one model cost so far."""

    provider: str
    model: str
    requests: int = 0
    generations: int = 0
    cache_hits: int = 0
    failures: int = 0
    #: billed usage (``requests`` counts billed requests)
    usage: Usage = field(default_factory=Usage)
    #: usage replayed from the LangChain cache (not billed)
    cache_hit_usage: Usage = field(default_factory=Usage)
    #: sum of the known costs
    cost: Decimal = _ZERO
    #: False once a request could not be priced
    known: bool = True


@dataclass(slots=True)
class _Run:
    model: str | None
    provider: str | None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage_from_metadata(um: Mapping[str, Any]) -> tuple[Usage, int]:
    """batchain Usage (input includes cache tokens) and the 1-hour cache-write part."""
    din: Mapping[str, Any] = um.get("input_token_details") or {}
    dout: Mapping[str, Any] = um.get("output_token_details") or {}
    cache_read = sum(_int(v) for k, v in din.items() if k == "cache_read" or k.endswith("_cache_read"))
    generic_writes = sum(
        _int(v) for k, v in din.items() if k == "cache_creation" or k.endswith("_cache_creation")
    )
    w5m = _int(din.get("ephemeral_5m_input_tokens"))
    w1h = _int(din.get("ephemeral_1h_input_tokens"))
    writes = max(generic_writes, w5m + w1h)
    reasoning = sum(_int(v) for k, v in dout.items() if k == "reasoning" or k.endswith("_reasoning"))
    usage = Usage(
        input_tokens=_int(um.get("input_tokens")),
        output_tokens=_int(um.get("output_tokens")),
        cache_read_tokens=cache_read,
        cache_creation_tokens=writes,
        reasoning_tokens=reasoning,
        requests=1,
    )
    return usage, min(w1h, writes)


def _usage_from_llm_output(llm_output: Mapping[str, Any] | None) -> Usage | None:
    """Old-style ``llm_output["token_usage"]`` (OpenAI field names), for text LLMs."""
    tu = (llm_output or {}).get("token_usage")
    if not isinstance(tu, Mapping) or "prompt_tokens" not in tu:
        return None
    details = tu.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=_int(tu.get("prompt_tokens")),
        output_tokens=_int(tu.get("completion_tokens")),
        cache_read_tokens=_int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0,
        requests=1,
    )


def _infer_provider(model: str) -> str:
    m = model.lower()
    if m.startswith(_OPENAI_PREFIXES):
        return "openai"
    if m.startswith("claude"):
        return "anthropic"
    return ""  # let the catalog infer it from the model name


def _meta(gen: Any) -> Mapping[str, Any]:
    message = getattr(gen, "message", None)
    rm = getattr(message, "response_metadata", None)
    return rm if isinstance(rm, Mapping) else {}


def _usage_metadata(gen: Any) -> Mapping[str, Any] | None:
    message = getattr(gen, "message", None)
    um = getattr(message, "usage_metadata", None)
    return um if isinstance(um, Mapping) else None


def _service_tier(metas: Sequence[Mapping[str, Any]], llm_output: Mapping[str, Any] | None) -> str | None:
    for rm in [*metas, llm_output or {}]:
        st = rm.get("service_tier")
        if st is None and isinstance(rm.get("usage"), Mapping):
            st = rm["usage"].get("service_tier")
        if isinstance(st, str):
            return st
    return None


class CostTracker(BaseCallbackHandler):
    """Prices every model call of the chains it is attached to (see the module docstring).

    ``tier`` is the tier your calls run in (``realtime``; ``batch`` if you feed it Batch API
    results yourself). Inside a batchain job it need not be given: each paid answer says
    the tier its call ran at, in any mode (auto mixes them). ``pricebook`` defaults to
    :func:`batchain.cost.default_pricebook`.
    """

    raise_error = False

    def __init__(self, pricebook: PriceBook | None = None, *, tier: str = Tier.REALTIME) -> None:
        super().__init__()
        self.pricebook = pricebook or default_pricebook()
        self.tier = tier
        self._lock = threading.Lock()
        self._runs: dict[UUID, _Run] = {}
        self._models: dict[str, ModelCost] = {}

    # -- LangChain hooks ------------------------------------------------------------------------

    def _remember(self, run_id: UUID, metadata: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> None:
        params = kwargs.get("invocation_params") or {}
        meta = metadata or {}
        model = None
        for candidate in (
            params.get("model"),
            params.get("model_name"),
            params.get("model_id"),
            meta.get("ls_model_name"),
        ):
            if isinstance(candidate, str) and candidate:
                model = candidate
                break
        provider = meta.get("ls_provider")
        with self._lock:
            self._runs[run_id] = _Run(model, provider if isinstance(provider, str) and provider else None)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._remember(run_id, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._remember(run_id, metadata, kwargs)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None) or _Run(None, None)
            model = run.model or UNKNOWN_MODEL
            entry = self._entry(model, run.provider or _infer_provider(model))
            entry.failures += 1

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None) or _Run(None, None)
        llm_output = response.llm_output if isinstance(response.llm_output, Mapping) else None
        for gens in response.generations:
            self._book_request(gens, llm_output, run)

    # -- booking --------------------------------------------------------------------------------

    def _book_request(self, gens: Sequence[Any], llm_output: Mapping[str, Any] | None, run: _Run) -> None:
        metas = [_meta(g) for g in gens]
        model = None
        for rm in [*metas, llm_output or {}]:
            name = rm.get("model_name") or rm.get("model")
            if isinstance(name, str) and name:
                model = name
                break
        model = model or run.model or UNKNOWN_MODEL
        provider = run.provider
        if provider is None:
            for rm in metas:
                if isinstance(rm.get("model_provider"), str):
                    provider = rm["model_provider"]
                    break
        provider = provider or _infer_provider(model)

        ums = [um for um in (_usage_metadata(g) for g in gens) if um is not None]
        cache_hit = any("total_cost" in um and um.get("total_cost") == 0 for um in ums) or any(
            source_of(getattr(g, "message", None)) is not None for g in gens
        )
        usage: Usage | None = None
        w1h = 0
        if ums:
            distinct: list[Mapping[str, Any]] = []
            for um in ums:  # ChatOpenAI repeats the request's usage on each of the n choices
                if not any(um == seen for seen in distinct):
                    distinct.append(um)
            for um in distinct:
                u, h = _usage_from_metadata(um)
                usage = u if usage is None else usage + u
                w1h += h
            if usage is not None:
                usage = replace(usage, requests=1)
        elif len(gens) and llm_output is None:
            cache_hit = True  # the weaker signal: no usage and no llm_output
        else:
            usage = _usage_from_llm_output(llm_output)

        if cache_hit:
            with self._lock:
                entry = self._entry(model, provider)
                entry.cache_hits += 1
                entry.generations += len(gens)
                if usage is not None:
                    entry.cache_hit_usage = entry.cache_hit_usage + usage
            return

        cost = None
        if usage is not None:
            st = normalize_service_tier(_service_tier(metas, llm_output))
            tier = tier_of(llm_output) or self.tier  # batchain's note on its answers wins
            priced = self.pricebook.cost_of(provider, model, usage, tier, st, cache_write_1h_tokens=w1h)
            cost = priced.total
        with self._lock:
            entry = self._entry(model, provider)
            entry.requests += 1
            entry.generations += len(gens)
            if usage is not None:
                entry.usage = entry.usage + usage
            else:
                entry.usage = entry.usage + Usage(requests=1)
            if cost is None:
                entry.known = False  # no price, or no usage reported: unknown, never zero
            else:
                entry.cost += cost

    def _entry(self, model: str, provider: str) -> ModelCost:
        entry = self._models.get(model)
        if entry is None:
            entry = self._models[model] = ModelCost(provider=provider, model=model)
        return entry

    # -- results --------------------------------------------------------------------------------

    @property
    def models(self) -> dict[str, ModelCost]:
        """A snapshot per model name."""
        with self._lock:
            return {k: replace(v) for k, v in self._models.items()}

    @property
    def total_cost(self) -> Decimal:
        """USD over the requests with a known price (see :attr:`complete`)."""
        with self._lock:
            return sum((m.cost for m in self._models.values()), _ZERO)

    @property
    def complete(self) -> bool:
        """False when some request could not be priced (unknown model or no usage)."""
        with self._lock:
            return all(m.known for m in self._models.values())

    @property
    def cost_by_model(self) -> dict[str, Decimal | None]:
        with self._lock:
            return {k: (m.cost if m.known else None) for k, m in self._models.items()}

    @property
    def usage_by_model(self) -> dict[str, Usage]:
        """Billed usage per model (LLM-cache hits excluded; see ``models[...].cache_hit_usage``)."""
        with self._lock:
            return {k: replace(m.usage) for k, m in self._models.items()}

    @property
    def unknown_models(self) -> list[str]:
        with self._lock:
            return sorted(k for k, m in self._models.items() if not m.known)

    @property
    def requests(self) -> int:
        """Billed requests (LLM-cache hits excluded)."""
        with self._lock:
            return sum(m.requests for m in self._models.values())

    @property
    def cache_hits(self) -> int:
        with self._lock:
            return sum(m.cache_hits for m in self._models.values())

    @property
    def failures(self) -> int:
        with self._lock:
            return sum(m.failures for m in self._models.values())

    def reset(self) -> None:
        with self._lock:
            self._models.clear()
            self._runs.clear()

    def report(self) -> str:
        """A plain-text table per model and a total line."""
        models = self.models
        header = (
            f"{'model':<32} {'requests':>8} {'cache hits':>10} {'input':>10} {'cached':>9}"
            f" {'output':>10} {'cost (USD)':>14}"
        )
        lines = [header, "-" * len(header)]
        for name in sorted(models):
            m = models[name]
            cost = f"{m.cost:.6f}" if m.known else "unknown"
            lines.append(
                f"{name[:32]:<32} {m.requests:>8} {m.cache_hits:>10} {m.usage.input_tokens:>10}"
                f" {m.usage.cache_read_tokens:>9} {m.usage.output_tokens:>10} {cost:>14}"
            )
        total = sum((m.cost for m in models.values()), _ZERO)
        suffix = "" if all(m.known for m in models.values()) else " (known prices only)"
        lines.append("-" * len(header))
        lines.append(
            f"{'total' + suffix:<32} {sum(m.requests for m in models.values()):>8}"
            f" {sum(m.cache_hits for m in models.values()):>10} {'':>10} {'':>9} {'':>10}"
            f" {total:>14.6f}"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"CostTracker(total_cost={self.total_cost}, requests={self.requests}, "
            f"cache_hits={self.cache_hits}, complete={self.complete})"
        )
