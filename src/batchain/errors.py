"""Every public exception batchain raises, under one base: :class:`BatchainError`.

``except batchain.BatchainError`` catches whatever batchain itself raised, and nothing a
provider SDK or a chain raised. Exceptions that existed before this base keep their old
built-in base too (``JobBusy`` is still a ``RuntimeError``, ``ChainRefError`` a
``ValueError``...), so code catching those keeps working. They are importable from
``batchain`` and, as before, from the module that raises them.

This module imports nothing from batchain, so any module can import it without a cycle.

Not here, on purpose:

* ``batchain.cli.CliError``: a :class:`BatchainError` too, but the command line's own: it
  becomes a printed line and an exit code, never reaches Python callers.
* internal signals that never leave batchain's own frames: ``GoRealtime`` (auto mode sends
  a parked call realtime), ``CallFailed`` (unwrapped to the provider's exception),
  ``Unsupported`` (the OpenAI adapter passes a call to the generic one) and the estimate's
  ``_Captured``. ``JobStopping`` (a call not sent because the job stops) can pass through a
  chain's own code, so it is a :class:`BatchainError`, but nobody needs to catch it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = [
    "BatchCallError",
    "BatchNotFound",
    "BatchUnsupportedError",
    "BatchainError",
    "BudgetExhausted",
    "CallCancelled",
    "ChainRefError",
    "FlexUnavailable",
    "HostUnreachable",
    "IllegalTransition",
    "InputError",
    "InvalidLabel",
    "InvalidOption",
    "InvalidPriority",
    "ItemFailed",
    "JobBusy",
    "JobIncomplete",
    "LLMCacheNotSet",
    "LeaseLost",
    "MissingInputVariable",
    "OutputError",
    "SchemaMismatch",
    "StoreError",
    "StreamedCallRefused",
    "UnknownPriceWarning",
    "UnpricedModel",
    "Unserializable",
    "YamlChainError",
]


class BatchainError(Exception):
    """The base of every exception batchain raises on purpose."""


# -- running a job ------------------------------------------------------------------------------


class InvalidOption(BatchainError, ValueError):
    """A run option with a value batchain does not know (e.g. ``mode="turbo"``)."""


class InvalidPriority(BatchainError, ValueError):
    """Auto mode: an item's priority (from its field or the priority function) is not a
    level. That item fails with it; the others run on."""


class JobBusy(BatchainError, RuntimeError):
    """Another process is running this job."""


class JobIncomplete(BatchainError, RuntimeError):
    """A job stopped before every item had a result (paused for its budget, stopped by a
    signal) where all of them were needed: a wrapped chain's ``batch()``. The job is in
    its store (``job_id``), and ``Job.open(job_id, chain=...).resume()`` finishes it."""

    def __init__(self, job_id: str, status: str, missing: int, total: int) -> None:
        self.job_id = job_id
        super().__init__(
            f"job {job_id} ended {status} with {missing} of {total} items unfinished; "
            f"finish it with batchain.Job.open({job_id!r}, chain=...).resume()"
        )


class ItemFailed(BatchainError, RuntimeError):
    """An item's error as its job's store recorded it, where the exception itself never
    reached this process (e.g. an input that could not be stored)."""

    def __init__(self, index: int, error: dict[str, Any]) -> None:
        self.index = index
        self.error = error
        super().__init__(f"item {index} failed: {error.get('type')}: {error.get('message')}")


class StoreError(BatchainError, RuntimeError):
    """The store cannot be used as asked: damaged, newer than this batchain, read-only, or
    its disk is full (``disk_full``). Refusing a store changes nothing in it; a write that
    fails is undone as a whole, back to the last commit."""

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        #: the store's disk is full: freeing space is the fix
        self.disk_full = disk_full


class LeaseLost(BatchainError, RuntimeError):
    """This process stalled past its lease on a job and another one took the job over: it
    stopped before writing or sending anything more."""


class IllegalTransition(BatchainError, RuntimeError):
    """A status change the lifecycle table does not allow."""


class Unserializable(BatchainError, TypeError):
    """The object cannot be stored faithfully."""


class HostUnreachable(BatchainError, ConnectionError):
    """A provider host refused or dropped every connection (its circuit breaker opened):
    the job is paused, no item failed for it; resume it once the host answers. ``host`` is
    ``scheme://host:port``, never a path or a key."""

    def __init__(self, host: str, job_id: str, why: str) -> None:
        super().__init__(
            f"{host} is unreachable ({why}): job {job_id} is paused, no item failed; "
            "resume it once the host answers"
        )
        self.host = host
        self.job_id = job_id
        #: what failed, how often, how fast: "Connection refused, 65 times in 1.0 s"
        self.why = why


class BudgetExhausted(BatchainError):
    """The next call's worst case does not fit in what is left of the budget."""


class UnpricedModel(BatchainError, ValueError):
    """A budget cannot be enforced for a model with no known price."""


# -- one item's model call ----------------------------------------------------------------------


