"""A fast path for the most common chain shape: ``prompt | model [| parser]``.

Running an item through LangChain's Runnable machinery (config contexts, callback managers,
run trees) costs far more than the model call's own bookkeeping: for cheap batch jobs it is
most of the client's time. When a chain is exactly a prompt template, an OpenAI or
Anthropic chat model (optionally with bound arguments) and optionally an output parser,
and nothing observes the run (no callbacks, no tracing), batchain formats the prompt,
sends the call through the same call path as the hook (same request body, same key, same
store, same parser of the model) and applies the parser directly. Outputs are identical;
only the overhead is gone. Any other shape, or any callback, takes the ordinary path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.prompts import BasePromptTemplate
from langchain_core.runnables import RunnableBinding, RunnableSequence

from batchain.providers import adapter_for

__all__ = ["FastChain", "compile_fast"]

_TRACING_VARS = ("LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_TRACING")


@dataclass(frozen=True, slots=True)
class FastChain:
    prompt: BasePromptTemplate[Any]
    model: BaseChatModel
    kwargs: dict[str, Any] = field(default_factory=dict)
    parser: BaseOutputParser[Any] | None = None

    def messages(self, value: Any) -> list[BaseMessage]:
        """What ``prompt.invoke(value).to_messages()`` gives, without the Runnable wrapper."""
        inner = self.prompt._validate_input(value)
        return self.prompt.format_prompt(**inner).to_messages()

    def parse(self, message: Any, generations: list[Any]) -> Any:
        if self.parser is None:
            return message
        return self.parser.parse_result(generations)


def _tracing_on() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true") for v in _TRACING_VARS)


def _model_of(step: Any) -> tuple[BaseChatModel, dict[str, Any]] | None:
    if isinstance(step, BaseChatModel):
        return step, {}
    if (
        isinstance(step, RunnableBinding)
        and isinstance(step.bound, BaseChatModel)
        and not step.config
        and not step.config_factories
        and type(step).invoke is RunnableBinding.invoke  # not a retry/fallback wrapper
    ):
        return step.bound, dict(step.kwargs)
    return None


def compile_fast(chain: Any, *, callbacks: list[Any] | None = None) -> FastChain | None:
    """The chain as a :class:`FastChain`, or None when it must take the ordinary path."""
    if callbacks or _tracing_on() or type(chain) is not RunnableSequence:
        return None
    steps = chain.steps
    if len(steps) not in (2, 3) or not isinstance(steps[0], BasePromptTemplate):
        return None
    found = _model_of(steps[1])
    if found is None:
        return None
    model, kwargs = found
    adapter = adapter_for(model)
    if adapter is None or model.callbacks or model.cache not in (None, False):
        return None
    if getattr(model, "rate_limiter", None) is not None or getattr(model, "streaming", False):
        return None
    parser: BaseOutputParser[Any] | None = None
    if len(steps) == 3:
        if not isinstance(steps[2], BaseOutputParser):
            return None
        parser = steps[2]
    return FastChain(steps[0], model, kwargs, parser)
