"""LangChain's LLM cache (``set_llm_cache``, a model's ``cache=``) is consulted before a
call is paid for and filled after, in realtime and batch mode, with LangChain's own key;
answers not paid for by this call carry batchain's marker, and ``CostTracker`` books them
free. The sandbox's ledger is the judge: nothing billed twice, nothing outside the
accounting."""

from __future__ import annotations

import sqlite3
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache, InMemoryCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.load import dumps, loads
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.cost import CostTracker
from batchain.sandbox import Sandbox
from tests.engine.conftest import FAST, Sources, accounted, billed, make_openai, run_job

# the cache key is LangChain's own: reading it calls the model's private ``_get_llm_string``
pytestmark = pytest.mark.internals

PROMPT = ChatPromptTemplate.from_template("Say something about {x}.")


@pytest.fixture(autouse=True)
def no_global_cache() -> Iterator[None]:
    """Every test starts and ends without a global LLM cache."""
    set_llm_cache(None)
    yield
    set_llm_cache(None)


#: the path a `prompt | model` job takes with a LangChain cache set: realtime, the fast
#: path (which calls the hook's call manager); batch, the ordinary path (bulk rows build no
#: messages to key LangChain's cache by)
PATH = {"realtime": "fast_path", "batch": "bulk_path"}
WHICH = {"realtime": "on", "batch": "off: a LangChain LLM cache applies to the model"}


def rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"x": f"thing {i}"} for i in range(start, start + n)]


def text_of(output: Any) -> str:
    return output if isinstance(output, str) else str(output.content)


class SQLiteCache(BaseCache):
    """A small SQLite-backed cache (langchain_community's is not a dependency): sync
    ``lookup``/``update`` only, so batchain reaches it through BaseCache's async defaults."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS c (prompt TEXT, llm TEXT, gens TEXT, PRIMARY KEY (prompt, llm))"
            )

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        with sqlite3.connect(self.path) as db:
            row = db.execute("SELECT gens FROM c WHERE prompt=? AND llm=?", (prompt, llm_string)).fetchone()
        if row is None:
            return None
        with warnings.catch_warnings():  # loads is beta, and warns of its defaults
            warnings.simplefilter("ignore")
            found: RETURN_VAL_TYPE = loads(row[0])
        return found

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("INSERT OR REPLACE INTO c VALUES (?, ?, ?)", (prompt, llm_string, dumps(return_val)))

    def clear(self, **kwargs: Any) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("DELETE FROM c")

    def size(self) -> int:
        with sqlite3.connect(self.path) as db:
            return int(db.execute("SELECT count(*) FROM c").fetchone()[0])


def assert_accounted(sb: Sandbox, *jobs: batchain.Job) -> None:
    """Nothing billed twice; every billed request is in exactly one job's report."""
    assert sb.duplicates() == {}
    total = accounted(jobs[0])
    for job in jobs[1:]:
        total += accounted(job)
    assert total == billed(sb)


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_a_cache_filled_by_langchain_is_hit_by_batchain(
    sandbox: Sandbox, store_path: Path, mode: str
) -> None:
    sandbox.configure(**FAST)
    set_llm_cache(InMemoryCache())
    chain = PROMPT | make_openai(sandbox)
    plain = chain.batch(rows(4))  # plain LangChain fills the global cache
    assert len(sandbox.ledger()) == 4

    job = run_job(chain, rows(6), store_path, mode=mode)  # 4 cached by LangChain, 2 new
    assert job.status == batchain.JobStatus.COMPLETED
    assert job.stats[PATH[mode]] == WHICH[mode]
    assert len(sandbox.ledger()) == 6  # only the 2 new ones were billed
    assert [text_of(o) for o in job.outputs()[:4]] == [text_of(o) for o in plain]
    assert [o.response_metadata["batchain"] for o in job.outputs()[:4]] == [{"source": "langchain_cache"}] * 4
    assert all("batchain" not in o.response_metadata for o in job.outputs()[4:])
    assert job.stats["langchain_cache_hits"] == 4
    report = job.report()
    assert report.paid_calls == 2 and report.langchain_cache_hits == 4
    # the ledger holds plain LangChain's 4 calls and the job's 2, which its report accounts for
    assert sandbox.duplicates() == {}
    assert accounted(job) == Counter({("gpt-4o-mini", mode): 2})
    assert billed(sandbox) == Counter({("gpt-4o-mini", "realtime"): 4}) + accounted(job)


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_batchain_fills_the_cache_for_plain_langchain(sandbox: Sandbox, store_path: Path, mode: str) -> None:
    sandbox.configure(**FAST)
    set_llm_cache(InMemoryCache())
    chain = PROMPT | make_openai(sandbox)
    job = run_job(chain, rows(3), store_path, mode=mode)
    assert len(sandbox.ledger()) == 3
    assert job.stats[PATH[mode]] == WHICH[mode]

    again = chain.invoke(rows(1)[0])  # plain LangChain: answered by the cache batchain filled
    assert len(sandbox.ledger()) == 3
    assert text_of(again) == text_of(job.outputs()[0])
    assert "batchain" not in again.response_metadata  # the cache holds the answer unmarked
    assert accounted(job) == billed(sandbox) and sandbox.duplicates() == {}


