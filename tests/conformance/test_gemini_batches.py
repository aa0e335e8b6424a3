"""Gemini Batch Mode and Files against the sandbox with the official google-genai SDK."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import pytest

pytest.importorskip("google.genai")

from google import genai
from google.genai import errors, types

from batchain.sandbox import Sandbox
from batchain.sandbox.ledger import request_hash
from tests.conformance.helpers import GEMINI_MODEL, jsonl, wait_gemini

MODEL_NAME = f"models/{GEMINI_MODEL}"


def inline(count: int, prefix: str = "hello") -> list[dict[str, Any]]:
    return [
        {
            "contents": [{"parts": [{"text": f"{prefix} number {i}"}], "role": "user"}],
            "metadata": {"key": f"r{i}"},
        }
        for i in range(count)
    ]


def test_inline_batch(gemini: genai.Client, sb: Sandbox) -> None:
    sb.configure(batch_processing_s=0.2)
    job = gemini.batches.create(model=GEMINI_MODEL, src=inline(5), config={"display_name": "job-1"})  # type: ignore[arg-type]
    assert job.name and job.name.startswith("batches/")
    assert job.state == types.JobState.JOB_STATE_PENDING and job.display_name == "job-1"
    assert job.model == MODEL_NAME and job.dest is None and job.create_time is not None
    job = wait_gemini(gemini, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.end_time is not None
    responses = job.dest.inlined_responses  # type: ignore[union-attr]
    assert [r.metadata for r in responses] == [{"key": f"r{i}"} for i in range(5)]  # input order
    for index, result in enumerate(responses):
        assert result.error is None
        assert result.response.text == f"Sandbox reply ({GEMINI_MODEL}): hello number {index}"  # type: ignore[union-attr]
    entries = sb.ledger()
    assert len(entries) == 5 and {(e.provider, e.tier, e.batch_id) for e in entries} == {
        ("gemini", "batch", job.name)
    }
    assert sorted(e.custom_id or "" for e in entries) == [f"r{i}" for i in range(5)]
    first = next(e for e in entries if e.custom_id == "r0")
    body = {"contents": [{"parts": [{"text": "hello number 0"}], "role": "user"}], "model": MODEL_NAME}
    assert first.request_hash == request_hash(body)
    assert sb.duplicates() == {}


def test_inline_batch_with_config_and_errors(gemini: genai.Client, sb: Sandbox) -> None:
    requests: list[Any] = [
        {"contents": "plain text", "config": {"system_instruction": "Be short", "max_output_tokens": 2}},
        {"contents": "broken [[fail:400]]", "metadata": {"key": "bad"}},
        {"contents": "boom [[fail:500]]", "metadata": {"key": "boom"}},
    ]
    job = wait_gemini(gemini, gemini.batches.create(model=GEMINI_MODEL, src=requests).name)  # type: ignore[arg-type]
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    ok, bad, boom = job.dest.inlined_responses  # type: ignore[union-attr]
    assert ok.metadata is None and ok.response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS  # type: ignore[union-attr, index]
    assert bad.response is None and bad.error.code == 3 and bad.metadata == {"key": "bad"}  # type: ignore[union-attr]
    assert boom.error.code == 13  # type: ignore[union-attr]
    [entry] = sb.ledger()
    assert entry.custom_id == "0"  # no key: the request's position


def test_raw_operation_shape(gemini: genai.Client, sb: Sandbox) -> None:
    job = wait_gemini(gemini, gemini.batches.create(model=GEMINI_MODEL, src=inline(2)).name)  # type: ignore[arg-type]
    url = f"{sb.gemini_base_url}/v1beta/{job.name}"
    operation = httpx.get(url, headers={"x-goog-api-key": "k"}).json()
    assert operation["name"] == job.name and operation["done"] is True
    metadata = operation["metadata"]
    assert metadata["state"] == "BATCH_STATE_SUCCEEDED" and metadata["name"] == job.name
    assert metadata["batchStats"] == {"requestCount": "2", "successfulRequestCount": "2"}
    assert metadata["output"] == {k: v for k, v in operation["response"].items() if k != "@type"}


def test_file_batch(gemini: genai.Client, sb: Sandbox) -> None:
    lines = [
        {"key": f"k{i}", "request": {"contents": [{"parts": [{"text": f"file item {i}"}]}]}} for i in range(4)
    ]
    lines.append({"key": "bad", "request": {"contents": [{"parts": [{"text": "x [[fail:400]]"}]}]}})
    uploaded = gemini.files.upload(
        file=io.BytesIO(jsonl(lines)), config={"mime_type": "application/jsonl", "display_name": "input"}
    )
    assert uploaded.name and uploaded.name.startswith("files/") and uploaded.state == types.FileState.ACTIVE
    assert uploaded.size_bytes == len(jsonl(lines)) and uploaded.display_name == "input"
    assert gemini.files.get(name=uploaded.name).name == uploaded.name
    job = gemini.batches.create(model=GEMINI_MODEL, src=uploaded.name)
    job = wait_gemini(gemini, job.name)  # type: ignore[arg-type]
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    result_name = job.dest.file_name  # type: ignore[union-attr]
    assert result_name and result_name.startswith("files/batch-")
    result_file = gemini.files.get(name=result_name)
    assert result_file.download_uri and result_file.source == types.FileSource.GENERATED
    results = [json.loads(line) for line in gemini.files.download(file=result_file).decode().splitlines()]
    assert [r["key"] for r in results] == ["k0", "k1", "k2", "k3", "bad"]
    assert results[0]["response"]["candidates"][0]["content"]["parts"][0]["text"].endswith("file item 0")
    assert results[-1]["error"]["code"] == 3
    entries = sb.ledger()
    assert sorted(e.custom_id or "" for e in entries) == ["k0", "k1", "k2", "k3"]
    assert {e.batch_id for e in entries} == {job.name} and sb.duplicates() == {}
    assert gemini.files.download(file=result_name) == gemini.files.download(file=result_file)


def test_chunked_upload(gemini: genai.Client, sb: Sandbox) -> None:
    start = httpx.post(
        f"{sb.gemini_base_url}/upload/v1beta/files",
        json={"file": {"displayName": "chunks"}},
        headers={
            "x-goog-api-key": "k",
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": "6",
            "X-Goog-Upload-Header-Content-Type": "text/plain",
        },
    )
    url = start.headers["x-goog-upload-url"]
    part = httpx.post(
        url, content=b"abc", headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"}
    )
    assert part.headers["x-goog-upload-status"] == "active"
    headers = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "3"}
    done = httpx.post(url, content=b"def", headers=headers)
    assert done.headers["x-goog-upload-status"] == "final"
    record = done.json()["file"]
    assert (
        record["sizeBytes"] == "6" and record["mimeType"] == "text/plain" and record["source"] == "UPLOADED"
    )
    with pytest.raises(errors.ClientError):  # uploaded files cannot be downloaded
        gemini.files.download(file=record["name"])
    gemini.files.delete(name=record["name"])
    with pytest.raises(errors.ClientError) as caught:
        gemini.files.get(name=record["name"])
    assert caught.value.code == 403


def test_file_batch_with_bad_jsonl_fails(gemini: genai.Client) -> None:
    uploaded = gemini.files.upload(file=io.BytesIO(b"not json\n"), config={"mime_type": "application/jsonl"})
    job = wait_gemini(gemini, gemini.batches.create(model=GEMINI_MODEL, src=uploaded.name).name)  # type: ignore[arg-type]
    assert job.state == types.JobState.JOB_STATE_FAILED and job.dest is None


def test_list_get_cancel_delete(gemini: genai.Client, sb: Sandbox) -> None:
    sb.configure(batch_processing_s=30)
    names = [gemini.batches.create(model=GEMINI_MODEL, src=inline(2)).name for _ in range(3)]
    listed = [job.name for job in gemini.batches.list(config={"page_size": 2})]
    assert listed == list(reversed(names))  # newest first, across pages
    raw = httpx.get(
        f"{sb.gemini_base_url}/v1/batches", params={"pageSize": 2}, headers={"x-goog-api-key": "k"}
    )
    assert [op["name"] for op in raw.json()["operations"]] == names[:0:-1]
    assert raw.json()["nextPageToken"] == names[1]
    gemini.batches.cancel(name=names[0])  # type: ignore[arg-type]
    time.sleep(0.1)
    cancelled = gemini.batches.get(name=names[0])  # type: ignore[arg-type]
    assert cancelled.state == types.JobState.JOB_STATE_CANCELLED
    assert [r.error.code for r in cancelled.dest.inlined_responses] == [1, 1]  # type: ignore[union-attr]
    with pytest.raises(errors.ClientError) as twice:
        gemini.batches.cancel(name=names[0])  # type: ignore[arg-type]
    assert twice.value.status == "FAILED_PRECONDITION"
    gemini.batches.delete(name=names[1])  # type: ignore[arg-type]
    with pytest.raises(errors.ClientError) as gone:
        gemini.batches.get(name=names[1])  # type: ignore[arg-type]
    assert gone.value.code == 404 and gone.value.status == "NOT_FOUND"
    with pytest.raises(errors.ClientError) as unknown:
        gemini.batches.get(name="batches/doesnotexist")
    assert unknown.value.code == 404
    assert sb.ledger() == []


def test_expiry_and_create_429(gemini: genai.Client, sb: Sandbox) -> None:
    sb.configure(batch_expire_after_fraction=0.5, batch_create_429=1)
    with pytest.raises(errors.ClientError) as limited:
        gemini.batches.create(model=GEMINI_MODEL, src=inline(4))  # type: ignore[arg-type]
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"
    job = wait_gemini(gemini, gemini.batches.create(model=GEMINI_MODEL, src=inline(4)).name)  # type: ignore[arg-type]
    assert job.state == types.JobState.JOB_STATE_EXPIRED
    results = job.dest.inlined_responses  # type: ignore[union-attr]
    assert [r.error.code if r.error else 0 for r in results] == [0, 0, 4, 4]
    assert len(sb.ledger()) == 2


async def test_async_batches(gemini: genai.Client, sb: Sandbox) -> None:
    job = await gemini.aio.batches.create(model=GEMINI_MODEL, src=inline(2))  # type: ignore[arg-type]
    assert job.name
    for _ in range(500):
        job = await gemini.aio.batches.get(name=job.name)
        if job.done:
            break
        await __import__("asyncio").sleep(0.02)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    listed = [j.name async for j in await gemini.aio.batches.list()]
    assert listed == [job.name]
    await gemini.aio.batches.delete(name=job.name)  # type: ignore[arg-type]
    assert len(sb.ledger()) == 2


def test_openai_keeps_shared_paths(gemini: genai.Client, sb: Sandbox) -> None:
    gemini.batches.create(model=GEMINI_MODEL, src=inline(1))  # type: ignore[arg-type]
    openai_list = httpx.get(f"{sb.openai_base_url}/batches", headers={"authorization": "Bearer sk-test"})
    assert openai_list.status_code == 200 and openai_list.json()["data"] == []
    google_list = httpx.get(f"{sb.gemini_base_url}/v1/batches", headers={"x-goog-api-key": "k"})
    assert len(google_list.json()["operations"]) == 1
