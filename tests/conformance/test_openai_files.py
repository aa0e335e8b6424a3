"""OpenAI Files API against the sandbox with the official SDK."""

from __future__ import annotations

import io

import httpx
import openai
import pytest

from batchain.sandbox import Sandbox
from tests.conformance.helpers import jsonl, simple_lines, upload

THIRTY_DAYS = 30 * 24 * 3600


def test_upload_retrieve_content_delete(oai: openai.OpenAI) -> None:
    data = jsonl(simple_lines(3))
    created = oai.files.create(file=("in.jsonl", io.BytesIO(data), "application/jsonl"), purpose="batch")
    assert created.id.startswith("file-") and len(created.id) == 27
    assert created.object == "file"
    assert created.bytes == len(data)
    assert created.filename == "in.jsonl"
    assert created.purpose == "batch"
    assert created.status == "processed"
    assert created.expires_at == created.created_at + THIRTY_DAYS
    assert oai.files.retrieve(created.id) == created
    assert oai.files.content(created.id).read() == data
    deleted = oai.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True and deleted.object == "file"
    with pytest.raises(openai.NotFoundError) as info:
        oai.files.retrieve(created.id)
    assert info.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        oai.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        oai.files.delete(created.id)


def test_expires_after(oai: openai.OpenAI) -> None:
    created = oai.files.create(
        file=("a.jsonl", io.BytesIO(b"{}\n")),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert created.expires_at == created.created_at + 3600
    with pytest.raises(openai.BadRequestError):
        oai.files.create(
            file=("a.jsonl", io.BytesIO(b"{}\n")),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 10},
        )
    other = oai.files.create(file=("notes.txt", io.BytesIO(b"hi")), purpose="user_data")
    assert other.expires_at is None


def test_batch_purpose_requires_jsonl(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.files.create(file=("data.csv", io.BytesIO(b"a,b")), purpose="batch")
    assert info.value.body == {
        "message": "Invalid file format for Batch API. Must be .jsonl",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_invalid_purpose_and_missing_fields(sb: Sandbox) -> None:
    headers = {"authorization": "Bearer sk-test"}
    url = sb.openai_base_url + "/files"
    bad = httpx.post(url, headers=headers, files={"file": ("a.jsonl", b"{}")}, data={"purpose": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_value"
    no_purpose = httpx.post(url, headers=headers, files={"file": ("a.jsonl", b"{}")})
    assert no_purpose.json()["error"]["param"] == "purpose"
    no_file = httpx.post(url, headers=headers, data={"purpose": "batch"}, files={"x": ("a", b"")})
    assert no_file.json()["error"]["param"] == "file"
    not_multipart = httpx.post(url, headers=headers, json={"purpose": "batch"})
    assert not_multipart.status_code == 400
    assert httpx.post(url, files={"file": ("a.jsonl", b"{}")}).status_code == 401


def test_file_too_large(sb: Sandbox, oai: openai.OpenAI) -> None:
    sb.configure(openai_max_batch_bytes=100)
    with pytest.raises(openai.BadRequestError) as info:
        oai.files.create(file=("big.jsonl", io.BytesIO(b"x" * 200)), purpose="batch")
    assert info.value.body["message"] == "File is too large."  # type: ignore[index]
    # the batch limit (200 MB; knob openai_max_batch_bytes) is for batch files only
    oai.files.create(file=("big.txt", io.BytesIO(b"x" * 200)), purpose="user_data")


def test_list_pagination(oai: openai.OpenAI) -> None:
    ids = [upload(oai, b"{}\n", f"f{i}.jsonl") for i in range(5)]
    oai.files.create(file=("u.txt", io.BytesIO(b"x")), purpose="user_data")
    page = oai.files.list(limit=2, purpose="batch")
    assert [f.id for f in page.data] == ids[::-1][:2]
    assert page.has_more is True
    assert [f.id for f in oai.files.list(limit=2, purpose="batch")] == ids[::-1]  # auto-paging
    assert [f.id for f in oai.files.list(purpose="batch", order="asc")] == ids
    last = oai.files.list(purpose="batch", after=ids[1], order="desc")
    assert [f.id for f in last.data] == [ids[0]] and last.has_more is False
    everything = oai.files.list()
    assert len(everything.data) == 6 and everything.has_more is False
    with pytest.raises(openai.BadRequestError):
        oai.files.list(order="sideways")  # type: ignore[arg-type]
