"""Every chain shape runs through batchain: each model call is intercepted, billed once,
and the outputs equal what the chain gives when run directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import (
    Runnable,
    RunnableBranch,
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
)
from langchain_core.tools import tool
from pydantic import BaseModel

import batchain
from batchain.sandbox import Sandbox
from tests.engine.conftest import make_anthropic, make_openai, run_direct

# depends on LangChain internals (hook, payload builders, prompt classes): CI runs it at the
# lowest versions the pins admit too
pytestmark = pytest.mark.internals

TOPICS = [{"topic": t} for t in ["rivers", "chess", "bread", "comets", "jazz", "moss"]]


class Person(BaseModel):
    name: str
    age: int


@tool
def lookup_weather(city: str) -> str:
    """Look up the weather for a city."""
    return f"sunny in {city}"


def normalize(value: Any) -> Any:
    if isinstance(value, BaseMessage):
        calls = [(c["name"], c["args"]) for c in getattr(value, "tool_calls", [])]
        return ("msg", value.content, calls)
    if isinstance(value, BaseModel):
        return ("model", type(value).__name__, value.model_dump())
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


#: auto mode: these items are urgent (realtime), the rest batch
URGENT = ("rivers", "chess")


def urgent(value: Any) -> bool:
    return isinstance(value, dict) and value.get("topic") in URGENT


@pytest.fixture(params=["realtime", "batch", "auto"])
def mode(request: pytest.FixtureRequest, sandbox: Sandbox) -> str:
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    return str(request.param)


def run_and_compare(
    sb: Sandbox, chain: Runnable[Any, Any], inputs: list[Any], store: Path, mode: str
) -> batchain.Job:
    """Run directly, then through batchain in ``mode``: same outputs, every call billed once
    at that mode's tier (auto mode: the urgent items' calls realtime, the others' batch)."""
    expected = run_direct(chain.abatch(inputs))
    sb.reset()
    extra: dict[str, Any] = {"priority": urgent} if mode == "auto" else {}
    job = batchain.run(chain, inputs, store=store, progress=False, mode=mode, poll_min=0.02, **extra)
    assert job.counts["succeeded"] == len(inputs), job.errors()
    assert normalize(job.outputs()) == normalize(expected)
    ledger = sb.ledger()
    assert ledger, "no model call reached the provider"
    if mode == "auto":
        assert {e.tier for e in ledger} == ({"realtime", "batch"} if any(map(urgent, inputs)) else {"batch"})
    else:
        assert {e.tier for e in ledger} == {mode}
    assert not sb.duplicates()
    assert job.call_stats.get("paid", 0) == len(ledger)
    return job


def prompt(text: str = "Write one line about {topic}.") -> ChatPromptTemplate:
    return ChatPromptTemplate.from_template(text)


