"""The fast path for `prompt | model [| parser]` gives exactly the ordinary path's outputs,
and is only taken when nothing observes the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import JsonOutputParser, StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from pydantic import BaseModel

import batchain
from batchain.chains.fastpath import FastChain, compile_fast, inspect_fast, inspect_stages
from batchain.sandbox import Sandbox
from tests.engine.conftest import make_anthropic, make_openai

# depends on LangChain internals (hook, payload builders, prompt classes): CI runs it at the
# lowest versions the pins admit too
pytestmark = pytest.mark.internals


class Pet(BaseModel):
    kind: str
    legs: int


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.ends = 0

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.ends += 1


def chains(sb: Sandbox) -> dict[str, Any]:
    prompt = ChatPromptTemplate.from_template("Tell me about {x}, as json")
    return {
        "str": prompt | make_openai(sb) | StrOutputParser(),
        "message": prompt | make_anthropic(sb),
        "bound": prompt | make_openai(sb).bind(stop=["zzz"], temperature=0.2) | StrOutputParser(),
        "json": prompt
        | make_openai(sb, model_kwargs={"response_format": {"type": "json_object"}})
        | JsonOutputParser(),
        "tools": prompt | make_openai(sb).with_structured_output(Pet, method="function_calling"),
        "string_prompt": PromptTemplate.from_template("Say {x}") | make_anthropic(sb) | StrOutputParser(),
    }


@pytest.mark.parametrize("name", ["str", "message", "bound", "json", "tools", "string_prompt"])
@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_fast_path_outputs_equal_the_ordinary_path(
    sandbox: Sandbox, tmp_path: Path, name: str, mode: str
) -> None:
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    chain = chains(sandbox)[name]
    rows = [{"x": f"thing {i}"} for i in range(8)]
    fast = batchain.run(chain, rows, mode=mode, store=tmp_path / "a.sqlite", progress=False, poll_min=0.02)
    recorder = Recorder()
    slow = batchain.run(
        chain,
        rows,
        mode=mode,
        store=tmp_path / "b.sqlite",
        progress=False,
        poll_min=0.02,
        callbacks=[recorder],
    )
    assert recorder.ends == 8  # the callback forced the ordinary path, which it observed

    def plain(v: Any) -> Any:
        if hasattr(v, "tool_calls"):
            return (v.content, [(c["name"], c["args"]) for c in v.tool_calls])
        return v.model_dump() if isinstance(v, BaseModel) else v

    assert [plain(o) for o in fast.outputs()] == [plain(o) for o in slow.outputs()]
    assert fast.counts["succeeded"] == 8
    assert fast.stats["fast_path"] == "on", fast.stats["fast_path"]
    assert slow.stats["fast_path"] == "off: callbacks are set"


# The shapes LangChain's own constructors build (``with_structured_output``, ``bind``,
# parsers) are recognised by their classes, which are LangChain internals: when an upstream
# release changes one, this test names the shape and the reason instead of the fast path
# silently turning off.
@pytest.mark.parametrize(
    "name",
    ["str", "message", "bound", "json", "tools", "string_prompt", "anthropic_tools", "openai_json_mode"],
)
def test_internals_langchain_shapes_take_the_fast_path(sandbox: Sandbox, name: str) -> None:
    prompt = ChatPromptTemplate.from_template("Tell me about {x}, as json")
    extra = {
        "anthropic_tools": prompt | make_anthropic(sandbox).with_structured_output(Pet),
        "openai_json_mode": prompt | make_openai(sandbox).with_structured_output(Pet, method="json_mode"),
    }
    chain = {**chains(sandbox), **extra}[name]
    found = inspect_fast(chain)
    assert isinstance(found, FastChain), (
        f"depends on LangChain internals: the shape {name!r} no longer takes the fast path "
        f"with the installed langchain-core/openai/anthropic ({found})"
    )


def test_a_sequence_of_fast_shapes_is_stages(sandbox: Sandbox) -> None:
    prompt = ChatPromptTemplate.from_template("{x}")
    model = make_openai(sandbox)
    stages = inspect_stages(prompt | model | StrOutputParser() | prompt | make_anthropic(sandbox))
    assert isinstance(stages, tuple) and [s.parser is None for s in stages] == [False, True]
    one = inspect_stages(prompt | model)
    assert isinstance(one, tuple) and len(one) == 1
    # a message passed on would carry its metadata into the next prompt's text
    assert inspect_stages(prompt | model | prompt | model) == (
        "stage 1 of 2 ends with its model's message, not an output parser"
    )
    assert inspect_stages(prompt | model | StrOutputParser() | prompt | model.with_retry()) == (
        "stage 2 of 2: the second step is a RunnableRetry, not a chat model"
    )
    assert isinstance(inspect_stages(prompt | model | StrOutputParser() | (lambda s: s)), str)
    assert inspect_stages(prompt | model, callbacks=[Recorder()]) == "callbacks are set"


def test_other_shapes_take_the_ordinary_path(sandbox: Sandbox) -> None:
    prompt = ChatPromptTemplate.from_template("{x}")
    model = make_openai(sandbox)
    assert compile_fast(prompt | model.with_retry() | StrOutputParser()) is None
    assert compile_fast(prompt | model | StrOutputParser() | (lambda s: s.upper())) is None
    assert compile_fast(model | StrOutputParser()) is None
    assert compile_fast(prompt | model, callbacks=[Recorder()]) is None
    # OpenAI's json_schema structured output parses in a lambda: the ordinary path, and why
    assert "not an output parser" in str(inspect_fast(prompt | model.with_structured_output(Pet)))
    assert inspect_fast(prompt | model.with_retry() | StrOutputParser()) == (
        "the second step is a RunnableRetry, not a chat model"
    )


def test_tracing_turns_the_fast_path_off(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = ChatPromptTemplate.from_template("{x}") | make_openai(sandbox)
    assert compile_fast(chain) is not None
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    assert compile_fast(chain) is None
