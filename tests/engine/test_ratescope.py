"""One rate-limit scope per (provider, key, model), shared by every job of a process and,
through the store, by every process on it: against a sandbox enforcing an RPM limit over
real HTTP, with no client limit given, 429s stay rare and every item succeeds.

Each test uses a key of its own, so its scope starts fresh (scopes live as long as the
process, as they would in a program running several jobs one after another)."""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.engine.ratescope import Heard, RateScope, key_digest, scope_id
from batchain.engine.scheduler import Scheduler
from batchain.providers.base import Failure, FailureKind, RateInfo, Sent
from batchain.sandbox import Sandbox
from batchain.store.records import ScopeClaim
from tests.engine.conftest import make_openai

PROMPT = ChatPromptTemplate.from_template("Say something about {x}.")
RPM = 1200  # 20 requests a second, a burst of 20
ROOT = Path(__file__).resolve().parents[2]


def fresh_key() -> str:
    return f"sk-scope-{uuid.uuid4().hex}SECRET"


def chain(sb: Sandbox, key: str) -> Any:
    return PROMPT | make_openai(sb, api_key=key) | StrOutputParser()


def rejected(sb: Sandbox) -> int:
    """Requests the sandbox refused with a 429 (it counts them; they are never billed)."""

    def count(node: Any) -> int:
        if isinstance(node, dict):
            return sum(v if k == "rate_limited" and isinstance(v, int) else count(v) for k, v in node.items())
        return 0

    return count(sb.ledger_summary())


def assert_paid_once(sb: Sandbox, n: int) -> None:
    assert len(sb.ledger()) == n
    assert sb.duplicates() == {}


