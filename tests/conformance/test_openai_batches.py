"""OpenAI Batch API against the sandbox with the official SDK."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from batchain.sandbox import Sandbox
from batchain.sandbox.ledger import request_hash
from tests.conformance.helpers import (
    OPENAI_MODEL,
    batch_line,
    chat_body,
    jsonl,
    read_lines,
    simple_lines,
    start_batch,
    upload,
    wait_openai,
)


def test_happy_path_lifecycle(oai: openai.OpenAI, sb: Sandbox) -> None:
    sb.configure(batch_processing_s=0.3)
    lines = simple_lines(12)
    batch = start_batch(oai, lines, metadata={"job": "nightly"})
    assert batch.id.startswith("batch_") and len(batch.id) == 38
    assert batch.object == "batch"
    assert batch.status == "validating"
    assert batch.request_counts.total == 0
    assert batch.errors is None and batch.output_file_id is None and batch.usage is None
    assert batch.expires_at == batch.created_at + 86400
    assert batch.metadata == {"job": "nightly"}
    seen = {batch.status}
    partial = False
    while batch.status not in ("completed", "failed"):
        time.sleep(0.02)
        batch = oai.batches.retrieve(batch.id)
        seen.add(batch.status)
        counts = batch.request_counts
        if batch.status == "in_progress" and 0 < counts.completed < counts.total:
            partial = True
    assert {"validating", "in_progress", "completed"} <= seen
    assert partial, "request_counts should grow progressively"
    assert batch.status == "completed"
    assert batch.model == OPENAI_MODEL
    assert batch.request_counts.total == 12 and batch.request_counts.completed == 12
    assert batch.error_file_id is None and batch.errors is None
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert getattr(batch, stamp) >= batch.created_at
    assert batch.failed_at is None and batch.cancelled_at is None
    output = read_lines(oai, batch.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"req-{i}" for i in range(12))
    first = output[0]
    assert set(first) == {"id", "custom_id", "response", "error"}
    assert first["id"].startswith("batch_req_") and first["error"] is None
    assert first["response"]["status_code"] == 200
    assert first["response"]["request_id"].startswith("req_")
    assert first["response"]["body"]["object"] == "chat.completion"
    total_in = sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in output)
    total_out = sum(line["response"]["body"]["usage"]["completion_tokens"] for line in output)
    assert batch.usage is not None
    assert (batch.usage.input_tokens, batch.usage.output_tokens) == (total_in, total_out)
    assert batch.usage.total_tokens == total_in + total_out
    output_file = oai.files.retrieve(batch.output_file_id)
    assert output_file.purpose == "batch_output"
    assert output_file.filename.endswith("_output.jsonl")
    # billing: batch tier, linked to batch and custom_id, same hash as realtime
    entries = sb.ledger()
    assert len(entries) == 12 and {e.tier for e in entries} == {"batch"}
    by_custom = {e.custom_id: e for e in entries}
    assert by_custom["req-3"].batch_id == batch.id
    assert by_custom["req-3"].request_hash == request_hash(lines[3]["body"])
    summary = sb.ledger_summary()["openai"][OPENAI_MODEL]["batch"]
    assert summary["requests"] == 12 and summary["input_tokens"] == total_in


def test_batch_reply_equals_realtime_reply(oai: openai.OpenAI) -> None:
    body = chat_body("Classify into one of: cats, dogs. Text: my puppy barks")
    realtime = oai.chat.completions.create(**body)
    batch = wait_openai(oai, start_batch(oai, [batch_line("only", body)]).id)
    line = read_lines(oai, batch.output_file_id)[0]
    assert line["response"]["body"]["choices"][0]["message"]["content"] == (
        realtime.choices[0].message.content
    )


def test_shuffled_and_ordered_results(oai: openai.OpenAI, sb: Sandbox) -> None:
    sb.configure(batch_processing_s=0.0)
    ids = [f"req-{i}" for i in range(30)]
    shuffled = wait_openai(oai, start_batch(oai, simple_lines(30)).id)
    assert [line["custom_id"] for line in read_lines(oai, shuffled.output_file_id)] != ids
    sb.configure(shuffle_results=False)
    ordered = wait_openai(oai, start_batch(oai, simple_lines(30)).id)
    assert [line["custom_id"] for line in read_lines(oai, ordered.output_file_id)] == ids


def test_per_request_errors_and_all_failed_still_completed(oai: openai.OpenAI) -> None:
    lines = [
        batch_line("ok", chat_body("fine")),
        batch_line("bad", chat_body("broken [[fail:400]]")),
        batch_line("nomsg", {"model": OPENAI_MODEL}),
        batch_line("boom", chat_body("server [[fail:500]]")),
    ]
    batch = wait_openai(oai, start_batch(oai, lines).id)
    assert batch.status == "completed"
    assert batch.request_counts.completed == 1 and batch.request_counts.failed == 3
    assert batch.errors is None
    errors = {line["custom_id"]: line for line in read_lines(oai, batch.error_file_id)}
    assert errors["bad"]["response"]["status_code"] == 400
    assert errors["bad"]["error"] is None
    assert errors["nomsg"]["response"]["body"]["error"]["param"] == "messages"
    assert errors["boom"]["response"]["status_code"] == 500
    assert errors["boom"]["response"]["body"]["error"]["type"] == "server_error"
    all_failed = wait_openai(oai, start_batch(oai, [batch_line("x", chat_body("no [[fail:400]]"))]).id)
    assert all_failed.status == "completed"
    assert all_failed.output_file_id is None and all_failed.error_file_id is not None
    assert all_failed.request_counts.failed == 1


def _failed(oai: openai.OpenAI, data: bytes) -> list[dict[str, object]]:
    file_id = upload(oai, data)
    batch = oai.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_openai(oai, batch.id)
    assert batch.status == "failed"
    assert batch.failed_at is not None and batch.in_progress_at is None
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.request_counts.total == 0
    assert batch.errors is not None and batch.errors.object == "list"
    return [e.model_dump() for e in batch.errors.data or []]


def test_validation_invalid_json_line(oai: openai.OpenAI) -> None:
    data = jsonl([batch_line("a", chat_body("x")), "{not json", "[1, 2]"])
    errors = _failed(oai, data)
    assert errors == [
        {
            "code": "invalid_json_line",
            "line": 2,
            "message": "This line is not parseable as valid JSON.",
            "param": None,
        },
        {
            "code": "invalid_json_line",
            "line": 3,
            "message": "This line is not parseable as valid JSON.",
            "param": None,
        },
    ]


@pytest.mark.parametrize(
    ("second", "code", "param"),
    [
        (batch_line("a", chat_body("dup")), "duplicate_custom_id", "custom_id"),
        (batch_line("b", chat_body("x"), url="/v1/embeddings"), "url_mismatch", "url"),
        (batch_line("b", chat_body("x", model="gpt-4o")), "model_mismatch", "body.model"),
        (
            {"custom_id": "b", "url": "/v1/chat/completions", "body": {}},
            "missing_required_parameter",
            "method",
        ),
        ({"custom_id": "b", "method": "POST", "body": {}}, "missing_required_parameter", "url"),
        (
            {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions"},
            "missing_required_parameter",
            "body",
        ),
        (
            {"method": "POST", "url": "/v1/chat/completions", "body": {}},
            "missing_required_parameter",
            "custom_id",
        ),
        (batch_line("b", chat_body("x"), method="GET"), "invalid_method", "method"),
    ],
)
def test_validation_line_errors(oai: openai.OpenAI, second: dict[str, object], code: str, param: str) -> None:
    errors = _failed(oai, jsonl([batch_line("a", chat_body("first")), second]))
    assert len(errors) == 1
    assert errors[0]["code"] == code and errors[0]["line"] == 2 and errors[0]["param"] == param


def test_validation_empty_and_too_many(oai: openai.OpenAI, sb: Sandbox) -> None:
    assert _failed(oai, b"\n\n")[0]["code"] == "empty_file"
    sb.configure(openai_max_batch_requests=3)
    errors = _failed(oai, jsonl(simple_lines(4)))
    assert errors[0]["code"] == "too_many_tasks" and errors[0]["line"] is None
    sb.configure(batch_fail_validation=True)
    assert _failed(oai, jsonl(simple_lines(1)))


def test_enqueued_token_limit_fails_validation_with_token_limit_exceeded(
    oai: openai.OpenAI, sb: Sandbox
) -> None:
    # each "hello number i" line is 9 prompt tokens (3 priming + 3 message + 3 words)
    sb.configure(openai_enqueued_token_limit=40, batch_processing_s=1.0)
    first = start_batch(oai, simple_lines(4))  # 36 tokens: fits
    over = start_batch(oai, simple_lines(1, "over"))  # 36 + 9 > 40
    other_model = start_batch(oai, [batch_line("m", chat_body("hello there", model="gpt-4o"))])
    refused = wait_openai(oai, over.id)
    assert refused.status == "failed" and refused.failed_at is not None
    assert refused.in_progress_at is None and refused.output_file_id is None
    assert refused.errors is not None
    (error,) = refused.errors.data
    assert error.code == "token_limit_exceeded" and error.line is None and error.param is None
    assert error.message is not None
    assert error.message.startswith(f"Enqueued token limit reached for {OPENAI_MODEL} in organization")
    assert "Limit: 40 enqueued tokens" in error.message
    assert wait_openai(oai, other_model.id).status == "completed"  # the limit is per model
    assert wait_openai(oai, first.id).status == "completed"
    # the first batch ended: its tokens left the queue
    assert wait_openai(oai, start_batch(oai, simple_lines(4, "after")).id).status == "completed"
    alone = wait_openai(oai, start_batch(oai, simple_lines(5, "alone")).id)  # 45 > 40 on its own
    assert alone.status == "failed" and alone.errors.data[0].code == "token_limit_exceeded"
    assert {e.custom_id for e in sb.ledger() if e.batch_id in (over.id, alone.id)} == set()
    assert len(sb.ledger()) == 4 + 1 + 4


def test_create_errors(oai: openai.OpenAI, sb: Sandbox) -> None:
    file_id = upload(oai, jsonl(simple_lines(1)))
    headers = {"authorization": "Bearer sk-test"}
    url = sb.openai_base_url + "/batches"
    full = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    for name in ("input_file_id", "endpoint", "completion_window"):
        body = {k: v for k, v in full.items() if k != name}
        error = httpx.post(url, json=body, headers=headers).json()["error"]
        assert error == {
            "message": f"Missing required parameter: '{name}'.",
            "type": "invalid_request_error",
            "param": name,
            "code": "missing_required_parameter",
        }
    cases = [
        ({"completion_window": "48h"}, "completion_window"),
        ({"endpoint": "/v1/nope"}, "endpoint"),
        ({"endpoint": "/v1/moderations"}, "endpoint"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 5}},
            "output_expires_after.seconds",
        ),
    ]
    for change, param in cases:
        response = httpx.post(url, json={**full, **change}, headers=headers)
        assert response.status_code == 400, change
        assert response.json()["error"]["param"] == param
    with pytest.raises(openai.NotFoundError):
        oai.batches.create(
            input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
        )
    import io

    other = oai.files.create(file=("x.txt", io.BytesIO(b"x")), purpose="user_data").id
    with pytest.raises(openai.BadRequestError) as info:
        oai.batches.create(input_file_id=other, endpoint="/v1/chat/completions", completion_window="24h")
    assert info.value.param == "input_file_id"
    assert httpx.post(url, content=b"{oops", headers=headers).status_code == 400
    assert httpx.post(url, json=full).status_code == 401


def test_batch_create_429_retried_by_sdk(sb: Sandbox) -> None:
    sb.configure(batch_create_429=1)
    with openai.OpenAI(base_url=sb.openai_base_url, api_key="sk-test", max_retries=2) as client:
        file_id = upload(client, jsonl(simple_lines(1)))
        raw = client.batches.with_raw_response.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert raw.retries_taken == 1
    assert raw.parse().status == "validating"
    assert sb.ledger_summary()["openai"]["*"]["batch"]["rate_limited"] == 1


def test_cancel_midway_keeps_partial_results(oai: openai.OpenAI, sb: Sandbox) -> None:
    sb.configure(batch_processing_s=1.0, cancel_delay_s=0.05)
    batch = start_batch(oai, simple_lines(20))
    while batch.request_counts.completed < 4:
        time.sleep(0.02)
        batch = oai.batches.retrieve(batch.id)
    cancelling = oai.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    batch = wait_openai(oai, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    output = read_lines(oai, batch.output_file_id)
    errors = read_lines(oai, batch.error_file_id)
    assert 4 <= len(output) < 20
    assert len(output) + len(errors) == 20
    assert all(e["response"] is None for e in errors)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert batch.request_counts.completed == len(output)
    assert batch.request_counts.failed == len(errors)
    assert len(sb.ledger()) == len(output)
    with pytest.raises(openai.BadRequestError):
        oai.batches.cancel(batch.id)


def test_cancel_while_validating(oai: openai.OpenAI, sb: Sandbox) -> None:
    sb.configure(batch_validating_s=0.5, cancel_delay_s=0.5)  # the second cancel finds it cancelling
    batch = start_batch(oai, simple_lines(3))
    assert oai.batches.cancel(batch.id).status == "cancelling"
    assert oai.batches.cancel(batch.id).status == "cancelling"  # idempotent
    batch = wait_openai(oai, batch.id)
    assert batch.status == "cancelled"
    assert batch.output_file_id is None and batch.error_file_id is None
    assert sb.ledger() == []


def test_expiry_with_partial_results(oai: openai.OpenAI, sb: Sandbox) -> None:
    sb.configure(batch_expire_after_fraction=0.5)
    batch = wait_openai(oai, start_batch(oai, simple_lines(10)).id)
    assert batch.status == "expired" and batch.expired_at is not None
    output = read_lines(oai, batch.output_file_id)
    errors = read_lines(oai, batch.error_file_id)
    assert len(output) == 5 and len(errors) == 5
    assert errors[0]["error"] == {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }
    assert batch.request_counts.completed == 5 and batch.request_counts.failed == 5
    assert len(sb.ledger()) == 5


def test_dropped_items_and_item_errors(oai: openai.OpenAI, sb: Sandbox) -> None:
    sb.configure(batch_drop_rate=0.5, seed=3)
    batch = wait_openai(oai, start_batch(oai, simple_lines(20)).id)
    output = read_lines(oai, batch.output_file_id)
    assert 0 < len(output) < 20
    assert batch.request_counts.completed == 20
    assert len(sb.ledger()) == len(output)
    sb.configure(batch_drop_rate=0.0, batch_item_error_rate=1.0)
    failed = wait_openai(oai, start_batch(oai, simple_lines(3)).id)
    codes = {line["response"]["status_code"] for line in read_lines(oai, failed.error_file_id)}
    assert codes == {500} and failed.status == "completed"


def test_header_overrides_apply_to_one_batch(oai: openai.OpenAI, sb: Sandbox) -> None:
    batch = start_batch(oai, simple_lines(3), extra_headers={"x-sandbox-batch-item-error-rate": "1"})
    batch = wait_openai(oai, batch.id)
    assert batch.request_counts.failed == 3
    assert sb.config.batch_item_error_rate == 0


def test_flaky_directive_across_batches(oai: openai.OpenAI) -> None:
    lines = [batch_line("f", chat_body("sometimes [[flaky:1]]"))]
    first = wait_openai(oai, start_batch(oai, lines).id)
    assert first.request_counts.failed == 1
    second = wait_openai(oai, start_batch(oai, lines).id)
    assert second.request_counts.completed == 1


def test_prompt_cache_in_batch(oai: openai.OpenAI) -> None:
    system = {"role": "system", "content": "Shared instructions for every item in the batch. " * 150}
    lines = [
        batch_line(
            f"c{i}",
            {"model": OPENAI_MODEL, "messages": [system, {"role": "user", "content": str(i)}]},
        )
        for i in range(4)
    ]
    batch = wait_openai(oai, start_batch(oai, lines).id)
    assert batch.usage is not None
    # 3 + 9 x 150 = 1,353 system tokens, cached in steps of 128 by the 3 items after the first
    assert batch.usage.input_tokens_details.cached_tokens == 3 * 1280


def test_list_and_not_found(oai: openai.OpenAI) -> None:
    ids = [start_batch(oai, simple_lines(1)).id for _ in range(3)]
    page = oai.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more is True
    assert [b.id for b in oai.batches.list(limit=2)] == ids[::-1]
    rest = oai.batches.list(after=ids[1])
    assert [b.id for b in rest.data] == [ids[0]] and rest.has_more is False
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve("batch_doesnotexist")
    with pytest.raises(openai.NotFoundError):
        oai.batches.cancel("batch_doesnotexist")


def test_output_expires_after(oai: openai.OpenAI) -> None:
    batch = start_batch(oai, simple_lines(1), output_expires_after={"anchor": "created_at", "seconds": 7200})
    batch = wait_openai(oai, batch.id)
    output = oai.files.retrieve(batch.output_file_id)  # type: ignore[arg-type]
    assert output.expires_at == output.created_at + 7200


def test_json_lines_with_crlf_and_unicode(oai: openai.OpenAI) -> None:
    line = json.dumps(batch_line("u", chat_body("héllo wörld ✓")), ensure_ascii=False)
    batch = wait_openai(oai, start_batch(oai, [line + "\r"]).id)
    assert batch.status == "completed"
    content = read_lines(oai, batch.output_file_id)[0]["response"]["body"]["choices"][0]
    assert "héllo wörld ✓" in content["message"]["content"]
