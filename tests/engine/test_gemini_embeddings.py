"""Gemini embeddings in a job: ``GoogleGenerativeAIEmbeddings`` as the job's chain or
called inside one (and google-genai's ``embed_content`` directly), realtime and through
the Gemini Batch API, with the dedup, store and accounting of any call."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_google_genai")

from google import genai
from google.genai import types
from langchain_core.runnables import RunnableLambda
from langchain_google_genai import GoogleGenerativeAIEmbeddings

from batchain.sandbox import Sandbox
from tests.conftest import TEST_KEY
from tests.engine.conftest import accounted, billed, run_direct, run_job

MODEL = "gemini-embedding-001"
TEXTS = [f"passage {i % 6} about topic {i % 6}" for i in range(10)]  # 6 distinct
FIELDS = ("provider", "model", "tier")


def embeddings(sb: Sandbox, **kw: Any) -> GoogleGenerativeAIEmbeddings:
    key, url = TEST_KEY, sb.gemini_base_url
    return GoogleGenerativeAIEmbeddings(model=MODEL, google_api_key=key, base_url=url, **kw)


@pytest.mark.parametrize("mode", ["batch", "realtime"])
def test_an_embeddings_model_as_the_chain(fast: Sandbox, store_path: Path, mode: str) -> None:
    model = embeddings(fast)
    expected = [run_direct(model.aembed_query(t)) for t in TEXTS]
    fast.reset()
    job = run_job(model, TEXTS, store_path, mode=mode)
    assert job.counts["succeeded"] == len(TEXTS)
    assert job.outputs() == expected
    assert billed(fast, *FIELDS) == {("gemini", MODEL, mode): 6}  # identical texts are one call
    assert not fast.duplicates() and accounted(job, *FIELDS) == billed(fast, *FIELDS)
    report = job.report()
    assert report.cache_hits + report.shared_calls + report.replayed_calls == len(TEXTS) - 6
    assert job.usage.input_tokens > 0  # estimated: the wire carries no usage


@pytest.mark.parametrize("mode", ["batch", "realtime"])
def test_the_report_prices_them(fast: Sandbox, store_path: Path, mode: str) -> None:
    """genai-prices has gemini-embedding-001 (provider google, input tokens only)."""
    job = run_job(embeddings(fast), TEXTS[:3], store_path, mode=mode)
    report = job.report()
    [line] = report.lines
    assert report.complete and not report.unknown and line.known
    assert line.cost.total is not None and line.cost.total > 0 and line.tier == mode
    # the answers carry no token count: the report says its tokens are an estimate
    (note,) = report.notes
    assert note == f"gemini/{line.model}: input tokens estimated at ~4 characters a token " + (
        "(its answers carry no token count)"
    )


def test_documents_inside_a_chain_go_through_the_batch_api(fast: Sandbox, store_path: Path) -> None:
    model = embeddings(fast)

    async def ingest(doc: dict[str, Any]) -> list[list[float]]:
        return await model.aembed_documents([f"{doc['title']} part {i}" for i in range(3)])

    docs = [{"title": f"doc {i % 4}"} for i in range(6)]  # 4 distinct
    expected = [run_direct(ingest(d)) for d in docs]
    fast.reset()
    job = run_job(RunnableLambda(ingest), docs, store_path, mode="batch")
    assert job.counts["succeeded"] == 6 and job.outputs() == expected
    # one call of 3 contents per distinct document; the Batch API embeds a content a request
    assert billed(fast, *FIELDS) == {("gemini", MODEL, "batch"): 12}
    assert accounted(job, *FIELDS) == {("gemini", MODEL, "batch"): 4}
    assert not fast.duplicates()


def test_the_sdk_itself_sync_and_async(fast: Sandbox, store_path: Path) -> None:
    warnings.simplefilter("ignore")
    client = genai.Client(api_key=TEST_KEY, http_options=types.HttpOptions(base_url=fast.gemini_base_url))
    config = {"output_dimensionality": 8, "task_type": "SEMANTIC_SIMILARITY"}

    async def both(text: str) -> list[Any]:
        answer = await client.aio.models.embed_content(model=MODEL, contents=[text, "fixed"], config=config)
        return [e.values for e in answer.embeddings or []]

    def sync_step(text: str) -> list[Any]:
        answer = client.models.embed_content(model=MODEL, contents=text, config=config)
        return [e.values for e in answer.embeddings or []]

    items = ["a", "b", "a"]
    expected = [run_direct(both(t)) for t in items]
    fast.reset()
    job = run_job(RunnableLambda(both), items, store_path, mode="realtime")
    assert job.outputs() == expected and billed(fast, *FIELDS) == {("gemini", MODEL, "realtime"): 2}
    sync_job = run_job(RunnableLambda(sync_step), items, store_path, mode="batch")
    assert [out[0] for out in sync_job.outputs()] == [e[0] for e in expected]
    assert billed(fast, *FIELDS)[("gemini", MODEL, "batch")] == 2
    assert not fast.duplicates()


def test_a_second_job_reuses_the_stored_vectors(fast: Sandbox, store_path: Path) -> None:
    first = run_job(embeddings(fast), TEXTS, store_path, mode="batch")
    paid = len(fast.ledger())
    second = run_job(embeddings(fast), TEXTS, store_path, mode="realtime")
    assert second.outputs() == first.outputs()
    assert len(fast.ledger()) == paid and second.report().paid == 0


_LATE_IMPORT = """
import sys, warnings
import batchain
from langchain_core.runnables import RunnableLambda

store, url, key = sys.argv[1:4]
batchain.run(RunnableLambda(lambda x: x), [1, 2], store=store, mode="realtime", progress=False)
assert "google.genai" not in sys.modules, "a job imported google-genai"

from google import genai  # imported only now, after the first job
warnings.simplefilter("ignore")
client = genai.Client(api_key=key, http_options={"base_url": url})
def embed(text):  # the SDK's method looked up at each call, as a program does
    return client.models.embed_content(model="gemini-embedding-001", contents=text).embeddings[0].values[:3]

step = RunnableLambda(embed)
job = batchain.run(step, ["a", "b"], store=store, mode="batch", progress=False, poll_min=0.02, poll_max=0.1)
print(job.report().lines[0].tier, job.counts["succeeded"])
"""


def test_a_job_imports_no_sdk_and_patches_one_imported_later(fast: Sandbox, tmp_path: Path) -> None:
    """google-genai costs most of a second to import: a job that does not use it leaves it
    unimported, and a later job catches its calls all the same (through the Batch API)."""
    import subprocess
    import sys

    args = [str(tmp_path / "store.sqlite"), fast.gemini_base_url, TEST_KEY]
    command = [sys.executable, "-c", _LATE_IMPORT, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["batch", "2"]
    assert billed(fast, *FIELDS) == {("gemini", MODEL, "batch"): 2}
