from __future__ import annotations

import threading

from batchain.sandbox.ledger import Ledger, LedgerEntry, canonical_json, request_hash


def entry(digest: str = "h", tier: str = "realtime", **kw: object) -> LedgerEntry:
    base: dict[str, object] = {
        "ts": 1.0,
        "provider": "openai",
        "model": "m",
        "tier": tier,
        "input_tokens": 10,
        "cached_tokens": 4,
        "cache_creation_tokens": 0,
        "output_tokens": 2,
        "request_hash": digest,
    }
    base.update(kw)
    return LedgerEntry(**base)  # type: ignore[arg-type]


def test_request_hash_ignores_stream_keys() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "é"}]}
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    assert request_hash(body) == request_hash(streamed)
    assert canonical_json(body) == '{"messages":[{"content":"é","role":"user"}],"model":"m"}'
    assert request_hash(body) != request_hash({**body, "temperature": 0})
    # the tier that serves it is not part of the request either (flex and standard: one hash)
    assert request_hash(body) == request_hash({**body, "service_tier": "flex"})


def test_summary_and_duplicates() -> None:
    ledger = Ledger()
    ledger.add(entry("a"))
    ledger.add(entry("a", tier="batch", batch_id="b1", custom_id="c1"))
    ledger.add(entry("b", provider="anthropic", cache_creation_tokens=3))
    ledger.note_rate_limited("openai", "m")
    ledger.note_unavailable("openai", "m")
    summary = ledger.summary()
    assert summary["openai"]["m"]["realtime"] == {
        "requests": 1,
        "input_tokens": 10,
        "cached_tokens": 4,
        "cache_creation_tokens": 0,
        "output_tokens": 2,
        "rate_limited": 1,
        "unavailable": 0,
    }
    assert summary["openai"]["m"]["flex"] == dict.fromkeys(summary["openai"]["m"]["flex"], 0) | {
        "unavailable": 1
    }
    assert summary["openai"]["m"]["batch"]["requests"] == 1
    assert summary["anthropic"]["m"]["realtime"]["cache_creation_tokens"] == 3
    assert ledger.duplicates() == {"a": 2}
    assert LedgerEntry.from_dict(entry().to_dict()) == entry()
    ledger.clear()
    assert ledger.entries() == [] and ledger.summary() == {}


def test_thread_safe_appends() -> None:
    ledger = Ledger()

    def work() -> None:
        for i in range(1000):
            ledger.add(entry(str(i)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ledger.entries()) == 4000
