"""The public exceptions share one base and are exported; modes are checked against the enum."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import batchain
from batchain import errors

PUBLIC_ERRORS = [name for name in errors.__all__ if name != "UnknownPriceWarning"]

#: exceptions that kept the built-in base they had before BatchainError existed
OLD_BASES: dict[str, type[Exception]] = {
    "BatchCallError": RuntimeError,
    "BatchUnsupportedError": RuntimeError,
    "CallCancelled": RuntimeError,
    "ChainRefError": ValueError,
    "IllegalTransition": RuntimeError,
    "InvalidLabel": ValueError,
    "JobBusy": RuntimeError,
    "MissingInputVariable": ValueError,
    "SchemaMismatch": ValueError,
    "UnpricedModel": ValueError,
    "Unserializable": TypeError,
    "YamlChainError": ValueError,
}

#: where each exception was defined before errors.py: still importable there
OLD_HOMES = {
    "BatchCallError": "batchain.engine.batching",
    "BatchUnsupportedError": "batchain.engine.calls",
    "BudgetExhausted": "batchain.engine.budget",
    "CallCancelled": "batchain.engine.batching",
    "ChainRefError": "batchain.chains.ref",
    "IllegalTransition": "batchain.states",
    "InputError": "batchain.cli.datafiles",
    "InvalidLabel": "batchain.chains.yamlchain",
    "JobBusy": "batchain.engine.lifecycle",
    "MissingInputVariable": "batchain.chains.yamlchain",
    "OutputError": "batchain.cli.datafiles",
    "SchemaMismatch": "batchain.chains.yamlchain",
    "UnknownPriceWarning": "batchain.cost",
    "UnpricedModel": "batchain.engine.budget",
    "Unserializable": "batchain.serialize",
    "YamlChainError": "batchain.chains.yamlchain",
}


@pytest.mark.parametrize("name", PUBLIC_ERRORS)
def test_every_public_exception_is_a_batchain_error_exported_from_batchain(name: str) -> None:
    cls = getattr(batchain, name)
    assert cls is getattr(errors, name)
    assert issubclass(cls, batchain.BatchainError)
    assert name in batchain.__all__
    if name in OLD_BASES:
        assert issubclass(cls, OLD_BASES[name])


@pytest.mark.parametrize("name", sorted(OLD_HOMES))
def test_old_import_paths_still_work(name: str) -> None:
    module = __import__(OLD_HOMES[name], fromlist=[name])
    assert getattr(module, name) is getattr(batchain, name)


def test_the_list_of_exceptions_is_complete() -> None:
    """Every exception class errors.py defines is in its __all__ (and so exported)."""
    defined = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, BaseException)}
    assert defined == set(errors.__all__)
    assert set(errors.__all__) <= set(batchain.__all__)


def test_cli_and_internal_signals() -> None:
    from batchain.cli import CliError
    from batchain.engine.scheduler import JobStopping

    assert issubclass(CliError, batchain.BatchainError)
    assert issubclass(JobStopping, batchain.BatchainError)
    assert issubclass(batchain.UnknownPriceWarning, UserWarning)
    assert not issubclass(batchain.UnknownPriceWarning, batchain.BatchainError)


def test_enums_are_their_strings() -> None:
    from batchain.states import LinkSource

    assert [str(m) for m in batchain.Mode] == ["realtime", "batch", "auto", "flex"]
    assert [str(t) for t in batchain.Tier] == ["realtime", "batch", "flex"]
    assert [str(s) for s in LinkSource] == ["paid", "shared", "replay", "cache"]
    assert batchain.Mode.BATCH == "batch" and batchain.Tier.BATCH == "batch"
    assert batchain.Mode.parse("auto") is batchain.Mode.AUTO
    assert batchain.Mode.parse(batchain.Mode.REALTIME) is batchain.Mode.REALTIME
    assert json.dumps({"mode": batchain.Mode.AUTO}) == '{"mode": "auto"}'


@pytest.mark.parametrize("bad", ["turbo", "Batch", ""])
def test_unknown_mode_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(batchain.InvalidOption) as info:
        batchain.Mode.parse(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "realtime, batch, auto, flex" in message
    assert isinstance(info.value, ValueError)  # code catching ValueError keeps working


def test_run_refuses_an_unknown_mode_before_anything_runs() -> None:
    from langchain_core.runnables import RunnableLambda

    with pytest.raises(
        batchain.InvalidOption, match=r"mode must be one of realtime, batch, auto, flex; got 'turbo'"
    ):
        batchain.run(RunnableLambda(lambda x: x), [1], mode="turbo", store=":memory:", progress=False)


def test_import_batchain_stays_light() -> None:
    code = (
        "import sys, batchain; batchain.BatchainError; batchain.JobBusy; batchain.Mode; batchain.Tier; "
        "print([m for m in ('langchain_core', 'openai', 'anthropic') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