def test_store_hits_warm_the_cache_and_come_first(sandbox: Sandbox, store_path: Path) -> None:
    chain = PROMPT | make_openai(sandbox)
    first = run_job(chain, rows(2), store_path)  # no LangChain cache yet: paid, stored
    cache = InMemoryCache()
    set_llm_cache(cache)
    sources = Sources()
    second = run_job(chain, rows(2), store_path, callbacks=[sources])
    assert sources.seen == ["cache", "cache"]  # batchain's store, before LangChain's cache
    assert second.report().cache_hits == 2 and second.stats["langchain_cache_hits"] == 0
    chain.invoke(rows(2)[1])  # the store hit warmed LangChain's cache
    assert len(sandbox.ledger()) == 2
    assert_accounted(sandbox, first)


def test_a_sqlite_cache_with_sync_methods_only(sandbox: Sandbox, store_path: Path, tmp_path: Path) -> None:
    cache = SQLiteCache(tmp_path / "lc.sqlite")
    model = make_openai(sandbox, cache=cache)  # a model's own cache, not the global one
    (PROMPT | model).batch(rows(2))
    assert cache.size() == 2 and len(sandbox.ledger()) == 2
    job = run_job(PROMPT | model, rows(3), store_path)
    assert len(sandbox.ledger()) == 3 and cache.size() == 3
    assert job.stats["langchain_cache_hits"] == 2
    assert get_llm_cache() is None
    assert accounted(job) == Counter({("gpt-4o-mini", "realtime"): 1}) and sandbox.duplicates() == {}


def test_model_cache_false_is_respected(sandbox: Sandbox, store_path: Path) -> None:
    cache = InMemoryCache()
    set_llm_cache(cache)
    model = make_openai(sandbox, cache=False)
    (PROMPT | make_openai(sandbox)).batch(rows(2))  # the global cache has these answers
    assert len(sandbox.ledger()) == 2
    first = run_job(PROMPT | model, rows(2), store_path)
    second = run_job(PROMPT | model, rows(2), store_path)
    # neither LangChain's cache nor an earlier job's answers: every job pays, as LangChain would
    assert len(sandbox.ledger()) == 6
    assert first.stats["langchain_cache_hits"] == second.stats["langchain_cache_hits"] == 0
    assert second.report().cache_hits == 0
    assert accounted(first) + accounted(second) == Counter({("gpt-4o-mini", "realtime"): 4})
    # each request billed 3 times (plain LangChain, each job): what cache=False asks for
    assert sorted(sandbox.duplicates().values()) == [3, 3]


def test_model_cache_true_without_a_cache_fails_the_item(sandbox: Sandbox, store_path: Path) -> None:
    job = run_job(PROMPT | make_openai(sandbox, cache=True), rows(1), store_path)
    [result] = job.results()
    assert not result.ok and "set_llm_cache" in str(result.error)
    assert sandbox.ledger() == []