class BatchUnsupportedError(BatchainError, RuntimeError):
    """Batch mode met a model whose calls cannot go through a Batch API: batchain has no
    Batch API adapter for it, its endpoint has none (an OpenAI-compatible server), or the
    call uses an API the Batch API does not take. Nothing was submitted."""

    def __init__(
        self,
        model: BaseChatModel,
        why: str | None = None,
        endpoint: str | None = None,
        *,
        paused: bool = False,
    ) -> None:
        name = getattr(model, "model_name", None) or getattr(model, "model", None) or ""
        #: the model, as ``Class(model name)``
        self.model = f"{type(model).__name__}({name!s})"
        #: why its calls cannot go to a Batch API
        self.why = why or "batchain has no Batch API adapter for it"
        #: the base URL its calls go to, when the endpoint is the reason
        self.endpoint = endpoint
        #: met mid-run (a model made at call time): the job paused instead of starting
        self.paused = paused
        super().__init__(self.explain())

    def explain(self, *, cli: bool = False, command: str | None = None) -> str:
        """The message, with the way out in the caller's language: the CLI's flags
        (``cli=True``; ``command``: the command line to add them to) or Python keywords.

        An endpoint without a Batch API is refused only under batch only: the way out is to
        drop it (its calls then run realtime), or to say the endpoint has one. Anything else
        (no adapter, an API the Batch API does not take) is let through by the fallback."""
        if self.endpoint is not None:
            host = self._host()
            if cli:
                out = (
                    "drop --batch-only to run its calls in realtime at full price (noted in the "
                    f"report); if that endpoint does have a Batch API, add --endpoint-mode {host}=batch"
                )
            else:
                out = (
                    "drop batch_only=True to run its calls in realtime at full price (noted in the "
                    "report); if that endpoint does have a Batch API, pass "
                    f"endpoint_modes={{{host!r}: 'batch'}}"
                )
        elif cli:
            where = f"`{command} --realtime-fallback`" if command else "add --realtime-fallback"
            out = f"{where} to run its calls in realtime at full price"
        else:
            out = "pass fallback='realtime' to run its calls in realtime at full price"
        done = "The job paused; nothing done is lost." if self.paused else "Nothing was submitted."
        where_to = f" at {self.endpoint}" if self.endpoint is not None else ""
        return (
            f"batch mode: {self.model}{where_to}: {self.why}, so its calls cannot run at batch price. "
            f"{done} To go on, {out}."
        )

    def _host(self) -> str:
        from urllib.parse import urlsplit

        endpoint = self.endpoint or ""
        return urlsplit(endpoint).hostname or endpoint


class StreamedCallRefused(BatchainError, RuntimeError):
    """A model call inside a job would stream from the provider past batchain (the beta
    ``stream_events(version="v3")``, which has no fallback to one call): unpriced and
    outside the budget, so it fails instead."""


class FlexUnavailable(BatchainError, RuntimeError):
    """Flex mode with ``flex_fallback="fail"``: a call whose model has no flex tier fails
    instead of running at the standard price."""

    def __init__(self, provider: str, model: str) -> None:
        super().__init__(
            f"{provider}/{model} has no flex tier and flex_fallback='fail': its call was not sent "
            "(flex_fallback='standard' runs it at the standard price; flex_models names models "
            "to send at flex)"
        )
        self.provider = provider
        self.model = model


class LLMCacheNotSet(BatchainError, ValueError):
    """A model asks for LangChain's cache (``cache=True``) and none is set: the call fails,
    as LangChain's own would (a ``ValueError`` there too)."""


class BatchCallError(BatchainError, RuntimeError):
    """A call the provider's Batch API rejected for good."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BatchNotFound(BatchainError, LookupError):
    """The provider says a batch does not exist (404): what a ``BatchAPI`` raises from
    ``retrieve`` and ``cancel`` for a batch its provider does not know."""

    def __init__(self, provider_batch_id: str) -> None:
        super().__init__(f"the provider does not know batch {provider_batch_id}")
        self.provider_batch_id = provider_batch_id


class CallCancelled(BatchainError, RuntimeError):
    """The job was cancelled before this call got an answer."""


# -- inputs and outputs -------------------------------------------------------------------------


class InputError(BatchainError):
    """An input that cannot be read at all: missing file, unknown format, bad header."""


class OutputError(BatchainError):
    """An output target that cannot be written."""


# -- chains -------------------------------------------------------------------------------------


class ChainRefError(BatchainError, ValueError):
    """A chain reference that does not point at a chain."""


class YamlChainError(ChainRefError):
    """A YAML chain file that cannot be turned into a chain; the message names the file and key."""


class MissingInputVariable(BatchainError, ValueError):
    """An input row lacks a field the prompt template uses."""


class InvalidLabel(BatchainError, ValueError):
    """The model's answer is not one of the chain's labels."""


class SchemaMismatch(BatchainError, ValueError):
    """The model's structured output does not match the chain's output schema."""


# -- warnings -----------------------------------------------------------------------------------


class UnknownPriceWarning(UserWarning):
    """A model has no price (catalog or override): its cost is unknown, not zero.

    A warning, not an error: it is no :class:`BatchainError`."""
