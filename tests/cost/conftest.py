from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from batchain.sandbox import Sandbox, SandboxConfig

FAST = dict(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)


@pytest.fixture(scope="session")
def cost_sandbox_session() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(**FAST)) as sb:  # type: ignore[arg-type]
        yield sb


@pytest.fixture
def sb(cost_sandbox_session: Sandbox) -> Iterator[Sandbox]:
    cost_sandbox_session.reset()
    cost_sandbox_session.configure(**{**SandboxConfig().to_dict(), **FAST})
    yield cost_sandbox_session
    cost_sandbox_session.reset()


def make_openai(sb: Sandbox, model: str = "gpt-4o-mini", **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(model=model, api_key=SecretStr("sk-test"), base_url=sb.openai_base_url, **kw)


def make_anthropic(sb: Sandbox, model: str = "claude-haiku-4-5", **kw: Any) -> ChatAnthropic:
    kw = {"model": model, "api_key": SecretStr("sk-test"), "max_tokens": 64, **kw}
    return ChatAnthropic(base_url=sb.anthropic_base_url, **kw)
