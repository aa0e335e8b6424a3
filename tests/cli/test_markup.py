"""User-supplied strings are rendered as text, never as rich markup (issue 12, case 9)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableLambda

import batchain
from batchain.states import JobStatus
from batchain.store import SQLiteStore
from batchain.store.records import JobRecord
from tests.cli.conftest import Cli

ODD = "x[/]y[bold]"


def test_a_job_id_with_markup_is_shown_as_text(cli_offline: Cli) -> None:
    with SQLiteStore(cli_offline.store) as st:  # a store written by an older version
        now = time.time()
        st.create_job(JobRecord(id=ODD, status=JobStatus.PAUSED, mode="b[/]", created_at=now, updated_at=now))
    listed = cli_offline.here("jobs")
    assert listed.returncode == 0, listed.stderr
    assert ODD in listed.stdout
    shown = cli_offline.here("status", ODD)
    assert shown.returncode == 0, shown.stderr
    assert ODD in shown.stdout


def test_a_new_job_id_must_be_safe_to_type(tmp_path: Path) -> None:
    chain = RunnableLambda(lambda row: row)
    with pytest.raises(batchain.InvalidOption, match=r"job id 'x\[/\]y\[bold\]'"):
        batchain.run(chain, [1], job_id=ODD, store=tmp_path / "s.sqlite", progress=False)
