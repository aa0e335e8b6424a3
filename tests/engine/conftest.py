from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI

from batchain.sandbox import Sandbox, SandboxConfig
from tests.conftest import TEST_KEY


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig()) as sb:
        yield sb


@pytest.fixture
def sandbox(sandbox_session: Sandbox) -> Iterator[Sandbox]:
    sandbox_session.reset()
    sandbox_session.configure(**SandboxConfig().to_dict())
    yield sandbox_session
    sandbox_session.reset()


@pytest.fixture
def openai_model(sandbox: Sandbox) -> ChatOpenAI:
    return make_openai(sandbox)


@pytest.fixture
def anthropic_model(sandbox: Sandbox) -> ChatAnthropic:
    return make_anthropic(sandbox)


def make_openai(sb: Sandbox, model: str = "gpt-4o-mini", **kw: Any) -> ChatOpenAI:
    kw.setdefault("api_key", TEST_KEY)
    return ChatOpenAI(model=model, base_url=sb.openai_base_url, **kw)


def make_anthropic(sb: Sandbox, model: str = "claude-haiku-4-5", **kw: Any) -> ChatAnthropic:
    kw.setdefault("max_tokens", 256)
    kw.setdefault("api_key", TEST_KEY)
    return ChatAnthropic(model=model, base_url=sb.anthropic_base_url, **kw)
