"""A shared in-process sandbox for the conformance suite (reset per test)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from batchain.sandbox import Sandbox, SandboxConfig

# Fast batch timings so lifecycle tests finish in well under a second.
BASE_CONFIG = SandboxConfig(
    batch_validating_s=0.02,
    batch_processing_s=0.15,
    batch_finalizing_s=0.02,
    cancel_delay_s=0.02,
)


@pytest.fixture(scope="session")
def shared_sandbox() -> Iterator[Sandbox]:
    with Sandbox(BASE_CONFIG) as sb:
        yield sb


@pytest.fixture
def sb(shared_sandbox: Sandbox) -> Sandbox:
    """The shared sandbox with default knobs and an empty ledger."""
    shared_sandbox.configure(**BASE_CONFIG.to_dict())
    shared_sandbox.reset()
    return shared_sandbox


@pytest.fixture
def oai(sb: Sandbox) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=sb.openai_base_url, api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def ant(sb: Sandbox) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=sb.anthropic_base_url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


@pytest.fixture
def gemini(sb: Sandbox) -> Any:
    """A google-genai client on the sandbox (its modules skip when the SDK is missing)."""
    from google import genai
    from google.genai import types

    return genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=sb.gemini_base_url))
