"""Gemini embeddings against the sandbox with the official google-genai SDK: realtime
(``embed_content`` -> ``batchEmbedContents``) and Batch Mode (``create_embeddings`` ->
``asyncBatchEmbedContent``), inline and from a file."""

from __future__ import annotations

import io
import json
import math
import warnings

import httpx
import pytest

pytest.importorskip("google.genai")

from google import genai
from google.genai import types

from batchain.sandbox import Sandbox
from tests.conformance.helpers import jsonl, wait_gemini

MODEL = "gemini-embedding-001"


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.simplefilter("ignore", category=Warning)  # create_embeddings is "experimental"


def test_embed_content(gemini: genai.Client, sb: Sandbox) -> None:
    result = gemini.models.embed_content(
        model=MODEL, contents=["alpha", "beta", "alpha"], config={"task_type": "RETRIEVAL_DOCUMENT"}
    )
    vectors = [e.values or [] for e in result.embeddings or []]
    assert [len(v) for v in vectors] == [3072] * 3
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-4)
    assert result.usage_metadata is None  # the Developer API sends no usage
    small = gemini.models.embed_content(model="text-embedding-004", contents="alpha")
    assert len((small.embeddings or [])[0].values or []) == 768
    sized = gemini.models.embed_content(model=MODEL, contents="alpha", config={"output_dimensionality": 8})
    assert len((sized.embeddings or [])[0].values or []) == 8
    entries = sb.ledger()
    assert [(e.provider, e.model, e.tier) for e in entries] == [
        ("gemini", MODEL, "realtime"),
        ("gemini", "text-embedding-004", "realtime"),
        ("gemini", MODEL, "realtime"),
    ]
    assert entries[0].input_tokens > 0 and entries[0].output_tokens == 0
    assert sb.duplicates() == {}


def test_embed_content_single_route(gemini: genai.Client, sb: Sandbox) -> None:
    response = httpx.post(
        f"{sb.gemini_base_url}/v1beta/models/{MODEL}:embedContent",
        headers={"x-goog-api-key": "test-key"},
        json={"content": {"parts": [{"text": "alpha"}]}, "outputDimensionality": 4, "title": "t"},
    )
    assert response.status_code == 200
    values = response.json()["embedding"]["values"]
    assert len(values) == 4
    bad = httpx.post(
        f"{sb.gemini_base_url}/v1beta/models/{MODEL}:embedContent",
        headers={"x-goog-api-key": "test-key"},
        json={"content": {"parts": []}},
    )
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_inline_embeddings_batch(gemini: genai.Client, sb: Sandbox) -> None:
    src = {"inlined_requests": {"contents": ["alpha", "beta"], "config": {"output_dimensionality": 16}}}
    job = gemini.batches.create_embeddings(model=MODEL, src=src)  # type: ignore[arg-type]
    assert job.name and job.name.startswith("batches/")
    job = wait_gemini(gemini, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    responses = job.dest.inlined_embed_content_responses  # type: ignore[union-attr]
    vectors = [r.response.embedding.values for r in responses]
    config = {"output_dimensionality": 16}
    realtime = gemini.models.embed_content(model=MODEL, contents=["alpha", "beta"], config=config)
    assert vectors == [e.values for e in realtime.embeddings or []]
    tiers = [(e.provider, e.model, e.tier) for e in sb.ledger()]
    assert tiers == [("gemini", MODEL, "batch")] * 2 + [("gemini", MODEL, "realtime")]
    assert sb.duplicates() == {}


def test_inline_embeddings_batch_keeps_metadata(gemini: genai.Client, sb: Sandbox) -> None:
    """The wire takes a metadata object per request (the SDK sends none): it comes back."""
    body = {
        "batch": {
            "displayName": "emb",
            "inputConfig": {
                "requests": {
                    "requests": [
                        {"request": {"content": {"parts": [{"text": f"t{i}"}]}}, "metadata": {"key": f"k{i}"}}
                        for i in range(3)
                    ]
                }
            },
        }
    }
    created = httpx.post(
        f"{sb.gemini_base_url}/v1beta/models/{MODEL}:asyncBatchEmbedContent",
        headers={"x-goog-api-key": "test-key"},
        json=body,
    ).json()
    assert created["metadata"]["@type"].endswith("EmbedContentBatch")
    job = wait_gemini(gemini, created["name"])
    responses = job.dest.inlined_embed_content_responses  # type: ignore[union-attr]
    assert [r.metadata for r in responses] == [{"key": f"k{i}"} for i in range(3)]
    assert sorted(e.custom_id or "" for e in sb.ledger()) == ["k0", "k1", "k2"]


def test_file_embeddings_batch(gemini: genai.Client, sb: Sandbox) -> None:
    lines = [{"key": f"k{i}", "request": {"content": {"parts": [{"text": f"file {i}"}]}}} for i in range(3)]
    uploaded = gemini.files.upload(file=io.BytesIO(jsonl(lines)), config={"mime_type": "jsonl"})
    assert uploaded.name
    job = gemini.batches.create_embeddings(model=MODEL, src={"file_name": uploaded.name})
    job = wait_gemini(gemini, job.name or "")
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    raw = gemini.files.download(file=job.dest.file_name or "")  # type: ignore[union-attr]
    results = [json.loads(line) for line in raw.decode().splitlines()]
    assert [r["key"] for r in results] == ["k0", "k1", "k2"]
    assert all(len(r["response"]["embedding"]["values"]) == 3072 for r in results)
    assert {e.tier for e in sb.ledger()} == {"batch"} and sb.duplicates() == {}