def test_prompt_model_parser(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    chain = prompt() | make_openai(sandbox) | StrOutputParser()
    run_and_compare(sandbox, chain, TOPICS, any_store, mode)


def test_parallel_two_providers(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    chain = prompt() | RunnableParallel(
        gpt=make_openai(sandbox) | StrOutputParser(),
        claude=make_anthropic(sandbox) | StrOutputParser(),
    )
    run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert {e.provider for e in sandbox.ledger()} == {"openai", "anthropic"}
    assert len(sandbox.ledger()) == 2 * len(TOPICS)


def test_branch_routing(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    cheap = make_openai(sandbox, "gpt-4o-mini")
    strong = make_openai(sandbox, "gpt-4o")
    chain = (
        RunnableBranch(
            (lambda x: len(x["topic"]) <= 4, prompt() | cheap),
            prompt() | strong,
        )
        | StrOutputParser()
    )
    run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    models = {e.model for e in sandbox.ledger()}
    assert models == {"gpt-4o-mini", "gpt-4o"}


def test_fallbacks(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    failing = prompt("[[fail:400]] {topic}") | make_openai(sandbox)
    backup = prompt() | make_anthropic(sandbox)
    chain = failing.with_fallbacks([backup]) | StrOutputParser()
    run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert {e.provider for e in sandbox.ledger()} == {"anthropic"}


def test_with_retry(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    chain = prompt() | make_openai(sandbox).with_retry(stop_after_attempt=2) | StrOutputParser()
    run_and_compare(sandbox, chain, TOPICS, any_store, mode)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_openai(sandbox: Sandbox, any_store: str | Path, method: str, mode: str) -> None:
    text = "Invent a person who likes {topic}. Reply in JSON with name and age."
    chain = prompt(text) | make_openai(sandbox).with_structured_output(Person, method=method)
    job = run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert all(isinstance(o, Person) for o in job.outputs())


def test_structured_output_json_mode(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    model = make_openai(sandbox).with_structured_output(None, method="json_mode")
    job = run_and_compare(sandbox, prompt("Facts about {topic}, as JSON") | model, TOPICS, any_store, mode)
    assert all(isinstance(o, dict) and o for o in job.outputs())


def test_structured_output_dict_schema(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    schema = {
        "title": "Pet",
        "type": "object",
        "properties": {"kind": {"type": "string"}, "legs": {"type": "integer"}},
        "required": ["kind", "legs"],
    }
    chain = prompt("A pet for a fan of {topic}") | make_openai(sandbox).with_structured_output(schema)
    job = run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert all(set(o) == {"kind", "legs"} for o in job.outputs())


def test_structured_output_anthropic(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    chain = prompt("Invent a person who likes {topic}") | make_anthropic(sandbox).with_structured_output(
        Person
    )
    job = run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert all(isinstance(o, Person) for o in job.outputs())


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_bind_tools(sandbox: Sandbox, any_store: str | Path, provider: str, mode: str) -> None:
    model = make_openai(sandbox) if provider == "openai" else make_anthropic(sandbox)
    chain = prompt("What is the weather where {topic} are?") | model.bind_tools([lookup_weather])
    job = run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    outs = job.outputs()
    assert all(isinstance(o, AIMessage) and o.tool_calls for o in outs)
    assert outs[0].tool_calls[0]["name"] == "lookup_weather"


def test_lambdas_calling_models_sync_and_async(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    gpt = make_openai(sandbox)
    claude = make_anthropic(sandbox)

    def sync_step(x: dict[str, str]) -> str:
        return str(gpt.invoke(f"Describe {x['topic']}").content)

    async def async_step(text: str) -> str:
        return str((await claude.ainvoke(f"Shorten: {text}")).content)

    chain = RunnableLambda(sync_step) | RunnableLambda(async_step)
    run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert len(sandbox.ledger()) == 2 * len(TOPICS)


def test_three_stage_nested_chain(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    gpt = make_openai(sandbox)
    claude = make_anthropic(sandbox)
    outline = prompt("Outline an essay on {topic}") | gpt | StrOutputParser()
    draft = ChatPromptTemplate.from_template("Draft from: {outline}") | claude | StrOutputParser()
    review = ChatPromptTemplate.from_template("Review: {draft}") | gpt | StrOutputParser()
    chain = (
        RunnablePassthrough.assign(outline=outline)
        | RunnablePassthrough.assign(draft=draft)
        | RunnablePassthrough.assign(review=review)
    )
    run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert len(sandbox.ledger()) == 3 * len(TOPICS)


def test_json_parser_chain(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    model = make_openai(sandbox, model_kwargs={"response_format": {"type": "json_object"}})
    chain = prompt("Give facts about {topic} as JSON") | model | JsonOutputParser()
    job = run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert all(isinstance(o, dict) for o in job.outputs())


def test_langgraph_graph(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    langgraph = pytest.importorskip("langgraph.graph")
    from typing import TypedDict

    gpt = make_openai(sandbox)
    claude = make_anthropic(sandbox)

    class State(TypedDict, total=False):
        topic: str
        idea: str
        critique: str

    async def ideate(state: State) -> State:
        return {"idea": str((await gpt.ainvoke(f"An idea about {state['topic']}")).content)}

    def critique(state: State) -> State:
        return {"critique": str(claude.invoke(f"Critique: {state['idea']}").content)}

    graph = langgraph.StateGraph(State)
    graph.add_node("ideate", ideate)
    graph.add_node("critique", critique)
    graph.add_edge(langgraph.START, "ideate")
    graph.add_edge("ideate", "critique")
    graph.add_edge("critique", langgraph.END)
    app = graph.compile()
    run_and_compare(sandbox, app, TOPICS, any_store, mode)
    assert len(sandbox.ledger()) == 2 * len(TOPICS)


# -- the Responses API, streamed calls and embeddings (issue: every model call) -----------------


def test_responses_api_text_structured_and_tools(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    model = make_openai(sandbox, use_responses_api=True)
    chain = RunnableParallel(
        text=prompt("Tell me about {topic}") | model | StrOutputParser(),
        person=prompt("Invent a person who loves {topic}") | model.with_structured_output(Person),
        tools=prompt("What is the weather where {topic} are?") | model.bind_tools([lookup_weather]),
    )
    job = run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert len(sandbox.ledger()) == 3 * len(TOPICS)
    assert all(isinstance(o["person"], Person) and o["tools"].tool_calls for o in job.outputs())


def test_streamed_calls_in_lambdas_and_graph_nodes(
    sandbox: Sandbox, any_store: str | Path, mode: str
) -> None:
    gpt = make_openai(sandbox)
    claude = make_anthropic(sandbox)

    async def astreamed(x: dict[str, str]) -> str:
        return "".join([str(c.content) async for c in gpt.astream(f"Describe {x['topic']}")])

    def streamed(text: str) -> str:
        return "".join(str(c.content) for c in claude.stream(f"Shorten: {text}"))

    chain = RunnableLambda(astreamed) | RunnableLambda(streamed)
    run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert len(sandbox.ledger()) == 2 * len(TOPICS)


def test_embeddings_inside_a_chain(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    from langchain_openai import OpenAIEmbeddings

    from tests.conftest import TEST_KEY

    emb = OpenAIEmbeddings(
        model="text-embedding-3-small",
        base_url=sandbox.openai_base_url,
        api_key=TEST_KEY,
        check_embedding_ctx_length=False,
    )
    gpt = make_openai(sandbox)

    async def index(x: dict[str, str]) -> dict[str, Any]:
        summary = str((await gpt.ainvoke(f"Summarize {x['topic']}")).content)
        vectors = await emb.aembed_documents([x["topic"], summary])
        return {"summary": summary, "vectors": vectors}

    run_and_compare(sandbox, RunnableLambda(index), TOPICS, any_store, mode)
    assert len(sandbox.ledger()) == 2 * len(TOPICS)


def test_gemini_beside_openai_and_anthropic(sandbox: Sandbox, any_store: str | Path, mode: str) -> None:
    genai = pytest.importorskip("langchain_google_genai")
    from tests.conftest import TEST_KEY

    gemini = genai.ChatGoogleGenerativeAI(
        model="gemini-2.5-flash", api_key=TEST_KEY, base_url=sandbox.gemini_base_url
    )
    parser = StrOutputParser()
    chain = RunnableParallel(
        gpt=prompt("Tell me about {topic}") | make_openai(sandbox) | parser,
        claude=prompt("Tell me about {topic}") | make_anthropic(sandbox) | parser,
        gemini=prompt("Tell me about {topic}") | gemini | parser,
        person=prompt("Invent a person who loves {topic}") | gemini.with_structured_output(Person),
    )
    job = run_and_compare(sandbox, chain, TOPICS, any_store, mode)
    assert len(sandbox.ledger()) == 4 * len(TOPICS)
    assert all(isinstance(o["person"], Person) for o in job.outputs())
