"""A model called with stream()/astream() inside a job is one call like any other: in batch
mode it goes through the Batch API and its answer comes as one chunk; nothing reaches the
provider past batchain (the ledger and the report agree)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableLambda

import batchain
from batchain.sandbox import Sandbox
from tests.engine.conftest import accounted, billed, make_anthropic, make_openai

ITEMS = [{"topic": f"topic {i}"} for i in range(5)]


def astreaming(model: BaseChatModel) -> RunnableLambda[dict[str, str], dict[str, Any]]:
    async def ask(x: dict[str, str]) -> dict[str, Any]:
        chunks = [c async for c in model.astream(f"one line on {x['topic']}")]
        return {"chunks": len(chunks), "text": "".join(str(c.content) for c in chunks)}

    return RunnableLambda(ask)


def streaming(model: BaseChatModel) -> RunnableLambda[dict[str, str], dict[str, Any]]:
    def ask(x: dict[str, str]) -> dict[str, Any]:
        chunks = list(model.stream(f"one line on {x['topic']}"))
        return {"chunks": len(chunks), "text": "".join(str(c.content) for c in chunks)}

    return RunnableLambda(ask)


@pytest.mark.parametrize("wrap", [astreaming, streaming], ids=["astream", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_streamed_calls_go_through_the_batch_api_as_one_chunk(
    fast: Sandbox, store_path: Path, wrap: Any, provider: str
) -> None:
    model = (
        make_openai(fast, streaming=True) if provider == "openai" else make_anthropic(fast, streaming=True)
    )
    job = batchain.run(wrap(model), ITEMS, mode="batch", store=store_path, progress=False, poll_min=0.02)
    assert job.counts["succeeded"] == len(ITEMS)
    name = "gpt-4o-mini" if provider == "openai" else "claude-haiku-4-5"
    assert billed(fast) == {(name, "batch"): len(ITEMS)}
    assert not fast.duplicates() and accounted(job) == billed(fast)
    for out, item in zip(job.outputs(), ITEMS, strict=True):
        assert out["chunks"] == 1 and item["topic"] in out["text"]


def test_streamed_calls_in_realtime_mode_are_accounted(sandbox: Sandbox, store_path: Path) -> None:
    job = batchain.run(astreaming(make_openai(sandbox)), ITEMS, store=store_path, progress=False)
    assert job.counts["succeeded"] == len(ITEMS)
    assert billed(sandbox) == {("gpt-4o-mini", "realtime"): len(ITEMS)}
    assert accounted(job) == billed(sandbox) and not sandbox.duplicates()


def test_streaming_outside_a_job_still_streams(sandbox: Sandbox) -> None:
    model = make_openai(sandbox)
    batchain.run(astreaming(model), ITEMS[:1], progress=False, store=None)  # the hook is installed
    chunks = list(model.stream("hello there, a few words please"))
    assert len(chunks) > 1  # the sandbox streams word by word


@pytest.mark.skipif(
    not hasattr(BaseChatModel, "_iter_v2_events"), reason="no event protocol in this langchain-core"
)
def test_the_beta_event_stream_is_refused_inside_a_job(fast: Sandbox, store_path: Path) -> None:
    model = make_openai(fast)

    def events(x: dict[str, str]) -> str:
        stream = model.stream_events(f"hi {x['topic']}", version="v3")  # type: ignore[call-overload]
        return str(stream.output.content)

    job = batchain.run(RunnableLambda(events), ITEMS[:2], mode="batch", store=store_path, progress=False)
    assert job.counts["failed"] == 2
    (failure,) = {r.error["message"] for r in job.results() if r.error is not None}
    assert "stream_events(version='v3') inside a batchain job" in failure
    assert fast.ledger() == []
