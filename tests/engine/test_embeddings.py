"""Embeddings calls in a job: an embeddings model as the job's chain, or called inside a
chain (LangChain's OpenAIEmbeddings, or the OpenAI SDK directly), in batch and realtime
mode, with the same dedup, cache and accounting as chat calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.runnables import RunnableLambda
from langchain_openai import OpenAIEmbeddings

import batchain
from batchain.sandbox import Sandbox
from tests.conftest import TEST_KEY
from tests.engine.conftest import accounted, billed, run_direct, run_job

MODEL = "text-embedding-3-small"
TEXTS = [f"passage {i % 6} about topic {i % 6}" for i in range(10)]  # 6 distinct


def embeddings(sb: Sandbox, **kw: Any) -> OpenAIEmbeddings:
    # no tiktoken download: the texts go as they are (length-safe chunking needs tiktoken)
    return OpenAIEmbeddings(
        model=MODEL, base_url=sb.openai_base_url, api_key=TEST_KEY, check_embedding_ctx_length=False, **kw
    )


@pytest.mark.parametrize("mode", ["batch", "realtime"])
def test_an_embeddings_model_as_the_chain(fast: Sandbox, store_path: Path, mode: str) -> None:
    model = embeddings(fast)
    expected = [model.embed_query(t) for t in TEXTS]
    fast.reset()
    job = run_job(model, TEXTS, store_path, mode=mode)
    assert job.counts["succeeded"] == len(TEXTS)
    assert job.outputs() == expected  # the SDK's own float32 values, as a direct call gives
    assert billed(fast) == {(MODEL, mode): 6}  # identical texts are one call
    assert not fast.duplicates() and accounted(job) == billed(fast)
    report = job.report()
    assert report.complete and report.paid > 0
    assert report.cache_hits + report.shared_calls + report.replayed_calls == len(TEXTS) - 6


def test_a_second_job_reuses_the_stored_vectors(fast: Sandbox, store_path: Path) -> None:
    first = run_job(embeddings(fast), TEXTS, store_path, mode="batch")
    billed = len(fast.ledger())
    second = run_job(embeddings(fast), TEXTS, store_path, mode="batch")
    assert second.outputs() == first.outputs()
    assert len(fast.ledger()) == billed and second.report().paid == 0


def test_embeddings_called_inside_a_chain_go_through_the_batch_api(fast: Sandbox, store_path: Path) -> None:
    model = embeddings(fast)

    async def ingest(doc: dict[str, Any]) -> dict[str, Any]:
        chunks = [f"{doc['title']} part {i}" for i in range(3)]
        vectors = await model.aembed_documents(chunks)
        return {"title": doc["title"], "dims": [len(v) for v in vectors]}

    docs = [{"title": f"doc {i}"} for i in range(5)]
    job = run_job(RunnableLambda(ingest), docs, store_path, mode="batch")
    assert job.counts["succeeded"] == 5
    assert all(out["dims"] == [1536, 1536, 1536] for out in job.outputs())
    assert billed(fast) == {(MODEL, "batch"): 5}  # one request of 3 inputs per document
    assert not fast.duplicates() and accounted(job) == billed(fast)
    assert sum(e.input_tokens for e in fast.ledger()) == job.usage.input_tokens


def test_sync_calls_from_a_sync_step_and_the_sdk_itself(fast: Sandbox, store_path: Path) -> None:
    model = embeddings(fast)
    sdk = openai.AsyncOpenAI(base_url=fast.openai_base_url, api_key=TEST_KEY)

    def sync_step(text: str) -> int:
        return len(model.embed_documents([text])[0])

    async def sdk_step(text: str) -> int:
        got = await sdk.embeddings.create(model=MODEL, input=text, dimensions=64)
        return len(got.data[0].embedding)

    job = run_job(RunnableLambda(sync_step), TEXTS[:4], store_path, mode="batch")
    assert job.outputs() == [1536] * 4
    job = run_job(RunnableLambda(sdk_step), TEXTS[:4], store_path.with_name("sdk.db"), mode="batch")
    assert job.outputs() == [64] * 4
    assert billed(fast) == {(MODEL, "batch"): 8}
    assert not fast.duplicates()


def test_a_list_of_texts_per_item_and_a_bad_item(fast: Sandbox, store_path: Path) -> None:
    model = embeddings(fast, dimensions=32)
    expected = run_direct(model.aembed_documents(["x", "y"]))
    fast.reset()
    job = run_job(model, [["x", "y"], {"not": "text"}], store_path, mode="batch")
    assert job.outputs()[0] == expected
    (bad,) = [r for r in job.results() if r.error is not None]
    assert bad.index == 1 and "a text or a list of texts" in bad.error["message"]
    assert billed(fast) == {(MODEL, "batch"): 1}


def test_the_estimate_counts_embeddings_calls_and_sends_nothing(sandbox: Sandbox) -> None:
    est = batchain.estimate(embeddings(sandbox), TEXTS)
    assert est.items == len(TEXTS) and est.calls == len(TEXTS)
    assert est.input_tokens >= sum(len(t.split()) for t in TEXTS)
    assert est.models == {f"openai/{MODEL}": len(TEXTS)}
    assert est.max_output_tokens == 0
    assert sandbox.ledger() == []


def test_the_sdks_not_given_markers_are_left_out(fast: Sandbox, store_path: Path) -> None:
    sdk = openai.AsyncOpenAI(base_url=fast.openai_base_url, api_key=TEST_KEY)

    async def step(text: str) -> int:
        got = await sdk.embeddings.create(
            model=MODEL, input=[text], dimensions=openai.NOT_GIVEN, user=openai.omit
        )
        return len(got.data[0].embedding)

    job = run_job(RunnableLambda(step), TEXTS[:2], store_path, mode="realtime")
    assert job.outputs() == [1536, 1536] and len(fast.ledger()) == 2


def test_embeddings_at_an_endpoint_without_a_batch_api_run_realtime_with_a_note(
    fast: Sandbox, store_path: Path
) -> None:
    compat = OpenAIEmbeddings(
        model=MODEL, base_url=fast.compat_base_url, api_key=TEST_KEY, check_embedding_ctx_length=False
    )
    job = run_job(compat, TEXTS, store_path, mode="batch")
    assert job.counts["succeeded"] == len(TEXTS)
    assert billed(fast) == {(MODEL, "realtime"): 6} and accounted(job) == billed(fast)
    (note,) = job.report().notes
    assert note.startswith(f"AsyncEmbeddings({MODEL}) at {fast.compat_base_url}: 6 calls ran realtime")
