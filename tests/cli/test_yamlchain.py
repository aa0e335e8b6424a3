"""YAML chains, in-process: the file format, its errors, and the steps around the model.

The shipped examples run for real against the sandbox (realtime and batch), so the
files in examples/ are known to work end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import batchain
from batchain.chains.ref import ChainRefError
from batchain.chains.yamlchain import (
    InvalidLabel,
    MissingInputVariable,
    SchemaMismatch,
    YamlChainError,
    is_yaml_ref,
    load_yaml_chain,
)
from batchain.sandbox import Sandbox
from tests.cli.conftest import REPO
from tests.conftest import TEST_KEY

EXAMPLES = REPO / "examples"
MINIMAL = "model: {provider: openai, name: gpt-4o-mini}\nprompt: 'Say hi to {name}'\n"


@pytest.fixture
def sandbox_env(cli_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("OPENAI_BASE_URL", cli_sandbox.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", cli_sandbox.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    return cli_sandbox


def write(tmp_path: Path, text: str, name: str = "chain.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run(chain: object, rows: list[object], store: Path, mode: str = "realtime") -> batchain.Job:
    # no reuse between jobs: every run goes to the provider, in the mode asked for
    return batchain.run(chain, rows, mode=mode, store=store, progress=False, poll_min=0.1, cache=False)  # type: ignore[arg-type]


# -- the shipped examples ----------------------------------------------------------------------


def test_examples_run(sandbox_env: Sandbox, tmp_path: Path) -> None:
    """Every shipped example, realtime; in batch mode they run in the CLI and README tests."""
    sandbox_env.configure(batch_processing_s=0.05)
    store = tmp_path / "s.sqlite"
    headlines = [{"id": "a", "headline": "Chipmaker unveils faster AI processor"}]
    notes = [json.loads(line) for line in (EXAMPLES / "notes.jsonl").read_text().splitlines()]
    phrases = [{"text": "Where is the station?", "language": "French"}]
    pairs = [{"question": "2 + 2?", "answer": "4", "reference": "4"}]
    runs = (("classify", headlines), ("extract", notes), ("translate", phrases), ("judge", pairs))
    for name, rows in runs:
        job = run(load_yaml_chain(EXAMPLES / f"{name}.yaml"), rows, store)  # type: ignore[arg-type]
        assert job.counts["succeeded"] == len(rows), (name, job.errors())
        outputs = job.outputs()
        if name == "classify":
            assert outputs == ["tech"]
        elif name == "extract":
            assert all(set(o) == {"topic", "places", "mood"} for o in outputs)
            assert all(o["mood"] in ("positive", "neutral", "negative") for o in outputs)
        elif name == "judge":
            assert outputs[0]["verdict"] in ("correct", "incorrect") and outputs[0]["reason"]
        else:
            assert isinstance(outputs[0], str) and outputs[0]
    batch = run(load_yaml_chain(EXAMPLES / "translate.yaml"), phrases, store, "batch")
    assert batch.counts["succeeded"] == 1
    tiers = {(e.provider, e.tier) for e in sandbox_env.ledger()}
    assert tiers == {("openai", "realtime"), ("anthropic", "realtime"), ("anthropic", "batch")}


def test_anthropic_with_a_schema(sandbox_env: Sandbox, tmp_path: Path) -> None:
    text = (EXAMPLES / "extract.yaml").read_text()
    text = text.replace("provider: openai", "provider: anthropic").replace("gpt-4o-mini", "claude-haiku-4-5")
    chain = load_yaml_chain(write(tmp_path, text))
    job = run(chain, [{"text": "Rain in Paris again."}], tmp_path / "s.sqlite")
    assert job.counts["succeeded"] == 1 and set(job.outputs()[0]) == {"topic", "places", "mood"}


def test_gemini_with_a_schema_in_batch_mode(
    sandbox_env: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("langchain_google_genai")
    monkeypatch.setenv("GOOGLE_API_KEY", TEST_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", sandbox_env.gemini_base_url)
    sandbox_env.configure(batch_validating_s=0.01, batch_processing_s=0.05, batch_finalizing_s=0.01)
    text = (EXAMPLES / "extract.yaml").read_text()
    text = text.replace("provider: openai", "provider: gemini").replace("gpt-4o-mini", "gemini-2.5-flash")
    chain = load_yaml_chain(write(tmp_path, text))
    rows = [{"text": "Rain in Paris again."}, {"text": "Sun over Rome."}]
    job = batchain.run(chain, rows, mode="batch", store=tmp_path / "s.sqlite", progress=False, poll_min=0.02)
    assert job.counts["succeeded"] == 2 and set(job.outputs()[0]) == {"topic", "places", "mood"}
    assert {(e.provider, e.tier) for e in sandbox_env.ledger()} == {("gemini", "batch")}
    assert len(sandbox_env.ledger()) == 2 and not sandbox_env.duplicates()


# -- per-item failures -------------------------------------------------------------------------


def test_missing_variable_fails_the_item_and_names_it(sandbox_env: Sandbox, tmp_path: Path) -> None:
    chain = load_yaml_chain(EXAMPLES / "classify.yaml")
    rows: list[object] = [
        {"headline": "Striker scores twice in the cup final"},
        {"title": "no headline here"},
        "Stocks rally as investors cheer bank earnings",  # a plain value fills the one variable
        [1, 2],
    ]
    job = run(chain, rows, tmp_path / "s.sqlite")
    results = job.results()
    assert [r.status.value for r in results] == ["succeeded", "failed", "succeeded", "failed"]
    assert results[0].output == "sports" and results[2].output == "business"
    assert results[1].error is not None and results[1].error["type"] == "MissingInputVariable"
    message = results[1].error["message"]
    assert "'headline'" in message and "the input has: title" in message
    assert results[3].error is not None and "needs an object" in results[3].error["message"]
    assert len(sandbox_env.ledger()) == 2  # nothing was sent for the bad rows


def test_label_normalisation_and_invalid_answers() -> None:
    from batchain.chains.yamlchain import _LabelMatch

    match = _LabelMatch("x/classify.yaml", ["Tech", "Business", "not sure"])
    assert match("tech") == "Tech"
    assert match("  BUSINESS.\n") == "Business"
    assert match('"Not   Sure"') == "not sure"
    with pytest.raises(InvalidLabel, match=r"'technology' is not one of the labels of classify.yaml: Tech"):
        match("technology")


def test_answers_outside_the_labels_fail_clearly(sandbox_env: Sandbox, tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "labels: [yes, no]\n")  # yes/no stay text (YAML 1.2)
    job = run(load_yaml_chain(path), [{"name": "Ada"}], tmp_path / "s.sqlite")
    [error] = job.errors()
    assert error.error is not None and error.error["type"] == "InvalidLabel"
    assert "is not one of the labels of chain.yaml: yes, no" in error.error["message"]


def test_schema_check() -> None:
    from batchain.chains.yamlchain import _SchemaCheck

    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "mood": {"enum": ["up", "down"]},
        },
        "required": ["n"],
    }
    check = _SchemaCheck("facts.yaml", schema)
    assert check({"n": 1, "tags": ["a"], "mood": "up"}) == {"n": 1, "tags": ["a"], "mood": "up"}
    for bad, needle in (
        ({}, "output has no 'n'"),
        ({"n": True}, "output.n should be integer, got boolean"),
        ({"n": 1, "tags": ["a", 2]}, "output.tags[1] should be string"),
        ({"n": 1, "mood": "sideways"}, "output.mood is 'sideways'"),
        (None, "output should be object, got null"),
    ):
        with pytest.raises(SchemaMismatch, match=r"schema of facts\.yaml") as info:
            check(bad)
        assert needle in str(info.value)


# -- errors in the file ------------------------------------------------------------------------

M = "model: {provider: openai, name: x}\n"
OPEN = "model: {provider: openai, name: x, "
BAD_FILES = [
    ("a: b: c\n", "chain.yaml:1:5: invalid YAML"),
    ("", "the file is empty"),
    ("- a list\n", "the top level must be a mapping"),
    ("prompt: hi\n", "model: missing"),
    ("model: {provider: mistral, name: x}\nprompt: hi\n", "model.provider: unknown provider 'mistral'"),
    ("model: {name: x}\nprompt: hi\n", "model.provider: missing"),
    ("model: {provider: openai}\nprompt: hi\n", "model.name: missing"),
    (OPEN + "temprature: 0}\nprompt: hi\n", "model.temprature: unknown key"),
    (OPEN + "top_k: 3}\nprompt: hi\n", "model.top_k: unknown key for provider openai"),
    (OPEN + "max_tokens: many}\nprompt: hi\n", "model.max_tokens: must be a whole"),
    (OPEN + "max_tokens: 0}\nprompt: hi\n", "model.max_tokens: must be at least 1"),
    (M, "prompt: missing"),
    (M + "prompt: {system: hi}\n", "prompt.user: missing"),
    (M + "prompt: {user: hi, assistant: x}\n", "prompt.assistant: unknown"),
    (M + "prompt: 'a { b'\n", "prompt.user: invalid template"),
    (M + "prompt: 'a {}'\n", "prompt.user: invalid template: empty {}"),
    (M + "prompt: hi\nlabels: []\n", "labels: must be a non-empty list"),
    (M + "prompt: hi\nlabels: [a, A]\n", "labels[1]: 'A' repeats 'a'"),
    (M + "prompt: hi\nlabels: [true]\n", "labels[0]: must be text"),
    (M + "prompt: hi\nschema: {type: string}\n", "schema: the top level"),
    (
        M + "prompt: hi\nschema: {type: object, properties: {}, required: [a]}\n",
        "schema.required: 'a' is not in schema.properties",
    ),
    (
        M + "prompt: hi\nlabels: [a]\nschema: {type: object, properties: {}}\n",
        "labels: give either labels or schema",
    ),
    (M + "prompt: hi\noutput: text\n", "output: unknown key"),
    (
        "model: {provider: openai, name: x, parameters: {temperature: 1}}\nprompt: hi\n",
        "model.parameters.temperature: set it directly under model",
    ),
]


@pytest.mark.parametrize(("text", "needle"), BAD_FILES)
def test_bad_files_name_the_file_and_the_key(
    text: str, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    path = write(tmp_path, text)
    with pytest.raises(YamlChainError) as info:
        load_yaml_chain(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert needle in message, message
    assert isinstance(info.value, ChainRefError)  # the CLI and the engine treat it as a bad reference


def test_missing_file_and_missing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(YamlChainError, match=r"chain file not found: .*nope\.yaml"):
        load_yaml_chain(tmp_path / "nope.yaml")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(YamlChainError, match=r"model.provider: openai needs an API key in \$OPENAI_API_KEY"):
        load_yaml_chain(write(tmp_path, MINIMAL))
    monkeypatch.setenv("MY_KEY", TEST_KEY)
    own_key = MINIMAL.replace("gpt-4o-mini}", "gpt-4o-mini, api_key_env: MY_KEY}")
    chain = load_yaml_chain(write(tmp_path, own_key))
    assert chain is not None


def test_model_settings_reach_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchain.chains.inspection import find_models

    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    openai = load_yaml_chain(
        write(
            tmp_path,
            "model:\n  provider: openai\n  name: gpt-4o\n  temperature: 0.5\n  max_tokens: 20\n  seed: 7\n"
            "  stop: END\n  parameters: {reasoning_effort: low, custom_field: 1}\nprompt: hi {x}\n",
        )
    )
    [model] = list(find_models(openai))
    assert (model.model_name, model.temperature, model.max_tokens, model.seed) == ("gpt-4o", 0.5, 20, 7)  # type: ignore[attr-defined]
    assert model.stop == ["END"] and model.reasoning_effort == "low"  # type: ignore[attr-defined]
    assert model.model_kwargs == {"custom_field": 1}  # type: ignore[attr-defined]  # sent as is
    assert model.openai_api_base == "http://127.0.0.1:9/v1"  # type: ignore[attr-defined]
    anthropic = load_yaml_chain(
        write(
            tmp_path, "model: {provider: anthropic, name: claude-haiku-4-5, top_k: 5}\nprompt: hi\n", "a.yml"
        ),
    )
    [claude] = list(find_models(anthropic))
    assert (claude.model, claude.max_tokens, claude.top_k) == ("claude-haiku-4-5", 1024, 5)  # type: ignore[attr-defined]


def test_is_yaml_ref() -> None:
    assert is_yaml_ref("examples/classify.yaml") and is_yaml_ref("/x/Y.YML")
    assert not is_yaml_ref("chain.py:chain") and not is_yaml_ref("pkg.mod:yaml")


def test_missing_variable_error_type() -> None:
    from batchain.chains.yamlchain import _InputCheck

    check = _InputCheck("dir/c.yaml", ("a", "b"))
    assert check({"a": 1, "b": 2, "c": 3}) == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(MissingInputVariable, match=r"input has no field 'b', which the prompt of c\.yaml"):
        check({"a": 1})
