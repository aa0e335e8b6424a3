"""``run(..., config=RunnableConfig(...))``: what LangChain's ``batch(config=...)`` takes,
honoured for every item (callbacks, tags, metadata, run name, configurable fields,
max_concurrency), stored with the job for a resume, and refused by name where it cannot
apply to a job of many items."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField, RunnableConfig

import batchain
from batchain.sandbox import Sandbox
from tests.engine.conftest import accounted, billed, make_openai


class Runs(BaseCallbackHandler):
    """The tags, metadata and names of the top-level chain runs it sees."""

    def __init__(self) -> None:
        self.top: list[tuple[list[str], dict[str, Any], str | None]] = []

    def on_chain_start(self, serialized: Any, inputs: Any, *, parent_run_id: Any = None, **kw: Any) -> None:
        if parent_run_id is None:
            self.top.append((list(kw.get("tags") or []), dict(kw.get("metadata") or {}), kw.get("name")))


def test_config_reaches_every_item_and_is_kept_for_a_resume(sandbox: Sandbox, store_path: Path) -> None:
    chain = ChatPromptTemplate.from_template("Say {x}") | make_openai(sandbox) | StrOutputParser()
    runs = Runs()
    config = RunnableConfig(
        callbacks=[runs], tags=["nightly"], metadata={"team": "search"}, run_name="tagline", max_concurrency=3
    )
    job = batchain.run(chain, [{"x": i} for i in range(4)], store=store_path, progress=False, config=config)
    assert job.counts["succeeded"] == 4
    assert len(runs.top) == 4
    assert all(
        "nightly" in tags and meta["team"] == "search" and name == "tagline" for tags, meta, name in runs.top
    )
    assert job.record.options["max_concurrency"] == 3
    # stored (callbacks are not: they are objects of this process)
    assert job.record.options["config"] == {
        "tags": ["nightly"],
        "metadata": {"team": "search"},
        "run_name": "tagline",
    }
    assert sum(billed(sandbox).values()) == 4 and not sandbox.duplicates()
    assert accounted(job) == billed(sandbox)  # nothing billed outside batchain's accounting


def test_configurable_fields_choose_the_prompt(sandbox: Sandbox, store_path: Path) -> None:
    prompt = ChatPromptTemplate.from_template("Say {x}").configurable_alternatives(
        ConfigurableField(id="prompt"), default_key="say", shout=ChatPromptTemplate.from_template("Shout {x}")
    )
    chain = prompt | make_openai(sandbox) | StrOutputParser()
    items = [{"x": i} for i in range(3)]
    expected = chain.batch(items, config={"configurable": {"prompt": "shout"}})
    sandbox.reset()
    job = batchain.run(
        chain, items, store=store_path, progress=False, config={"configurable": {"prompt": "shout"}}
    )
    assert job.outputs() == expected
    assert all("Shout" in out for out in job.outputs())
    assert job.stats["fast_path"].startswith("off: the run's config has configurable fields")
    assert sum(billed(sandbox).values()) == 3 and not sandbox.duplicates()
    assert accounted(job) == billed(sandbox)


def test_a_config_key_that_cannot_apply_is_refused_by_name(sandbox: Sandbox, store_path: Path) -> None:
    chain = ChatPromptTemplate.from_template("Say {x}") | make_openai(sandbox)
    with pytest.raises(batchain.InvalidOption, match="run_id"):
        batchain.run(chain, [{"x": 1}], store=store_path, progress=False, config={"run_id": uuid.uuid4()})
    with pytest.raises(batchain.InvalidOption, match="JSON"):
        batchain.run(
            chain, [{"x": 1}], store=store_path, progress=False, config={"metadata": {"f": object()}}
        )
    assert not sandbox.ledger()


def test_wait_takes_a_config_as_run_does(fast: Sandbox, store_path: Path) -> None:
    chain = ChatPromptTemplate.from_template("Say {x}") | make_openai(fast) | StrOutputParser()
    job = batchain.submit(
        chain, [{"x": 1}, {"x": 2}], store=store_path, poll_min=0.02, config={"tags": ["first"]}
    )
    runs = Runs()
    done = batchain.Job.open(job.id, store=store_path, chain=chain).wait(
        progress=False, poll_min=0.02, config={"callbacks": [runs], "tags": ["second"]}
    )
    assert done.counts["succeeded"] == 2
    assert sorted(tags for tags, _, _ in runs.top) == [["second"], ["second"]]
    assert sum(billed(fast).values()) == 2 and not fast.duplicates()
    assert accounted(done) == billed(fast)
