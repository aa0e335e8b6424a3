"""The bulk path: batch mode runs `prompt | model [| parser]` items as rows, with requests
from a template of the model's own payload builder. Same requests, same results, same
guarantees as the ordinary path."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import SystemMessage
from langchain_core.output_parsers import BaseOutputParser, StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate

import batchain
from batchain.chains.fastpath import RequestTemplate, TextShortcut, compile_fast, compile_template
from batchain.cost.tokens import approx_input_tokens
from batchain.engine.calls import build_request, parse_answer
from batchain.engine.capacity import enqueued_tokens
from batchain.engine.session import wire
from batchain.options import RunOptions
from batchain.sandbox import Sandbox
from batchain.states import JobStatus
from batchain.store import SQLiteStore
from batchain.store.records import JobRecord
from tests.engine.conftest import make_anthropic, make_openai

# depends on LangChain internals (hook, payload builders, prompt classes): CI runs it at the
# lowest versions the pins admit too
pytestmark = pytest.mark.internals

FAST = dict(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)


def template_of(chain: Any, salt: str = "") -> RequestTemplate | None:
    fast = compile_fast(chain)
    assert fast is not None
    stop, kwargs = fast.call_args()
    return compile_template(fast, lambda msgs: build_request(fast.model, msgs, stop, kwargs, salt))


def same_request(template: RequestTemplate, value: Any) -> None:
    _, got = template.build(value)
    _, want = template.full(value)
    assert (got.key, got.body, got.headers, got.body_hash, got.body_bytes, got.lane) == (
        want.key,
        want.body,
        want.headers,
        want.body_hash,
        want.body_bytes,
        want.lane,
    )
    # the tokens it holds in its model's batch queue: counted from its texts' lengths
    assert enqueued_tokens(got) == approx_input_tokens(want.body)


def prompts() -> dict[str, Any]:
    return {
        "one human": ChatPromptTemplate.from_template("Tell me about {x}"),
        "system and human": ChatPromptTemplate.from_messages(
            [("system", "You are {who}."), ("human", "Tell me about {x}")]
        ),
        "static system": ChatPromptTemplate.from_messages(
            [SystemMessage("Be brief."), ("human", "{x}"), ("ai", "Sure."), ("human", "And {who}?")]
        ),
        "two humans in a row": ChatPromptTemplate.from_messages([("human", "{x}"), ("human", "{who}")]),
        "partial": ChatPromptTemplate.from_template("{greeting}, tell me about {x}").partial(greeting="Hi"),
        "string prompt": PromptTemplate.from_template("Say {x} to {who}"),
        # formatted by str.format instead of LangChain's formatter: the same text
        "format spec": PromptTemplate.from_template("Say {x!r} to {who:>12}."),
    }


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("name", list(prompts()))
def test_template_builds_exactly_what_the_model_builds(sandbox: Sandbox, provider: str, name: str) -> None:
    model = make_openai(sandbox, temperature=0.3) if provider == "openai" else make_anthropic(sandbox)
    template = template_of(prompts()[name] | model.bind(stop=["END"]) | StrOutputParser())
    assert template is not None
    values = [
        {"x": "cats", "who": "a poet"},
        {"x": "naïve “quotes” and émojis 🐈", "who": "{not a variable}"},
        {"x": "line\nbreaks\tand \\ backslashes", "who": '"json" {"in": "text"}'},
        {"x": "  padded  ", "who": "x"},
        {"x": "cache_control", "who": '{"cache_control": {"type": "ephemeral"}}'},  # only text
        {"x": "", "who": "an empty text goes the full way"},
    ]
    for value in values:
        same_request(template, value)
    assert template.active
    assert template.build(values[0])[1].queued_tokens is not None  # not counted from the body


def test_template_checks_itself_and_turns_off_when_it_differs(sandbox: Sandbox) -> None:
    template = template_of(ChatPromptTemplate.from_template("About {x}") | make_openai(sandbox))
    assert template is not None
    template.base.body["temperature"] = 0.123  # what a content-dependent builder would cause
    _, first = template.build({"x": "a"})  # the first build is compared with the full one
    assert not template.active
    assert "temperature" not in first.body  # the full build's request is the one used
    same_request(template, {"x": "b"})
    # so does a count of queued tokens that is not the body's
    counted = template_of(ChatPromptTemplate.from_template("About {x}") | make_openai(sandbox))
    assert counted is not None
    counted._static_chars += 40
    _, first = counted.build({"x": "a"})
    assert not counted.active and first.queued_tokens is None


def test_prompts_that_are_not_one_text_per_message_have_no_template(sandbox: Sandbox) -> None:
    history = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{x}")])
    assert template_of(history | make_openai(sandbox)) is None


def run_batch(chain: Any, inputs: list[Any], store: Path, **kw: Any) -> batchain.Job:
    kw.setdefault("poll_min", 0.02)
    return batchain.run(chain, inputs, mode="batch", store=store, progress=False, **kw)


def test_batch_mode_takes_the_bulk_path_only_for_the_fast_shape(sandbox: Sandbox, store_path: Path) -> None:
    chain = ChatPromptTemplate.from_template("About {x}") | make_openai(sandbox) | StrOutputParser()
    store = SQLiteStore(store_path)
    store.create_job(JobRecord("job-a", JobStatus.CREATED, "batch", time.time(), time.time()))
    assert wire(store, "job-a", chain, RunOptions(mode="batch")).bulk
    assert not wire(store, "job-a", chain, RunOptions(mode="realtime")).bulk
    assert not wire(store, "job-a", chain, RunOptions(mode="auto")).bulk
    # stages of the same shape, each stage's output the next one's input: rows too
    longer = chain | ChatPromptTemplate.from_template("{x}") | make_anthropic(sandbox)
    staged = wire(store, "job-a", longer, RunOptions(mode="batch")).bulk
    assert staged is not None and len(staged.stages) == 2
    # as for one stage, configurable fields in the run's config keep it off
    configured = RunOptions(mode="batch", config={"configurable": {"temperature": 0}})
    assert not wire(store, "job-a", longer, configured).bulk
    lambda_between = (
        chain | (lambda s: {"x": s}) | ChatPromptTemplate.from_template("{x}") | make_openai(sandbox)
    )
    assert not wire(store, "job-a", lambda_between, RunOptions(mode="batch")).bulk
    store.close()


def test_identical_items_share_one_call_and_a_rerun_replays_from_cache(
    sandbox: Sandbox, store_path: Path
) -> None:
    sandbox.configure(**FAST)
    chain = ChatPromptTemplate.from_template("About {x}") | make_openai(sandbox) | StrOutputParser()
    inputs = [{"x": i % 5} for i in range(20)]
    first = run_batch(chain, inputs, store_path)
    assert first.counts["succeeded"] == 20
    assert len(sandbox.ledger()) == 5
    assert first.call_stats == {"paid": 5, "shared": 5}
    outputs = first.outputs()
    assert outputs[3] == outputs[8] and outputs[3].endswith("About 3")
    second = run_batch(chain, inputs, store_path)
    assert second.outputs() == outputs
    assert len(sandbox.ledger()) == 5  # nothing paid again
    assert second.call_stats.get("cache") == 5


class Picky(BaseOutputParser[str]):
    """Rejects answers that mention "bad"."""

    def parse(self, text: str) -> str:
        if "bad" in text:
            raise OutputParserException(f"not what I wanted: {text}")
        return text.upper()


def test_parser_errors_and_provider_errors_fail_only_their_items(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(**FAST)
    chain = ChatPromptTemplate.from_template("{x}") | make_openai(sandbox) | Picky()
    inputs = [{"x": "a bad answer"}, {"x": "[[fail:400]] refused"}, {"x": "fine"}]
    job = run_batch(chain, inputs, store_path)
    errors = {e.index: e.error for e in job.errors()}
    assert sorted(errors) == [0, 1]
    assert errors[0]["type"] == "OutputParserException"
    assert "400" in errors[1]["message"]
    assert job.outputs()[2].endswith("FINE")


def test_collect_with_a_changed_chain_keeps_what_was_submitted(sandbox: Sandbox, store_path: Path) -> None:
    """Calls at the provider are collected by their stored identity: a chain edited between
    submit and collect does not send (and pay for) everything again."""
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.3, batch_finalizing_s=0.01)
    model = make_openai(sandbox)
    old = ChatPromptTemplate.from_template("Old prompt {x}") | model | StrOutputParser()
    job = batchain.submit(old, [{"x": i} for i in range(30)], store=store_path, poll_min=0.02)
    new = ChatPromptTemplate.from_template("New prompt {x}") | model | StrOutputParser()
    reopened = batchain.Job.open(job.id, store=store_path, chain=new).wait()
    assert reopened.counts["succeeded"] == 30
    assert all("Old prompt" in o for o in reopened.outputs())
    assert len(sandbox.ledger()) == 30 and not sandbox.duplicates()


@pytest.fixture
def read_back(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The items a run reads back from the store row by row (``iter_pending_waits``, or
    ``iter_items`` as a run without waits reads them)."""
    read: list[int] = []

    def spy_on(name: str, idx_of: Any) -> None:
        original = getattr(SQLiteStore, name)

        def spy(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
            for row in original(self, *args, **kwargs):
                read.append(idx_of(row))
                yield row

        monkeypatch.setattr(SQLiteStore, name, spy)

    spy_on("iter_pending_waits", lambda row: row[0])
    spy_on("iter_items", lambda item: item.idx)
    return read


def test_a_resumed_job_leaves_its_items_at_the_provider_unread(
    sandbox: Sandbox, store_path: Path, read_back: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """Items whose calls are in a provider batch still there wait for it on resume without
    their rows being read back one by one (one query by batch), and end from its answers,
    each once."""
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.4, batch_finalizing_s=0.01)
    chain = ChatPromptTemplate.from_template("Say {x}") | make_openai(sandbox) | StrOutputParser()
    job = batchain.submit(chain, [{"x": i} for i in range(40)], store=store_path, poll_min=0.02)
    assert job.status is JobStatus.WAITING
    read_back.clear()  # what the resume reads
    done = batchain.Job.open(job.id, store=store_path, chain=chain).wait()
    assert done.counts["succeeded"] == 40 and read_back == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # e.g. an item finished twice
    assert done.outputs()[7].endswith("Say 7")
    assert len(sandbox.ledger()) == 40 and not sandbox.duplicates()
    assert sum(line.calls for line in done.report().lines) == 40  # all accounted


def test_a_new_batch_job_feeds_its_inputs_as_stored_without_reading_them_back(
    sandbox: Sandbox, store_path: Path, read_back: list[int]
) -> None:
    """Batch mode stores every input before running any; a new job then feeds them from
    what it just stored (their stored JSON, as a resume would read it) instead of reading
    them back from the store."""
    sandbox.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    chain = ChatPromptTemplate.from_template("Say {x}") | make_openai(sandbox) | StrOutputParser()
    job = batchain.run(chain, [{"x": i} for i in range(30)], store=store_path, mode="batch", poll_min=0.02)
    assert job.counts["succeeded"] == 30 and read_back == []
    assert job.outputs()[4].endswith("Say 4")
    assert len(sandbox.ledger()) == 30 and not sandbox.duplicates()


def test_a_call_to_resend_after_the_chain_changed_fails_clearly(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(
        batch_validating_s=0.01,
        batch_processing_s=0.3,
        batch_finalizing_s=0.01,
        batch_expire_after_fraction=0.5,
    )
    model = make_openai(sandbox)
    old = ChatPromptTemplate.from_template("Old prompt {x}") | model | StrOutputParser()
    job = batchain.submit(old, [{"x": i} for i in range(20)], store=store_path, poll_min=0.02)
    new = ChatPromptTemplate.from_template("New prompt {x}") | model | StrOutputParser()
    reopened = batchain.Job.open(job.id, store=store_path, chain=new).wait()
    counts = reopened.counts
    assert counts["succeeded"] == 10 and counts["failed"] == 10  # the expired half
    assert all("chain changed" in e.error["message"] for e in reopened.errors())
    assert len(sandbox.ledger()) == 10  # nothing was sent under a key it does not match
    sandbox.configure(batch_expire_after_fraction=None)
    retried = batchain.Job.open(job.id, store=store_path, chain=new).retry()
    assert retried.counts["succeeded"] == 20
    assert sum("New prompt" in o for o in retried.outputs()) == 10


def openai_body(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        **extra,
    }


def anthropic_body(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 3},
    }


ANSWERS = {
    "openai": [
        (openai_body({"role": "assistant", "content": "Hello there."}), True),
        (openai_body({"role": "assistant", "content": "", "refusal": None, "annotations": []}), True),
        (openai_body({"role": "assistant", "content": "naïve “quotes” 🐈\n"}, service_tier="default"), True),
        (openai_body({"role": "assistant", "content": None, "refusal": "I can't help with that."}), False),
        (
            openai_body(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                }
            ),
            False,
        ),
    ],
    "anthropic": [
        (anthropic_body([{"type": "text", "text": "Hello there."}]), True),
        (anthropic_body([{"type": "text", "text": "cut short", "citations": None}], "max_tokens"), True),
        (anthropic_body([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]), False),
        (anthropic_body([{"type": "tool_use", "id": "t1", "name": "f", "input": {}}], "tool_use"), False),
        (anthropic_body([{"type": "text", "text": "No."}], "refusal"), False),
    ],
}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_answer_text_is_what_the_model_and_a_string_parser_make_of_it(
    sandbox: Sandbox, provider: str
) -> None:
    """The bulk path reads a plain answer's text instead of parsing it the model's way
    (:class:`TextShortcut`): only where both give the same output."""
    model = make_openai(sandbox) if provider == "openai" else make_anthropic(sandbox)
    template = template_of(ChatPromptTemplate.from_template("Say {x}") | model | StrOutputParser())
    assert template is not None
    adapter, fast = template.adapter, template.fast
    for body, plain in ANSWERS[provider]:
        for answer in (body, json.dumps(body)):  # parsed, or still text
            text = adapter.plain_text(answer)
            assert (text is not None) is plain, body
            if text is not None:
                generations = parse_answer(adapter, fast.model, template.base, answer, None).generations
                assert text == fast.parse(generations[0].message, generations)


