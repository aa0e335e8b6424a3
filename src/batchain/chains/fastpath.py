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

import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManager
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.output_parsers import BaseOutputParser, StrOutputParser
from langchain_core.prompts import (
    BasePromptTemplate,
    ChatPromptTemplate,
    PromptTemplate,
    StringPromptTemplate,
)
from langchain_core.prompts.chat import _StringImageMessagePromptTemplate
from langchain_core.runnables import RunnableBinding, RunnableGenerator, RunnableSequence

from batchain.cost.tokens import CHARS_PER_TOKEN, approx_input_tokens, input_chars, overhead
from batchain.providers import adapter_for
from batchain.providers._sdk import rebody
from batchain.providers.base import (
    Body,
    CallRequest,
    PlainTextAnswers,
    ProviderAdapter,
    clean_body_json,
    key_hasher,
)

__all__ = ["FastChain", "RequestTemplate", "TextShortcut", "compile_fast", "inspect_fast", "inspect_stages"]

log = logging.getLogger("batchain.chains.fastpath")

#: a string as JSON text, as ``json.dumps(..., ensure_ascii=False)`` writes it anywhere
_encode_string: Callable[[str], str] = json.encoder.encode_basestring

#: the full build of a model call from its messages: its adapter and request
BuildFrom = Callable[[list[BaseMessage]], tuple[ProviderAdapter, CallRequest]]

_TRACING_VARS = ("LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_TRACING")


@dataclass(frozen=True, slots=True)
class FastChain:
    prompt: BasePromptTemplate[Any]
    model: BaseChatModel
    kwargs: dict[str, Any] = field(default_factory=dict)
    parser: BaseOutputParser[Any] | None = None
    #: pass-through checks between the model and the parser (e.g. OpenAI's refusal check)
    checks: tuple[Callable[[Any], Any], ...] = ()

    def messages(self, value: Any) -> list[BaseMessage]:
        """What ``prompt.invoke(value).to_messages()`` gives, without the Runnable wrapper."""
        inner = self.prompt._validate_input(value)
        return self.prompt.format_prompt(**inner).to_messages()

    def parse(self, message: Any, generations: list[Any]) -> Any:
        for check in self.checks:
            for _ in check(iter([message])):  # raises on a refused answer
                pass
        if self.parser is None:
            return message
        return self.parser.parse_result(generations)

    def call_args(self) -> tuple[list[str] | None, dict[str, Any]]:
        """The model call's ``stop`` and other bound arguments."""
        kwargs = dict(self.kwargs)
        stop = kwargs.pop("stop", None)
        return stop, kwargs


#: how often a templated request is checked against a full build (1 in N items)
_CHECK_EVERY = 1000


class RequestTemplate:
    """Builds the provider request of a :class:`FastChain` item without LangChain objects.

    The model's own payload builder runs once, on messages whose texts are unique
    placeholders; each placeholder must come back as a whole string somewhere in the body
    (``messages[0].content``, ``system``, a merged text block...). An item's request is
    then that body with the prompt's formatted texts put in those places, keyed and hashed
    like any other. The texts come from the prompt's own templates, so they are exactly
    what ``prompt.invoke`` would produce.

    The first item, and one in every ``_CHECK_EVERY`` after it, is also built the full way
    and compared; a difference turns the template off for the rest of the run. Texts that
    are empty or blank take the full way: payload builders may drop such blocks.
    """

    def __init__(
        self,
        fast: FastChain,
        build: BuildFrom,
        adapter: ProviderAdapter,
        base: CallRequest,
        formatters: list[Callable[..., str]],
        paths: list[tuple[Any, ...]],
        marks: list[str],
    ) -> None:
        self.fast = fast
        self._build = build
        self.adapter = adapter
        self.base = base
        self.formatters = formatters
        self.paths = paths
        self.active = True
        self._count = 0
        #: the base body's key text cut at the placeholders, in the order they appear there
        self._pieces, self._order = _pieces(clean_body_json(base.body), marks)
        self._keyed = key_hasher(base.identity)
        self._plan = _plan(paths)
        self._static_chars, self._counted = _counted_chars(base.body, paths)
        self._overhead = overhead(base.body)
        chat = isinstance(fast.prompt, ChatPromptTemplate)
        # a chat prompt's partial variables join the item's (without any: the item's own)
        partial = chat and bool(fast.prompt.partial_variables)
        self._merge = fast.prompt._merge_partial_and_user_variables if partial else None

    def _text(self, texts: list[str]) -> str:
        """The key text of the body with ``texts`` in it (``clean_body_json`` of that body):
        the base body's text with each text JSON-encoded in its placeholder's place. Keys
        are sorted and strings encoded alike wherever they are, so only the slots change."""
        pieces, order = self._pieces, self._order
        out = [pieces[0]]
        for n, slot in enumerate(order, 1):
            out.append(_encode_string(texts[slot]))
            out.append(pieces[n])
        return "".join(out)

    def stub(self, key: str) -> CallRequest:
        """A request that is only the identity of call ``key`` of this template (no body):
        enough to wait for, price and parse the call's answer, not to send it."""
        b = self.base
        return CallRequest(
            provider=b.provider,
            endpoint=b.endpoint,
            model=b.model,
            body={},
            lane=b.lane,
            key=key,
            est_tokens=0,
            headers=dict(b.headers),
            max_output=b.max_output,
            context=dict(b.context),
            identity=b.identity,
        )

    def full(self, value: Any) -> tuple[ProviderAdapter, CallRequest]:
        """The item's call built the ordinary way (prompt, messages, payload builder)."""
        return self._build(self.fast.messages(value))

    def build(self, value: Any) -> tuple[ProviderAdapter, CallRequest]:
        if not self.active:
            return self.full(value)
        inner = self.fast.prompt._validate_input(value)
        kwargs = self._merge(**inner) if self._merge is not None else inner
        texts = [f(**kwargs) for f in self.formatters]
        for t in texts:
            if not (isinstance(t, str) and t.strip()):
                return self.full(value)
        body = _fill(self.base.body, self._plan, texts)
        request = rebody(self.base, body, self._text(texts), self._keyed)
        chars = self._static_chars
        for t, counted in zip(texts, self._counted, strict=True):
            if counted:
                chars += len(t)
        request.queued_tokens = chars // CHARS_PER_TOKEN + self._overhead
        self._count += 1
        if self._count % _CHECK_EVERY == 1:
            adapter, expected = self.full(value)
            if (expected.key, expected.body, expected.headers, approx_input_tokens(expected.body)) != (
                request.key,
                request.body,
                request.headers,
                request.queued_tokens,
            ):
                log.warning("request template differs from the model's own build: turned off")
                self.active = False
                return adapter, expected
        return self.adapter, request


