"""LangChain's LLM cache (``set_llm_cache``, a model's ``cache=``) is consulted before a
call is paid for and filled after, in realtime and batch mode, with LangChain's own key;
answers not paid for by this call carry batchain's marker, and ``CostTracker`` books them
free. The sandbox's ledger is the judge: nothing billed twice, nothing outside the
accounting."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache, InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.load import dumps, loads
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.cost import CostTracker
from batchain.sandbox import Sandbox
from tests.engine.conftest import FAST, accounted, billed, make_openai, run_job

# the cache key is LangChain's own: reading it calls the model's private ``_get_llm_string``
pytestmark = pytest.mark.internals

PROMPT = ChatPromptTemplate.from_template("Say something about {x}.")


@pytest.fixture(autouse=True)
def no_global_cache() -> Iterator[None]:
    """Every test starts and ends without a global LLM cache."""
    set_llm_cache(None)
    yield
    set_llm_cache(None)


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
            db.execute("CREATE TABLE IF NOT EXISTS c (prompt TEXT, llm TEXT, gens TEXT, PRIMARY KEY (prompt, llm))")

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        with sqlite3.connect(self.path) as db:
            row = db.execute("SELECT gens FROM c WHERE prompt=? AND llm=?", (prompt, llm_string)).fetchone()
        return loads(row[0]) if row else None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("INSERT OR REPLACE INTO c VALUES (?, ?, ?)", (prompt, llm_string, dumps(return_val)))

    def clear(self, **kwargs: Any) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("DELETE FROM c")

    def size(self) -> int:
        with sqlite3.connect(self.path) as db:
            return int(db.execute("SELECT count(*) FROM c").fetchone()[0])


class Sources(BaseCallbackHandler):
    """The batchain marker of every model answer seen (None: paid by this call)."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        for gens in response.generations:
            meta = gens[0].message.response_metadata  # type: ignore[attr-defined]
            self.seen.append((meta.get("batchain") or {}).get("source"))


def assert_accounted(sb: Sandbox, *jobs: batchain.Job) -> None:
    """Nothing billed twice; every billed request is in exactly one job's report."""
    assert sb.duplicates() == {}
    total = accounted(jobs[0])
    for job in jobs[1:]:
        total += accounted(job)
    assert total == billed(sb)


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_a_cache_filled_by_langchain_is_hit_by_batchain(sandbox: Sandbox, store_path: Path, mode: str) -> None:
    sandbox.configure(**FAST)
    set_llm_cache(InMemoryCache())
    chain = PROMPT | make_openai(sandbox)
    plain = chain.batch(rows(4))  # plain LangChain fills the global cache
    assert len(sandbox.ledger()) == 4

    job = run_job(chain, rows(6), store_path, mode=mode)  # 4 cached by LangChain, 2 new
    assert job.status == batchain.JobStatus.COMPLETED
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
