"""LangChain ChatOpenAI / ChatAnthropic against the sandbox, unmodified."""

from __future__ import annotations

from typing import Literal

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from batchain.sandbox import Sandbox

HEADLINE = (
    "Classify the headline into one of: tech, business, entertainment, sports, other. "
    "Answer with the label only.\n\nHeadline: {headline}"
)


class Movie(BaseModel):
    """A movie with details."""

    title: str = Field(description="The title")
    year: int = Field(ge=1900, le=2030)
    genre: Literal["drama", "comedy", "action"]
    rating: float | None = None
    tags: list[str]


class Verdict(TypedDict):
    answer: str


@tool
def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


@pytest.fixture
def gpt(sb: Sandbox) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=sb.openai_base_url, api_key="sk-test")  # type: ignore[arg-type]


@pytest.fixture
def claude(sb: Sandbox) -> ChatAnthropic:
    return ChatAnthropic(  # type: ignore[call-arg]
        model="claude-haiku-4-5", base_url=sb.anthropic_base_url, api_key="sk-ant", max_tokens=256
    )


def test_chat_openai_invoke(gpt: ChatOpenAI, sb: Sandbox) -> None:
    reply = gpt.invoke(HEADLINE.format(headline="Nvidia chip sales soar on AI demand"))
    assert isinstance(reply, AIMessage)
    assert reply.content == "tech"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == sb.ledger()[0].input_tokens
    assert reply.response_metadata["model_name"] == "gpt-4o-mini"


def test_chat_openai_stream(gpt: ChatOpenAI) -> None:
    text = "".join(str(chunk.content) for chunk in gpt.stream("stream these words"))
    assert text == "Sandbox reply (gpt-4o-mini): stream these words"


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_chat_openai_structured_output(gpt: ChatOpenAI, method: str) -> None:
    structured = gpt.with_structured_output(Movie, method=method)  # type: ignore[arg-type]
    movie = structured.invoke("Tell me about a great action movie")
    assert isinstance(movie, Movie)
    assert 1900 <= movie.year <= 2030
    assert movie.genre == "action"


def test_chat_openai_json_mode(gpt: ChatOpenAI) -> None:
    structured = gpt.with_structured_output(Verdict, method="json_mode")
    result = structured.invoke("Answer in json: is the sky blue? one of: yes, no")
    assert isinstance(result, dict) and result["answer"] in ("yes", "no")


def test_chat_openai_bind_tools(gpt: ChatOpenAI) -> None:
    model = gpt.bind_tools([get_weather])
    reply = model.invoke("What's the weather in Paris?")
    assert isinstance(reply, AIMessage)
    call = reply.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    follow = model.invoke(
        [
            HumanMessage("What's the weather in Paris?"),
            reply,
            ToolMessage("sunny", tool_call_id=call["id"]),
        ]
    )
    assert follow.tool_calls == [] and "sunny" in str(follow.content)


async def test_chat_openai_ainvoke(gpt: ChatOpenAI) -> None:
    replies = await gpt.abatch(["one", "two", "three"])
    assert [r.content for r in replies] == [
        f"Sandbox reply (gpt-4o-mini): {w}" for w in ("one", "two", "three")
    ]


def test_chat_anthropic_invoke(claude: ChatAnthropic, sb: Sandbox) -> None:
    reply = claude.invoke(HEADLINE.format(headline="Champions league final ends in penalties"))
    assert reply.content == "sports"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == sb.ledger()[0].input_tokens


def test_chat_anthropic_structured_output(claude: ChatAnthropic) -> None:
    movie = claude.with_structured_output(Movie).invoke("A funny comedy film please")
    assert isinstance(movie, Movie) and movie.genre == "comedy"


def test_chat_anthropic_json_schema_output(claude: ChatAnthropic) -> None:
    movie = claude.with_structured_output(Movie, method="json_schema").invoke("A drama film")
    assert isinstance(movie, Movie) and movie.genre == "drama"


def test_chat_anthropic_bind_tools(claude: ChatAnthropic) -> None:
    model = claude.bind_tools([get_weather])
    reply = model.invoke("Weather in Rome?")
    call = reply.tool_calls[0]  # type: ignore[attr-defined]
    assert call["name"] == "get_weather"
    follow = model.invoke(
        [HumanMessage("Weather in Rome?"), reply, ToolMessage("rain", tool_call_id=call["id"])]
    )
    assert "rain" in str(follow.content)


def test_chat_anthropic_stream(claude: ChatAnthropic) -> None:
    text = "".join(str(chunk.content) for chunk in claude.stream("stream please"))
    assert "Sandbox reply (claude-haiku-4-5): stream please" in text