#: how often a shortcut output is checked against the model's own parse (1 in N answers)
_CHECK_ANSWER_EVERY = 1000


class TextShortcut:
    """The outputs of a ``prompt | model | StrOutputParser`` chain read from its answers'
    text. The model's parser builds a message, a generation and usage metadata for each
    answer, and the string parser keeps only the text: at tens of thousands of answers
    that is most of a collect's time.

    Only answers the template's adapter calls plain text take it
    (:class:`~batchain.providers.base.PlainTextAnswers`, which an adapter may implement:
    no tool calls, refusal or other parts); any other answer, adapter or parser goes the
    model's way. The first answer and one in ``_CHECK_ANSWER_EVERY`` after it are parsed
    the model's way too and must agree, or the shortcut turns off for the run."""

    def __init__(self, fast: FastChain, adapter: ProviderAdapter, template: CallRequest) -> None:
        self._adapter = adapter
        reader: PlainTextAnswers | None = adapter if isinstance(adapter, PlainTextAnswers) else None
        self._read = reader.plain_text if reader is not None else None
        self.active = (
            self._read is not None
            and type(fast.parser) is StrOutputParser
            and fast.model.output_version in (None, "v0")
            and not template.context.get("schema")
        )
        self._count = 0

    def output(self, adapter: ProviderAdapter, body: Body, full: Callable[[], Any]) -> Any:
        """The item's output: the answer's text, or ``full()`` (the model's parse and the
        chain's parser)."""
        read = self._read
        text = read(body) if self.active and read is not None and adapter is self._adapter else None
        if text is None:
            return full()
        self._count += 1
        if self._count % _CHECK_ANSWER_EVERY != 1:
            return text
        expected = full()
        if expected != text:
            log.warning("answer text differs from the model's own parse: shortcut turned off")
            self.active = False
        return expected


def _pieces(text: str, marks: list[str]) -> tuple[list[str], list[int]]:
    """``text`` cut at each mark's JSON string, and which mark each cut was."""
    at = sorted((text.index(_encode_string(m)), n) for n, m in enumerate(marks))
    pieces, start = [], 0
    for pos, n in at:
        pieces.append(text[start:pos])
        start = pos + len(_encode_string(marks[n]))
    pieces.append(text[start:])
    return pieces, [n for _, n in at]


def _put(body: dict[str, Any], paths: list[tuple[Any, ...]], texts: list[str]) -> dict[str, Any]:
    """A copy of ``body`` with ``texts`` at ``paths``; only the containers on a path are copied."""
    filled: dict[str, Any] = _fill(body, _plan(paths), texts)
    return filled


#: where a template's texts go in its body: at each key or index of a container, the slot
#: whose text goes there, or the plan of the container there (made once per template)
_Plan = dict[Any, "int | _Plan"]


