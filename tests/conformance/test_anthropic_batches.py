"""Anthropic Message Batches against the sandbox with the official SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from batchain.sandbox import Sandbox
from batchain.sandbox.ledger import request_hash
from tests.conformance.helpers import ANTHROPIC_MODEL, anthropic_request, wait_anthropic


def requests(count: int, prefix: str = "hello") -> list[dict[str, object]]:
    return [anthropic_request(f"req-{i}", f"{prefix} number {i}") for i in range(count)]


def test_happy_path(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    sb.configure(batch_processing_s=0.2)
    reqs = requests(6)
    batch = ant.messages.batches.create(requests=reqs)  # type: ignore[arg-type]
    assert batch.id.startswith("msgbatch_01")
    assert batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 6 and batch.request_counts.succeeded == 0
    assert batch.results_url is None and batch.ended_at is None
    assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(86400)
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        list(ant.messages.batches.results(batch.id))
    time.sleep(0.12)
    mid = ant.messages.batches.retrieve(batch.id)
    assert mid.processing_status == "in_progress"
    assert mid.request_counts.processing == 6  # counts move only once the batch ends
    batch = wait_anthropic(ant, batch.id)
    assert batch.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": 6,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert batch.ended_at is not None
    assert batch.results_url == f"{sb.url}/v1/messages/batches/{batch.id}/results"
    results = list(ant.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == [f"req-{i}" for i in range(6)]
    message = results[0].result.message  # type: ignore[union-attr]
    assert results[0].result.type == "succeeded"
    assert message.usage.service_tier == "batch"
    assert message.content[0].text.startswith(f"Sandbox reply ({ANTHROPIC_MODEL})")  # type: ignore[union-attr]
    entries = sb.ledger()
    assert len(entries) == 6 and {e.tier for e in entries} == {"batch"}
    by_id = {e.custom_id: e for e in entries}
    assert by_id["req-2"].batch_id == batch.id
    assert by_id["req-2"].request_hash == request_hash(reqs[2]["params"])  # type: ignore[arg-type]


def test_results_raw_jsonl(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    batch = wait_anthropic(ant, ant.messages.batches.create(requests=requests(3)).id)  # type: ignore[arg-type]
    response = httpx.get(batch.results_url, headers={"x-api-key": "k"})
    assert response.status_code == 200
    assert response.text.endswith("\n") and "\n\n" not in response.text
    assert len(response.text.splitlines()) == 3


def test_errored_results_are_async_validation(ant: anthropic.Anthropic) -> None:
    reqs = [
        anthropic_request("good", "fine"),
        {
            "custom_id": "no-max",
            "params": {"model": ANTHROPIC_MODEL, "messages": [{"role": "user", "content": "x"}]},
        },
        anthropic_request("fail", "nope [[fail:400]]"),
        anthropic_request("boom", "server [[fail:500]]"),
        anthropic_request("streamy", "x", stream=True),
    ]
    batch = wait_anthropic(ant, ant.messages.batches.create(requests=reqs).id)  # type: ignore[arg-type]
    assert batch.request_counts.succeeded == 1 and batch.request_counts.errored == 4
    results = {r.custom_id: r.result for r in ant.messages.batches.results(batch.id)}
    error = results["no-max"].error  # type: ignore[union-attr]
    assert error.type == "error"
    assert error.error.type == "invalid_request_error"
    assert error.error.message == "max_tokens: Field required"
    assert results["boom"].error.error.type == "api_error"  # type: ignore[union-attr]
    assert results["streamy"].type == "errored"


@pytest.mark.parametrize(
    ("reqs", "message"),
    [
        ([], "requests: List should have at least 1 item after validation, not 0"),
        (
            [anthropic_request("x" * 65, "hi")],
            "requests.0.custom_id: String should have at most 64 characters",
        ),
        (
            [anthropic_request("bad id!", "hi")],
            "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
        ),
        (
            [anthropic_request("a", "hi"), anthropic_request("a", "ho")],
            "requests.1.custom_id: Duplicate custom_id 'a'. "
            "Each request in a batch must have a unique custom_id.",
        ),
        ([{"custom_id": "a"}], "requests.0.params: Field required"),
        ([{"params": {}}], "requests.0.custom_id: Field required"),
        (
            [{"custom_id": "a", "params": []}],
            "requests.0.params: Input should be a valid dictionary",
        ),
    ],
)
def test_create_validation(ant: anthropic.Anthropic, reqs: list[object], message: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        ant.messages.batches.create(requests=reqs)  # type: ignore[arg-type]
    body = info.value.body
    assert body["type"] == "error"  # type: ignore[index]
    assert body["error"] == {"type": "invalid_request_error", "message": message}  # type: ignore[index]


def test_create_limits(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    sb.configure(anthropic_max_batch_requests=2)
    with pytest.raises(anthropic.BadRequestError, match="at most 2 items"):
        ant.messages.batches.create(requests=requests(3))  # type: ignore[arg-type]
    sb.configure(anthropic_max_batch_bytes=100)
    with pytest.raises(anthropic.APIStatusError) as info:
        ant.messages.batches.create(requests=requests(2))  # type: ignore[arg-type]
    assert info.value.status_code == 413
    assert info.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    missing = httpx.post(sb.url + "/v1/messages/batches", json={}, headers={"x-api-key": "k"})
    assert missing.json()["error"]["message"] == "requests: Field required"
    sb.configure(anthropic_max_batch_requests=10, anthropic_max_batch_bytes=1 << 20)
    sb.configure(batch_fail_validation=True)
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.create(requests=requests(1))  # type: ignore[arg-type]
    assert sb.ledger() == []


def test_a_batch_over_the_size_limit_is_refused_with_413_even_without_content_length(sb: Sandbox) -> None:
    sb.configure(anthropic_max_batch_bytes=300)
    body = json.dumps({"requests": requests(3)}).encode()
    assert len(body) > 300

    def chunks() -> Iterator[bytes]:
        yield body  # streamed: sent chunked, with no content-length

    headers = {"x-api-key": "k", "content-type": "application/json"}
    refused = httpx.post(sb.url + "/v1/messages/batches", content=chunks(), headers=headers)
    assert refused.status_code == 413
    assert refused.json()["error"]["type"] == "request_too_large"
    sb.configure(anthropic_max_batch_bytes=len(body))
    assert httpx.post(sb.url + "/v1/messages/batches", content=body, headers=headers).status_code == 200


def test_the_processing_queue_limit_refuses_creates_with_429_until_batches_end(
    ant: anthropic.Anthropic, sb: Sandbox
) -> None:
    sb.configure(anthropic_queue_limit=5, batch_processing_s=0.3)
    first = ant.messages.batches.create(requests=requests(3))  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as info:
        ant.messages.batches.create(requests=requests(3, "more"))  # type: ignore[arg-type]
    error = info.value.body["error"]  # type: ignore[index]
    assert error["type"] == "rate_limit_error"
    assert "processing queue" in error["message"] and "5 requests" in error["message"]
    assert info.value.response.headers["retry-after"]
    assert sb.ledger_summary()["anthropic"]["*"]["batch"]["rate_limited"] == 1
    ant.messages.batches.create(requests=requests(2, "fits"))  # type: ignore[arg-type]
    wait_anthropic(ant, first.id)
    ended = ant.messages.batches.create(requests=requests(3, "later"))  # type: ignore[arg-type]
    assert ended.processing_status == "in_progress"  # the first batch's 3 left the queue
    with pytest.raises(anthropic.RateLimitError):
        ant.messages.batches.create(requests=requests(6, "alone"))  # type: ignore[arg-type]


def test_create_429_retried(sb: Sandbox) -> None:
    sb.configure(batch_create_429=1)
    with anthropic.Anthropic(base_url=sb.url, api_key="k", max_retries=2) as client:
        raw = client.messages.batches.with_raw_response.create(requests=requests(1))  # type: ignore[arg-type]
    assert raw.retries_taken == 1
    assert sb.ledger_summary()["anthropic"]["*"]["batch"]["rate_limited"] == 1


def test_cancel_midway(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    # canceling lasts long enough for the delete below to find it, however loaded the machine
    sb.configure(batch_processing_s=1.0, batch_validating_s=0.0, cancel_delay_s=0.5)
    batch = ant.messages.batches.create(requests=requests(20))  # type: ignore[arg-type]
    time.sleep(0.3)
    canceling = ant.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.delete(batch.id)  # must end first
    batch = wait_anthropic(ant, batch.id)
    counts = batch.request_counts
    assert 0 < counts.succeeded < 20 and counts.canceled == 20 - counts.succeeded
    results = list(ant.messages.batches.results(batch.id))
    assert len(results) == 20
    assert sum(r.result.type == "canceled" for r in results) == counts.canceled
    assert len(sb.ledger()) == counts.succeeded
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.cancel(batch.id)


def test_expiry_and_drops(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    sb.configure(batch_expire_after_fraction=0.25)
    batch = wait_anthropic(ant, ant.messages.batches.create(requests=requests(8)).id)  # type: ignore[arg-type]
    assert batch.request_counts.succeeded == 2 and batch.request_counts.expired == 6
    types = sorted(r.result.type for r in ant.messages.batches.results(batch.id))
    assert types == ["expired"] * 6 + ["succeeded"] * 2
    sb.configure(batch_expire_after_fraction=None, batch_drop_rate=0.5, seed=1)
    dropped = wait_anthropic(ant, ant.messages.batches.create(requests=requests(20)).id)  # type: ignore[arg-type]
    assert dropped.request_counts.succeeded == 20
    assert 0 < len(list(ant.messages.batches.results(dropped.id))) < 20
    sb.configure(batch_drop_rate=0.0, batch_item_error_rate=1.0)
    errored = wait_anthropic(ant, ant.messages.batches.create(requests=requests(2)).id)  # type: ignore[arg-type]
    assert errored.request_counts.errored == 2
    result = next(iter(ant.messages.batches.results(errored.id))).result
    assert result.error.error.type == "api_error"  # type: ignore[union-attr]


def test_delete_and_not_found(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    batch = wait_anthropic(ant, ant.messages.batches.create(requests=requests(1)).id)  # type: ignore[arg-type]
    deleted = ant.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError) as info:
        ant.messages.batches.retrieve(batch.id)
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    early = httpx.get(sb.url + "/v1/messages/batches/msgbatch_nope/results", headers={"x-api-key": "k"})
    assert early.status_code == 404


def test_results_before_end_is_an_error(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    sb.configure(batch_processing_s=5.0)
    batch = ant.messages.batches.create(requests=requests(2))  # type: ignore[arg-type]
    response = httpx.get(f"{sb.url}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": "k"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_list_pagination(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    ids = [ant.messages.batches.create(requests=requests(1)).id for _ in range(5)]  # type: ignore[arg-type]
    newest = ids[::-1]
    page = ant.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest[:2]
    assert page.has_more is True
    assert page.first_id == newest[0] and page.last_id == newest[1]
    assert [b.id for b in ant.messages.batches.list(limit=2)] == newest  # auto-paging
    after = ant.messages.batches.list(limit=2, after_id=newest[3])
    assert [b.id for b in after.data] == [newest[4]] and after.has_more is False
    before = ant.messages.batches.list(limit=2, before_id=newest[3])
    assert [b.id for b in before.data] == newest[1:3] and before.has_more is True
    assert httpx.get(sb.url + "/v1/messages/batches?limit=0", headers={"x-api-key": "k"}).status_code == 400


def test_beta_query_and_auth(sb: Sandbox) -> None:
    body = {"requests": requests(1)}
    ok = httpx.post(
        sb.url + "/v1/messages/batches?beta=true",
        json=body,
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01", "anthropic-beta": "x"},
    )
    assert ok.status_code == 200
    assert ok.json()["processing_status"] == "in_progress"
    assert httpx.post(sb.url + "/v1/messages/batches", json=body).status_code == 401
    bad = httpx.post(sb.url + "/v1/messages/batches", content=b"[", headers={"x-api-key": "k"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_cache_control_in_batch(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    system = [
        {
            "type": "text",
            "text": "Shared batch instructions here. " * 1000,  # 5,000 tokens: Haiku 4.5 caches 4,096+
            "cache_control": {"type": "ephemeral"},
        }
    ]
    sb.configure(shuffle_results=False)

    def run(n: int, tag: str) -> list[Any]:
        reqs = [anthropic_request(f"{tag}{i}", f"{tag} item {i}", system=system) for i in range(n)]
        batch = wait_anthropic(ant, ant.messages.batches.create(requests=reqs).id)  # type: ignore[arg-type]
        return [r.result.message.usage for r in ant.messages.batches.results(batch.id)]  # type: ignore[union-attr]

    # a realtime call's cache is not a batch's
    ant.messages.create(**anthropic_request("r", "realtime", system=system)["params"])
    # the requests of one batch run in parallel: each writes, none reads another's write
    first = run(3, "a")
    assert [u.cache_creation_input_tokens for u in first] == [5003] * 3
    assert [u.cache_read_input_tokens for u in first] == [0] * 3
    # a later batch reads what an earlier one wrote
    second = run(2, "b")
    assert [u.cache_read_input_tokens for u in second] == [5003, 5003]
    assert [u.cache_creation_input_tokens for u in second] == [0, 0]


def test_cache_control_1h_in_batch(ant: anthropic.Anthropic, sb: Sandbox) -> None:
    system = [
        {
            "type": "text",
            "text": "Shared batch instructions here. " * 1000,
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    reqs = [anthropic_request("w", "write", system=system)]
    batch = wait_anthropic(ant, ant.messages.batches.create(requests=reqs).id)  # type: ignore[arg-type]
    (result,) = ant.messages.batches.results(batch.id)
    usage = result.result.message.usage  # type: ignore[union-attr]
    creation = usage.cache_creation
    assert creation is not None
    assert (creation.ephemeral_1h_input_tokens, creation.ephemeral_5m_input_tokens) == (5003, 0)
    (entry,) = sb.ledger()
    assert (entry.cache_creation_tokens, entry.cache_write_1h_tokens) == (5003, 5003)
    # the markers change the price, not the request: its hash is the unmarked body's
    plain = {**reqs[0]["params"], "system": "Shared batch instructions here. " * 1000}
    assert entry.request_hash == request_hash(plain)