def test_one_job_learns_the_limit_before_hitting_it(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(rpm=RPM)
    n = 60
    job = batchain.run(
        chain(sandbox, fresh_key()), [{"x": i} for i in range(n)], store=store_path, progress=False
    )
    assert job.counts["succeeded"] == n
    assert rejected(sandbox) <= 0.05 * n, rejected(sandbox)
    assert_paid_once(sandbox, n)


def test_two_jobs_in_one_loop_share_the_quota(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(rpm=RPM)
    key, n = fresh_key(), 40

    async def both() -> list[batchain.Job]:
        return list(
            await asyncio.gather(
                *(
                    batchain.arun(
                        chain(sandbox, key),
                        [{"x": f"{j}-{i}"} for i in range(n)],
                        store=store_path,
                        progress=False,
                    )
                    for j in range(2)
                )
            )
        )

    jobs = asyncio.run(both())
    assert [j.counts["succeeded"] for j in jobs] == [n, n]
    assert rejected(sandbox) <= 0.05 * 2 * n, rejected(sandbox)
    assert_paid_once(sandbox, 2 * n)


def test_two_jobs_in_two_threads_share_the_quota(sandbox: Sandbox, tmp_path: Path) -> None:
    """Each thread runs its own event loop and its own store file: the scope is the
    process's."""
    sandbox.configure(rpm=RPM)
    key, n = fresh_key(), 40
    done: dict[int, int] = {}

    def run(j: int) -> None:
        job = batchain.run(
            chain(sandbox, key),
            [{"x": f"{j}-{i}"} for i in range(n)],
            store=tmp_path / f"s{j}.sqlite",
            progress=False,
        )
        done[j] = job.counts["succeeded"]

    threads = [threading.Thread(target=run, args=(j,)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done == {0: n, 1: n}
    assert rejected(sandbox) <= 0.05 * 2 * n, rejected(sandbox)
    assert_paid_once(sandbox, 2 * n)


_PROCESS = """
import sys, time
from pathlib import Path
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
import batchain

base_url, key, store, n, me, go = sys.argv[1:7]
Path(go + "." + me).touch()
while not all(Path(go + "." + p).exists() for p in "01"):  # start together
    time.sleep(0.01)
model = ChatOpenAI(model="gpt-4o-mini", api_key=key, base_url=base_url)
chain = ChatPromptTemplate.from_template("Say something about {x}.") | model | StrOutputParser()
job = batchain.run(chain, [{"x": f"{me}-{i}"} for i in range(int(n))], store=store, progress=False)
print(job.counts["succeeded"])
"""


def test_two_processes_on_one_store_share_the_quota(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(rpm=RPM)
    key, n = fresh_key(), 40
    go = str(store_path.parent / "go")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _PROCESS,
                sandbox.openai_base_url,
                key,
                str(store_path),
                str(n),
                str(me),
                go,
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for me in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == [str(n), str(n)]
    assert rejected(sandbox) <= 0.05 * 2 * n, rejected(sandbox)
    assert_paid_once(sandbox, 2 * n)
    # the scope's row: named by the key's digest, never the key
    with sqlite3.connect(store_path) as conn:
        (name,) = conn.execute("SELECT scope FROM rate_scopes").fetchone()
    assert name.endswith(key_digest(key)) and "SECRET" not in name
    batchain.SQLiteStore(store_path).close()
    for path in store_path.parent.iterdir():
        if path.is_file():
            assert key.encode() not in path.read_bytes()
            assert b"SECRET" not in path.read_bytes()


def test_scope_names_the_key_by_digest_only() -> None:
    class Client:
        api_key = "sk-abcSECRET"

    name = scope_id("openai|https://api.example/v1|gpt-4o-mini", Client())
    assert "SECRET" not in name and name.endswith(key_digest("sk-abcSECRET"))
    assert key_digest("sk-abcSECRET") != key_digest("sk-abdSECRET")
    assert scope_id("lane", object()).endswith("|nokey")


def _rate_limit(exc: BaseException) -> Failure:
    return Failure(FailureKind.RATE_LIMIT, "429", 429, retry_after=0.6)


def test_a_429_in_one_job_pauses_the_other() -> None:
    """Two jobs' schedulers on one scope: after one's 429 with retry-after 0.6 s, the
    other's next send waits it out."""
    scope = f"test|{uuid.uuid4().hex}"
    sent_at: list[float] = []

    async def refused() -> Sent:
        raise RuntimeError("429")

    async def answered() -> Sent:
        sent_at.append(time.monotonic())
        return Sent("{}", {})

    async def main() -> float:
        a, b = Scheduler(max_retries=0), Scheduler()
        await b.run("lane", 1, answered, _rate_limit, lambda o: None, scope=scope)  # known now
        with pytest.raises(Exception, match="429"):
            await a.run("lane", 1, refused, _rate_limit, lambda o: None, scope=scope)
        hit = time.monotonic()
        await b.run("lane", 1, answered, _rate_limit, lambda o: None, scope=scope)
        return sent_at[-1] - hit

    assert asyncio.run(main()) >= 0.5


class _Store:
    """Two processes' views of one store file: scopes of their own, one row."""

    def __init__(self, path: Path) -> None:
        self.store = batchain.SQLiteStore(path)

    def rate_scope(self, scope: str, claim: Any) -> Any:
        row = self.store.rate_scope(scope, claim)
        self.store.commit()
        return row


def test_scopes_of_two_processes_pace_as_one_through_the_store(store_path: Path) -> None:
    """What two processes do through the store, with one RateScope standing for each."""
    board = _Store(store_path)
    name = f"test|{uuid.uuid4().hex}"
    first, second = RateScope(name), RateScope(name)

    async def learn_in_first() -> bool:
        assert await first.admit(board)  # a new scope: its first send goes alone
        first.settle(RateInfo(limit_requests=600), Heard.ANSWER, board)
        return await second.admit(board)

    # the limit one process learned, the other knows before sending anything
    assert asyncio.run(learn_in_first()) is False
    assert second.rpm == 600
    # reserving in turns, they never send closer than the limit allows (0.1 s at 600 RPM)
    slots = sorted(s.reserve(1, None, None, board).at for _ in range(10) for s in (first, second))
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= 0.1 - 1e-6, gaps
    # a 429 one process gets pauses the other, from its next claim (a block is 2 sends here)
    first.rate_limited(2.0, board)
    later = [second.reserve(1, None, None, board) for _ in range(3)][-1]
    assert second.due(later) >= time.time() + 1.5
    board.store.close()


def test_a_store_without_rate_scopes_gets_the_table_on_open(store_path: Path) -> None:
    with batchain.SQLiteStore(store_path):
        pass
    with sqlite3.connect(store_path) as conn:
        conn.execute("DROP TABLE rate_scopes")  # as a store of the build before this table
    with batchain.SQLiteStore(store_path) as store:
        row = store.rate_scope("s", ScopeClaim(now=100.0, request_s=0.5, rpm=60.0))
        assert (row.rpm, row.request_from) == (60.0, 100.0)
        # claims follow each other: the next one starts where this one ended
        assert store.rate_scope("s", ScopeClaim(now=100.0, request_s=0.5)).request_from == 100.5
    with sqlite3.connect(store_path) as conn:
        conn.execute("ALTER TABLE rate_scopes DROP COLUMN burst_s")  # a store of the build before
    with batchain.SQLiteStore(store_path) as store:
        assert store.rate_scope("s", ScopeClaim(now=100.0, burst_s=0.5)).burst_s == 0.5
        # the largest burst told under the row's limit is kept; a new limit starts afresh
        assert store.rate_scope("s", ScopeClaim(now=100.0, burst_s=0.2)).burst_s == 0.5
        assert store.rate_scope("s", ScopeClaim(now=100.0, rpm=120.0, burst_s=0.2)).burst_s == 0.2


def test_a_scope_starts_with_the_burst_its_bucket_holds_then_keeps_the_rate() -> None:
    scope = RateScope(f"test|{uuid.uuid4().hex}")
    # a full bucket of 600 RPM holds 10 sends (a 60th of the minute's 600)
    scope.settle(RateInfo(limit_requests=600, remaining_requests=600), Heard.ANSWER, None)
    slots = [scope.reserve(1, None, None, None).at for _ in range(20)]
    at_once = [s for s in slots if s - slots[0] < 0.05]
    assert len(at_once) == 8  # 3 of the 10 kept for jitter: 7 ahead of the clock, 1 due now
    gaps = [b - a for a, b in itertools.pairwise(slots[7:])]
    assert all(abs(g - 0.1) < 1e-3 for g in gaps), gaps
    # a limit of the user's below the provider's is kept without a burst
    other = RateScope(f"test|{uuid.uuid4().hex}")
    other.settle(RateInfo(limit_requests=600, remaining_requests=600), Heard.ANSWER, None)
    slots = [other.reserve(1, 300, None, None).at for _ in range(3)]
    assert [round(b - a, 6) for a, b in itertools.pairwise(slots)] == [0.2, 0.2]


def test_a_first_send_never_settled_holds_the_scope_only_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    import batchain.engine.ratescope as ratescope

    monkeypatch.setattr(ratescope, "PROBE_WAIT_S", 0.2)
    scope = RateScope("openai|http://x|nokey|lost-probe")

    async def scenario() -> tuple[bool, bool, float]:
        assert await scope.admit(None)  # the first send, never settled
        t0 = time.monotonic()
        second = await asyncio.wait_for(scope.admit(None), 5)  # goes as a new first send
        waited = time.monotonic() - t0
        scope.settle(None, Heard.ANSWER, None)
        third = await asyncio.wait_for(scope.admit(None), 5)  # limits known now: no wait
        return second, third, waited

    second, third, waited = asyncio.run(scenario())
    assert second and not third
    assert 0.15 <= waited < 5


def test_two_processes_with_sends_queued_take_the_clock_in_turns(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process (a RateScope on one store) has 40 sends queued at once: the first to
    queue used to reserve all its slots ahead of the other's, which then waited in one
    block and finished alone. Now neither reserves further than the lookahead ahead, so
    the clock goes to both in turns, and they finish together."""
    import batchain.engine.ratescope as ratescope

    monkeypatch.setattr(ratescope, "LOOKAHEAD_S", 0.25)  # a shorter test
    board = _Store(store_path)
    name = f"test|{uuid.uuid4().hex}"
    first, second = RateScope(name), RateScope(name)
    for scope in (first, second):
        scope.settle(RateInfo(limit_requests=2400), Heard.ANSWER, board)  # 0.025 s a send

    async def queued() -> list[tuple[float, str]]:
        async def take(scope: RateScope, who: str) -> tuple[float, str]:
            return (await scope.take(1, None, None, board)).at, who

        first_sends = [take(first, "first") for _ in range(40)]
        second_sends = [take(second, "second") for _ in range(40)]
        return sorted(await asyncio.gather(*first_sends, *second_sends))

    slots = asyncio.run(queued())
    board.store.close()
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= 0.025 - 1e-6, gaps  # still one pace for both
    early = [who for _, who in slots[:40]]
    assert early.count("second") >= 10, early  # was 0: the first's 40 slots came first
    last = {who: at for at, who in slots}
    assert abs(last["first"] - last["second"]) < 0.75, last  # was 1.0: 40 slots apart


def test_a_process_whose_first_answer_saw_the_bucket_drained_takes_the_scopes_burst(
    store_path: Path,
) -> None:
    """Two processes' first sends go at once; the second's answer comes after the first's
    burst took the bucket (remaining 180 of 600: nothing to spare). The burst is the
    scope's, through the store: the second process too sends ahead of the clock."""
    board = _Store(store_path)
    name = f"test|{uuid.uuid4().hex}"
    first, second = RateScope(name), RateScope(name)

    async def both_first() -> tuple[bool, bool]:
        return await first.admit(board), await second.admit(board)

    assert asyncio.run(both_first()) == (True, True)  # neither knew the limits yet
    first.settle(RateInfo(limit_requests=600, remaining_requests=600), Heard.ANSWER, board)
    second.settle(RateInfo(limit_requests=600, remaining_requests=180), Heard.ANSWER, board)
    slots = [second.reserve(1, None, None, board).at for _ in range(10)]
    board.store.close()
    at_once = [s for s in slots if s - slots[0] < 0.05]
    assert len(at_once) >= 5, slots  # was 1: its own answer left it no burst
    gaps = [b - a for a, b in itertools.pairwise(slots[len(at_once) :])]
    assert all(g >= 0.1 - 1e-6 for g in gaps), gaps