def _plan(paths: list[tuple[Any, ...]]) -> _Plan:
    plan: _Plan = {}
    for slot, path in enumerate(paths):
        node = plan
        for step in path[:-1]:
            child = node.setdefault(step, {})
            assert isinstance(child, dict), "a text's path runs through another text"
            node = child
        node[path[-1]] = slot
    return plan


def _fill(node: Any, plan: _Plan, texts: list[str]) -> Any:
    """A copy of container ``node`` with the texts of ``plan`` in it."""
    out = dict(node) if type(node) is dict else list(node)
    for step, where in plan.items():
        if isinstance(where, int):
            out[step] = texts[where]
        else:
            out[step] = _fill(node[step], where, texts)
    return out


def _counted_chars(body: dict[str, Any], paths: list[tuple[Any, ...]]) -> tuple[int, list[bool]]:
    """What :func:`~batchain.cost.tokens.input_chars` counts of ``body`` with its slots
    (``paths``) empty, and whether it counts each slot's text (a message text does; a
    text it does not read, none of it): a built body's count is then that plus the
    counted texts' lengths, found without walking the body."""
    empty = [""] * len(paths)
    static = input_chars(_put(body, paths, empty))
    counted = []
    for n in range(len(paths)):
        one = list(empty)
        one[n] = "x"
        counted.append(input_chars(_put(body, paths, one)) > static)
    return static, counted


def _find(node: Any, target: str, path: tuple[Any, ...], found: list[tuple[Any, ...]]) -> None:
    if isinstance(node, str):
        if node == target:
            found.append(path)
    elif isinstance(node, dict):
        for k, v in node.items():
            _find(v, target, (*path, k), found)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _find(v, target, (*path, i), found)


def _slots(
    prompt: BasePromptTemplate[Any], marks: list[str]
) -> tuple[list[BaseMessage], list[Callable[..., str]]] | None:
    """Placeholder messages and the text formatter of each, or None if the prompt has a
    part whose output is not one plain string per message."""
    if isinstance(prompt, StringPromptTemplate):
        marks.append(_mark())
        return [HumanMessage(content=marks[-1])], [_formatter(prompt)]
    if type(prompt) is not ChatPromptTemplate:
        return None
    messages: list[BaseMessage] = []
    formatters: list[Callable[..., str]] = []
    for part in prompt.messages:
        if isinstance(part, BaseMessage):
            messages.append(part)
            continue
        if not (
            isinstance(part, _StringImageMessagePromptTemplate)
            and type(part).format is _StringImageMessagePromptTemplate.format
            and isinstance(part.prompt, StringPromptTemplate)
        ):
            return None
        marks.append(_mark())
        messages.append(part._msg_class(content=marks[-1], additional_kwargs=part.additional_kwargs))
        formatters.append(_formatter(part.prompt))
    return messages, formatters


def _formatter(prompt: StringPromptTemplate) -> Callable[..., str]:
    """The prompt's ``format``; for an f-string ``PromptTemplate`` without partials, which
    is what that does, its template's ``str.format``: the same text, from the C
    implementation of the format mini-language instead of ``string.Formatter``'s Python
    one (several times faster)."""
    if (
        type(prompt) is PromptTemplate
        and prompt.template_format == "f-string"
        and not prompt.partial_variables
    ):
        return prompt.template.format
    return prompt.format


def _mark() -> str:
    return f"batchain-slot-{secrets.token_hex(12)}"


def compile_template(fast: FastChain, build: BuildFrom) -> RequestTemplate | None:
    """A :class:`RequestTemplate` for ``fast``, or None when its prompt or model does not
    allow one. ``build`` is the full build of a call from its messages."""
    marks: list[str] = []
    slots = _slots(fast.prompt, marks)
    if slots is None:
        return None
    messages, formatters = slots
    try:
        adapter, base = build(messages)
    except Exception:  # the model refuses placeholder messages: no template
        return None
    if not adapter.batchable:
        return None
    text = json.dumps(base.body, default=str) + json.dumps(base.headers)
    paths: list[tuple[Any, ...]] = []
    for mark in marks:
        found: list[tuple[Any, ...]] = []
        _find(base.body, mark, (), found)
        if len(found) != 1 or text.count(mark) != 1:
            return None  # transformed, repeated or embedded: only whole strings are safe
        paths.append(found[0])
    clean = clean_body_json(base.body)
    if any(clean.count(_encode_string(mark)) != 1 for mark in marks):
        return None
    return RequestTemplate(fast, build, adapter, base, formatters, paths, marks)


def _tracing_on() -> bool:
    """Does anything observe runs without being passed as a callback? The environment's
    tracing switches, and every handler LangChain would add by itself: tracers switched on
    by a context manager (``tracing_v2_enabled``, ``collect_runs``, any configure hook),
    verbose or debug output."""
    if any(os.environ.get(v, "").lower() in ("1", "true") for v in _TRACING_VARS):
        return True
    return bool(CallbackManager.configure(None, None).handlers)


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


