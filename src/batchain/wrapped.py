"""``wrap(chain)``: the chain as a LangChain ``Runnable`` whose every ``batch`` runs as one
batchain job (realtime, batch or auto), so code written for ``chain.batch()`` gets the
store, the cache, the ledger-exact cost report and the Batch API price unchanged.

Config: LangChain takes one ``RunnableConfig`` or one per input. A job runs every item with
one set of tags, metadata, run name, configurable fields, recursion limit and concurrency
(they are stored with it, for a resume), so a list whose items differ in one of those is
refused by name. Callbacks and run ids may differ per item (that is what a
``RunnableSequence`` passes a step: a child callback manager per input), and reach each
item's run, nested under its parent run.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list, merge_configs
from langchain_core.runnables.graph import Graph
from langchain_core.runnables.utils import ConfigurableFieldSpec
from langchain_core.utils.pydantic import TypeBaseModel

from batchain._sync import iterate_sync, run_sync
from batchain.api import _options, arun, job_events
from batchain.chains.ref import resolve_chain
from batchain.engine.hook import ACTIVE
from batchain.engine.results import ItemEvent
from batchain.errors import InvalidOption, ItemFailed, JobIncomplete
from batchain.job import Job
from batchain.options import Mode
from batchain.states import ItemStatus
from batchain.store import StoreArg

__all__ = ["WrappedChain", "wrap"]

#: config keys a job applies to every item alike (a list of configs must agree on them)
_SHARED = ("tags", "metadata", "run_name", "configurable", "recursion_limit", "max_concurrency")
#: config keys each item may have its own of
_PER_ITEM = ("callbacks", "run_id")
#: options that belong to one call, not to the wrapped chain
_PER_CALL = {
    "config": "pass config to invoke()/batch(), or use .with_config(...)",
    "callbacks": "pass them in invoke()/batch()'s config, or use .with_config(callbacks=...)",
    "job_id": "every batch() call is a job of its own, with a new id",
    "chain_ref": "every batch() call is a job of its own",
    "input_ref": "every batch() call is a job of its own",
}


def wrap(chain: Runnable[Any, Any] | str, *, mode: str = Mode.REALTIME, **options: Any) -> WrappedChain:
    """``chain`` as a drop-in ``Runnable`` whose ``invoke``/``batch``/``batch_as_completed``
    (and their async twins) each run one batchain job in ``mode``, with ``options`` as
    :func:`batchain.run` takes them (``store``, ``cache``, ``max_concurrency``, ``budget``,
    ``poll_min``...; ``progress`` is off unless asked for). The options are checked now,
    with the errors :func:`batchain.run` gives."""
    for name, why in _PER_CALL.items():
        if name in options:
            raise InvalidOption(f"wrap() takes no {name}=: {why}")
    store = options.pop("store", None)
    options = {"mode": mode, "progress": False, **options}
    _options(dict(options))  # refuses an unknown or invalid option as run() would
    return WrappedChain(resolve_chain(chain), store, options)


@dataclass(frozen=True, slots=True)
class _Call:
    """One call's job: the chain it runs, its shared config, each item's own."""

    chain: Runnable[Any, Any]
    config: RunnableConfig
    own: list[RunnableConfig] | None


class WrappedChain(Runnable[Any, Any]):
    """A chain whose ``batch`` calls run as batchain jobs. Make one with :func:`wrap`.

    It adds no run of its own to traces: each item is the chain's own run, as with
    ``chain.batch()``. Schemas, name, graph and configurable fields are the chain's.
    """

    def __init__(self, chain: Runnable[Any, Any], store: StoreArg, options: dict[str, Any]) -> None:
        self.chain = chain
        self.store = store
        self.options = options
        self.name = chain.get_name()
        self._last_job: Job | None = None

    def __repr__(self) -> str:
        return f"wrap({self.chain!r}, mode={self.options['mode']!r})"

    @property
    def last_job(self) -> Job | None:
        """The job of the last ``batch``/``invoke`` call to finish (None before the first)."""
        return self._last_job

    # -- what the chain is -----------------------------------------------------------------

    @property
    def InputType(self) -> Any:
        return self.chain.InputType

    @property
    def OutputType(self) -> Any:
        return self.chain.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.chain.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.chain.get_output_schema(config)

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return self.chain.config_specs

    def get_graph(self, config: RunnableConfig | None = None) -> Graph:
        return self.chain.get_graph(config)

    # -- running it ------------------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """A batch of one."""
        return self.batch([input], config, **kwargs)[0]

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return (await self.abatch([input], config, **kwargs))[0]

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[Any]:
        """Outputs in input order, from one job. A failed item's exception is in its place
        with ``return_exceptions=True``; otherwise the first failed item's (by index) is
        raised once the job has ended (the other items' outputs are in the job)."""
        return run_sync(self.abatch(inputs, config, return_exceptions=return_exceptions, **kwargs))

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[Any]:
        if not inputs:
            return []
        call = self._prepare(inputs, config, kwargs)
        events: dict[int, ItemEvent] = {}
        job = await self._run(call, inputs, lambda event: events.__setitem__(event.idx, event))
        outcomes = {idx: _outcome(event) for idx, event in events.items()}
        outcomes.update(_from_store(job, set(outcomes), len(inputs)))
        ordered = [outcomes[idx] for idx in range(len(inputs))]
        if not return_exceptions:
            for value in ordered:
                if isinstance(value, Exception):
                    raise _noted(value, job)
        return ordered

    def batch_as_completed(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> Iterator[tuple[int, Any]]:
        """``(index, output)`` as items finish (``(index, exception)`` for a failed one with
        ``return_exceptions=True``). Leaving early pauses the job, as the job can resume."""
        if not inputs:
            return iter(())
        return iterate_sync(
            lambda: self._as_completed(inputs, config, return_exceptions, kwargs), "batchain-wrap"
        )

    async def abatch_as_completed(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> AsyncIterator[tuple[int, Any]]:
        if not inputs:
            return
        async for pair in self._as_completed(inputs, config, return_exceptions, kwargs):
            yield pair

    async def _as_completed(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None,
        return_exceptions: bool,
        kwargs: dict[str, Any],
    ) -> AsyncGenerator[tuple[int, Any], None]:
        call = self._prepare(inputs, config, kwargs)
        seen: set[int] = set()
        ended: list[Job] = []
        start = lambda told: self._run(call, inputs, told)  # noqa: E731
        async with contextlib.aclosing(job_events(start, ended)) as events:
            async for event in events:
                seen.add(event.idx)
                yield _checked(event.idx, _outcome(event), return_exceptions, None)
        job = ended[0]
        for idx, value in sorted(_from_store(job, seen, len(inputs)).items()):
            yield _checked(idx, value, return_exceptions, job)

    def _prepare(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None,
        kwargs: dict[str, Any],
    ) -> _Call:
        if kwargs:
            raise InvalidOption(
                f"a wrapped chain's invoke()/batch() takes no {', '.join(sorted(kwargs))}=: each item "
                "is invoked with its input and config only; bind them to the chain (chain.bind(...))"
            )
        configs = get_config_list(cast(Any, config), len(inputs))
        shared = _shared(configs)
        own = [_pick(c, _PER_ITEM) for c in configs]
        if any(own):
            return _Call(_EachItem(self.chain), shared, own)
        return _Call(self.chain, shared, None)

    async def _run(self, call: _Call, inputs: Sequence[Any], listener: Any) -> Job:
        token = _ITEM_CONFIGS.set(call.own)  # seen by each item's task, made inside arun
        try:
            job = await arun(
                call.chain, inputs, store=self.store, config=call.config, _listener=listener, **self.options
            )
        finally:
            _ITEM_CONFIGS.reset(token)
        self._last_job = job
        return job


def _shared(configs: list[RunnableConfig]) -> RunnableConfig:
    """What every item's config has alike, or :class:`InvalidOption` naming what differs."""
    first = _pick(configs[0], _SHARED)
    for i, config in enumerate(configs[1:], 1):
        other = _pick(config, _SHARED)
        for key in _SHARED:
            if other.get(key) != first.get(key):
                raise InvalidOption(
                    f"config[{i}] has another {key} than config[0]: a batchain job runs every item "
                    f"with one {key} (callbacks and run_id may differ); call batch() once per {key}"
                )
    return first


def _pick(config: RunnableConfig, keys: tuple[str, ...]) -> RunnableConfig:
    """The ``keys`` of ``config`` that are set (an empty list or dict is not)."""
    given: dict[str, Any] = dict(config)
    return cast(RunnableConfig, {k: given[k] for k in keys if given.get(k)})


#: each item's own config (callbacks, run id) for the job running in this context
_ITEM_CONFIGS: ContextVar[list[RunnableConfig] | None] = ContextVar("batchain_item_configs", default=None)


class _EachItem(Runnable[Any, Any]):
    """The chain, invoked for item ``i`` with item ``i``'s callbacks and run id on top of the
    job's config. It adds no run of its own. The configs are read from a context variable,
    not held here, so the chain inspection never walks callback handlers."""

    def __init__(self, chain: Runnable[Any, Any]) -> None:
        self.chain = chain
        self.name = chain.get_name()

    def _config(self, config: RunnableConfig | None) -> RunnableConfig:
        configs, ctx = _ITEM_CONFIGS.get(), ACTIVE.get()
        if configs is None or ctx is None:
            return config or {}
        return merge_configs(config, configs[ctx.item_idx])

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.chain.invoke(input, self._config(config), **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self.chain.ainvoke(input, self._config(config), **kwargs)


def _outcome(event: ItemEvent) -> Any:
    """An item's output, or its exception (the live one where this process saw it)."""
    if event.status == ItemStatus.SUCCEEDED:
        return event.output
    if isinstance(event.exception, Exception):
        return event.exception
    return ItemFailed(event.idx, event.error or {})


def _from_store(job: Job, known: set[int], n: int) -> dict[int, Any]:
    """Outcomes of the items no event told of (e.g. inputs that could not be stored);
    :class:`JobIncomplete` if some item has none (the job paused or was stopped)."""
    if len(known) == n:
        return {}
    found: dict[int, Any] = {}
    for result in job.iter_results():
        if result.index in known:
            continue
        if result.status == ItemStatus.SUCCEEDED:
            found[result.index] = result.output
        elif result.status in (ItemStatus.FAILED, ItemStatus.CANCELLED):
            found[result.index] = ItemFailed(result.index, result.error or {})
    missing = n - len(known) - len(found)
    if missing:
        raise JobIncomplete(job.id, job.status.value, missing, n)
    return found


def _checked(idx: int, value: Any, return_exceptions: bool, job: Job | None) -> tuple[int, Any]:
    if isinstance(value, Exception) and not return_exceptions:
        raise _noted(value, job) if job is not None else value
    return idx, value


def _noted(exc: Exception, job: Job) -> Exception:
    """``exc``, with a note naming the job that holds the other items' outputs."""
    note = f"batchain job {job.id}: the other items' results are in its store"
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    return exc