def test_text_shortcut_checks_itself_and_turns_off_when_it_differs(sandbox: Sandbox) -> None:
    template = template_of(
        ChatPromptTemplate.from_template("Say {x}") | make_openai(sandbox) | StrOutputParser()
    )
    assert template is not None
    shortcut = TextShortcut(template.fast, template.adapter, template.base)
    assert shortcut.active
    body = openai_body({"role": "assistant", "content": "the text"})
    full_parses = []

    def full() -> str:
        full_parses.append(1)
        return "what the parser made"

    # the first answer is parsed the model's way as well, and they differ
    assert shortcut.output(template.adapter, body, full) == "what the parser made"
    assert not shortcut.active
    assert shortcut.output(template.adapter, body, full) == "what the parser made"
    assert len(full_parses) == 2
    # another parser than the string one: never taken
    other = template_of(ChatPromptTemplate.from_template("Say {x}") | make_openai(sandbox))
    assert other is not None and not TextShortcut(other.fast, other.adapter, other.base).active


def run_ordinary(chain: Any, rows: list[Any], store: Path) -> batchain.Job:
    """The same chain in batch mode on the ordinary path (a callback keeps it off the fast
    and bulk paths)."""
    return batchain.run(
        chain,
        rows,
        mode="batch",
        store=store,
        progress=False,
        poll_min=0.02,
        callbacks=[BaseCallbackHandler()],
    )