def test_markers_and_cost_tracker(sandbox: Sandbox, store_path: Path) -> None:
    """Paid answers carry no marker; shared, cached (store or LangChain) ones do, and
    CostTracker's total is what the ledger billed."""
    chain = PROMPT | make_openai(sandbox)
    run_job(chain, rows(2), store_path)  # answers stored for the next job: 2 billed
    set_llm_cache(InMemoryCache())
    (PROMPT | make_openai(sandbox)).batch(rows(2, start=10))  # LangChain's cache: 2 billed
    sources, tracker = Sources(), CostTracker()
    inputs = [*rows(2), *rows(2, start=10), *rows(2, start=20), *rows(2, start=20)]
    job = run_job(chain, inputs, store_path, callbacks=[sources, tracker], max_concurrency=4)
    # the two repeated inputs share their call in flight (or, on a slow machine, replay it)
    seen = ["shared" if s == "replay" else s for s in sources.seen]
    assert sorted(seen, key=str) == sorted(
        ["cache", "cache", "langchain_cache", "langchain_cache", None, None, "shared", "shared"], key=str
    )
    assert len(sandbox.ledger()) == 6 and sandbox.duplicates() == {}
    assert tracker.requests == 2 and tracker.cache_hits == 6
    assert tracker.total_cost == job.report().paid > 0


def test_an_evicted_items_own_answer_is_unmarked(fast: Sandbox, store_path: Path) -> None:
    """Batch mode: an item that left the window while its call was at the provider comes
    back and is told its own paid answer for the first time: unmarked, as paid (later
    deliveries of it say ``replay``: see test_markers)."""
    sources = Sources()
    # batches that outlast their creation: with ones that end at once, a loaded machine
    # can collect a batch before its items leave the window
    fast.configure(batch_processing_s=0.5)
    job = run_job(
        PROMPT | make_openai(fast), rows(6), store_path, mode="batch", window=2, callbacks=[sources]
    )
    assert job.status == batchain.JobStatus.COMPLETED
    assert job.stats["items_left_window"] > 0
    assert sources.seen == [None] * 6
    assert [o.response_metadata.get("batchain") for o in job.outputs()] == [None] * 6
    assert_accounted(fast, job)


def test_bulk_rows_are_marked_too(fast: Sandbox, store_path: Path) -> None:
    """Batch mode's rows (no LangChain cache, no callbacks): an AIMessage output says where
    its answer came from, as on the coroutine path."""
    chain = PROMPT | make_openai(fast)
    first = run_job(chain, rows(2), store_path, mode="batch")
    job = run_job(chain, [*rows(2), *rows(1, start=5), *rows(1, start=5)], store_path, mode="batch")
    assert job.stats["bulk_path"] == "on"
    marks = [(o.response_metadata.get("batchain") or {}).get("source") for o in job.outputs()]
    assert marks == ["cache", "cache", None, "shared"]
    assert len(fast.ledger()) == 3
    assert_accounted(fast, first, job)


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_langchain_communitys_sqlite_cache(
    sandbox: Sandbox, store_path: Path, tmp_path: Path, mode: str
) -> None:
    """The SQLite cache users set with ``set_llm_cache(SQLiteCache(...))``: filled by plain
    LangChain, hit by batchain; filled by batchain, hit by plain LangChain in a new cache
    object over the same file (as another process would)."""
    community = pytest.importorskip("langchain_community.cache")
    sandbox.configure(**FAST)
    path = str(tmp_path / "langchain.db")
    set_llm_cache(community.SQLiteCache(database_path=path))
    chain = PROMPT | make_openai(sandbox)
    chain.batch(rows(2))
    assert len(sandbox.ledger()) == 2
    job = run_job(chain, rows(4), store_path, mode=mode)  # 2 from the cache, 2 paid
    assert job.stats["langchain_cache_hits"] == 2 and len(sandbox.ledger()) == 4
    set_llm_cache(community.SQLiteCache(database_path=path))
    again = chain.batch(rows(4))  # all four answered from the file batchain filled
    assert len(sandbox.ledger()) == 4
    assert [text_of(o) for o in again] == [text_of(o) for o in job.outputs()]
    assert sandbox.duplicates() == {}
    assert billed(sandbox) == Counter({("gpt-4o-mini", "realtime"): 2}) + accounted(job)
