"""Option parsing and small CLI helpers, in-process."""

from __future__ import annotations

from datetime import datetime

import pytest

from batchain.cli import CliError, run_cli
from batchain.cli.common import absolute_ref as _absolute_ref
from batchain.cli.options import given as _given
from batchain.cli.options import launch_options as _launch_options
from batchain.cli.options import parse_deadline as _parse_deadline
from batchain.options import Mode


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1.5d", 129600.0)]
)
def test_deadline_durations(text: str, seconds: float) -> None:
    assert _parse_deadline(text) == seconds


def test_deadline_datetime_and_errors() -> None:
    assert _parse_deadline("2030-01-02T03:04:05") == datetime(2030, 1, 2, 3, 4, 5)
    assert _parse_deadline(None) is None
    with pytest.raises(CliError, match="neither a duration"):
        _parse_deadline("soon")


def test_file_refs_become_absolute(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(str(tmp_path))
    assert _absolute_ref("chains/x.py:chain") == f"{tmp_path}/chains/x.py:chain"
    assert _absolute_ref("pkg.mod:chain") == "pkg.mod:chain"


def test_given_drops_unset_options() -> None:
    assert _given(a=None, b=0, c=False) == {"b": 0, "c": False}


def test_launch_options_carry_the_queue_caps() -> None:
    options = _launch_options(Mode.BATCH, False, False, None, None, 2, 50_000)
    assert options["max_open_batches"] == 2 and options["max_enqueued_tokens"] == 50_000
    assert "max_open_batches" not in _launch_options(Mode.BATCH, False, False, None, None)


def test_run_cli_returns_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--help"]) == 0
    assert run_cli(["run", "--mode", "sometimes", "x:y", "in.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("batchain: error: ") and "--mode" in err and len(err.strip().splitlines()) == 1


def test_prompt_cache_takes_auto_or_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["run", "--prompt-cache", "on", "x:y", "in.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "--prompt-cache" in err and "'on'" in err and len(err.strip().splitlines()) == 1