def test_text_shortcut_agrees_with_the_model_over_a_batch_run(sandbox: Sandbox, store_path: Path) -> None:
    sandbox.configure(**FAST)
    chain = ChatPromptTemplate.from_template("Say {x}") | make_anthropic(sandbox) | StrOutputParser()
    rows = [{"x": f"thing {i}"} for i in range(6)]
    job = run_batch(chain, rows, store_path)
    ordinary = run_ordinary(chain, rows, store_path.with_name("b.sqlite"))
    assert job.stats["bulk_path"] == "on" and ordinary.stats["fast_path"] != "on"
    assert job.outputs() == ordinary.outputs()


class Odd(BaseOutputParser[Any]):
    """Passes text on, except text that mentions "odd": a dict the next prompt rejects."""

    def parse(self, text: str) -> Any:
        return {"wrong": text} if "odd" in text else text


def test_stages_fail_their_items_as_the_ordinary_path_does(sandbox: Sandbox, store_path: Path) -> None:
    """An item of a chain of stages fails where the chain would: a provider error at the
    first stage, the next prompt rejecting a stage's output, a parser at the last stage;
    the others go on. Each call is paid once, and the errors are the ordinary path's."""
    sandbox.configure(**FAST)
    chain = (
        ChatPromptTemplate.from_template("{x}")
        | make_openai(sandbox)
        | Odd()
        | ChatPromptTemplate.from_template("Again: {text}")
        | make_anthropic(sandbox)
        | Picky()
    )
    inputs = [{"x": "fine"}, {"x": "[[fail:400]] no"}, {"x": "an odd one"}, {"x": "a bad one"}, {"x": "ok"}]
    job = run_batch(chain, inputs, store_path, window=2)
    assert job.stats["bulk_path"] == "on: 2 stages"
    assert [r.status.value for r in job.results()] == ["succeeded", "failed", "failed", "failed", "succeeded"]
    # stage 1: the 4 calls not refused; stage 2: the 3 items the first stage passed on
    assert len(sandbox.ledger()) == 7 and not sandbox.duplicates()
    assert sum(line.calls for line in job.report().lines) == 7
    ordinary = run_ordinary(chain, inputs, store_path.with_name("b.sqlite"))
    assert ordinary.stats["bulk_path"] != "on"
    assert job.outputs() == ordinary.outputs() and job.outputs()[0].endswith("FINE")

    def errors(j: batchain.Job) -> dict[int, str]:
        return {e.index: e.error["type"] for e in j.errors() if e.error is not None}

    assert errors(job) == errors(ordinary)
    assert errors(job)[3] == "OutputParserException"