#: generators that only validate the model's message and pass it on unchanged, by the
#: qualified name of their function. langchain-openai >= 1.7.4 puts ``_check_refusal``
#: between the model and the parser of ``with_structured_output``.
_PASS_THROUGH_CHECKS = frozenset({"langchain_openai.chat_models.base._check_refusal"})


def _check_of(step: Any) -> Callable[[Any], Any] | None:
    """The function of a known pass-through check step, or None."""
    if type(step) is not RunnableGenerator:
        return None
    fn = getattr(step, "_transform", None)  # private to langchain-core: the sync generator
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}"
    return fn if fn is not None and name in _PASS_THROUGH_CHECKS else None


def inspect_fast(
    chain: Any, *, callbacks: list[Any] | None = None, configurable: bool = False
) -> FastChain | str:
    """The chain as a :class:`FastChain`, or the reason it must take the ordinary path."""
    steps = _observed(chain, callbacks, configurable)
    return steps if isinstance(steps, str) else _stage_of(steps)


def inspect_stages(
    chain: Any, *, callbacks: list[Any] | None = None, configurable: bool = False
) -> tuple[FastChain, ...] | str:
    """The chain as stages, each ``prompt | model [| parser]``, each stage's output the next
    one's input (``p1 | m1 | parser | p2 | m2 | parser ...``); or the reason it cannot be.
    A stage before the last needs a parser: a message passed on as the next prompt's
    input would carry its metadata into that prompt's text."""
    steps = _observed(chain, callbacks, configurable)
    if isinstance(steps, str):
        return steps
    starts = [i for i, step in enumerate(steps) if i == 0 or isinstance(step, BasePromptTemplate)]
    if len(starts) == 1:
        single = _stage_of(steps)
        return (single,) if isinstance(single, FastChain) else single
    stages: list[FastChain] = []
    for n, (start, end) in enumerate(zip(starts, [*starts[1:], len(steps)], strict=True), 1):
        stage = _stage_of(steps[start:end])
        if isinstance(stage, str):
            return f"stage {n} of {len(starts)}: {stage}"
        if stage.parser is None and n < len(starts):
            return f"stage {n} of {len(starts)} ends with its model's message, not an output parser"
        stages.append(stage)
    return tuple(stages)


def _observed(chain: Any, callbacks: list[Any] | None, configurable: bool) -> list[Any] | str:
    """The chain's steps, or why its run must take the ordinary path whatever its shape."""
    if callbacks:
        return "callbacks are set"
    if configurable:
        return "the run's config has configurable fields"
    if _tracing_on():
        return "tracing is on"
    if type(chain) is not RunnableSequence:
        return f"the chain is a {type(chain).__name__}, not prompt | model [| parser]"
    return list(chain.steps)


def _stage_of(steps: list[Any]) -> FastChain | str:
    """``prompt | model [| checks] [| parser]`` as a :class:`FastChain`, or why not."""
    if not isinstance(steps[0], BasePromptTemplate):
        return f"the first step is a {type(steps[0]).__name__}, not a prompt template"
    found = _model_of(steps[1]) if len(steps) > 1 else None
    if found is None:
        name = type(steps[1]).__name__ if len(steps) > 1 else "nothing"
        return f"the second step is a {name}, not a chat model"
    model, kwargs = found
    if adapter_for(model) is None:
        return f"no adapter for {type(model).__name__}"
    if model.callbacks or model.cache not in (None, False):
        return "the model has callbacks or a cache of its own"
    if getattr(model, "rate_limiter", None) is not None or getattr(model, "streaming", False):
        return "the model has a rate limiter or streams"
    checks: list[Callable[[Any], Any]] = []
    rest = steps[2:]
    while rest and (check := _check_of(rest[0])) is not None:
        checks.append(check)
        rest = rest[1:]
    if len(rest) > 1:
        return f"{len(steps)} steps: more than prompt | model | parser"
    parser: BaseOutputParser[Any] | None = None
    if rest:
        if not isinstance(rest[0], BaseOutputParser):
            return f"the last step is a {_describe(rest[0])}, not an output parser"
        parser = rest[0]
    return FastChain(steps[0], model, kwargs, parser, tuple(checks))


def _describe(step: Any) -> str:
    if isinstance(step, RunnableGenerator | RunnableBinding):
        return repr(step)[:80]
    return type(step).__name__


def compile_fast(chain: Any, *, callbacks: list[Any] | None = None) -> FastChain | None:
    """The chain as a :class:`FastChain`, or None when it must take the ordinary path."""
    found = inspect_fast(chain, callbacks=callbacks)
    return found if isinstance(found, FastChain) else None
