from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_openai import ChatOpenAI

import batchain
from batchain.sandbox import Sandbox, SandboxConfig
from tests.conftest import TEST_KEY

T = TypeVar("T")


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


#: a sandbox batch that ends in about a tenth of a second
FAST = dict(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)


@pytest.fixture
def fast(sandbox: Sandbox) -> Sandbox:
    """The sandbox with batches that end at once."""
    sandbox.configure(**FAST)
    return sandbox


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


_direct_loop: asyncio.AbstractEventLoop | None = None


def run_direct(coro: Coroutine[Any, Any, T]) -> T:
    """Run a chain outside batchain on one long-lived loop.

    LangChain models share a process-wide HTTP client bound to the first loop that used
    it, so direct (non-batchain) runs in tests all go through this one loop.
    """
    global _direct_loop
    if _direct_loop is None:
        _direct_loop = asyncio.new_event_loop()
        threading.Thread(target=_direct_loop.run_forever, daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coro, _direct_loop).result()


def billed(sb: Sandbox, *fields: str) -> collections.Counter[tuple[str, ...]]:
    """Requests the sandbox billed, counted by ``fields`` of its ledger entries (default:
    model and tier)."""
    keys = fields or ("model", "tier")
    return collections.Counter(tuple(str(getattr(e, f)) for f in keys) for e in sb.ledger())


def accounted(job: batchain.Job, *fields: str) -> collections.Counter[tuple[str, ...]]:
    """Paid calls as the job's cost report counts them, by the same ``fields``: equal to
    :func:`billed` when nothing escaped batchain's accounting."""
    keys = fields or ("model", "tier")
    out: collections.Counter[tuple[str, ...]] = collections.Counter()
    for line in job.report().lines:
        out[tuple(str(getattr(line, f)) for f in keys)] += line.calls
    return out


def run_job(chain: Any, items: list[Any], store: Any, **kw: Any) -> batchain.Job:
    """``batchain.run`` as the engine tests run it: no progress display, quick polls."""
    kw.setdefault("poll_min", 0.02)
    return batchain.run(chain, items, store=store, progress=False, **kw)


class Sources(BaseCallbackHandler):
    """The batchain marker of every model answer seen (None: paid by this call)."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        for gens in response.generations:
            meta = gens[0].message.response_metadata  # type: ignore[attr-defined]
            self.seen.append((meta.get("batchain") or {}).get("source"))