def test_a_chain_of_stages_reruns_from_the_cache_and_shares_identical_calls(
    sandbox: Sandbox, store_path: Path
) -> None:
    sandbox.configure(**FAST)
    text = StrOutputParser()
    chain = (
        ChatPromptTemplate.from_template("About {x}")
        | make_openai(sandbox)
        | text
        | ChatPromptTemplate.from_template("Shorter: {text}")
        | make_openai(sandbox, "gpt-4o")
        | text
    )
    inputs = [{"x": i % 5} for i in range(20)]
    first = run_batch(chain, inputs, store_path, window=3)
    assert first.counts["succeeded"] == 20 and first.stats["bulk_path"] == "on: 2 stages"
    assert len(sandbox.ledger()) == 10 and not sandbox.duplicates()
    assert first.call_stats["paid"] == 10
    second = run_batch(chain, inputs, store_path)
    assert second.outputs() == first.outputs()
    assert len(sandbox.ledger()) == 10  # nothing paid again
    # a window larger than the job: rows are told their answers in the window (none is
    # evicted), and one told a stage's answer is fed again for its next stage
    third = run_batch(chain, [{"x": i} for i in range(5, 12)], store_path)
    assert third.counts["succeeded"] == 7 and third.stats["items_left_window"] >= 7
    assert third.outputs()[0].endswith("About 5") and len(sandbox.ledger()) == 10 + 14
    assert not sandbox.duplicates()
