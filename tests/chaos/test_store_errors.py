"""Store problems are one clear line each, and refusing a store changes nothing in it
(issue 12, case 11): a newer schema, a damaged file, a store that can only be read."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from batchain import StoreError
from batchain.cli import run_cli
from batchain.states import JobStatus
from batchain.store import SQLiteStore
from batchain.store.records import JobRecord


def _store_with_a_job(path: Path) -> None:
    with SQLiteStore(path) as st:
        now = time.time()
        st.create_job(
            JobRecord(id="j1", status=JobStatus.COMPLETED, mode="batch", created_at=now, updated_at=now)
        )
        st.add_items("j1", [(0, '{"x": 1}')])
        st.commit()


def _schema(path: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(path)
    try:
        return sorted(con.execute("SELECT type, name FROM sqlite_master").fetchall())
    finally:
        con.close()


def test_a_newer_store_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "newer.sqlite"
    _store_with_a_job(path)
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.execute("CREATE INDEX calls_by_job ON calls(job_id)")  # an index an old build dropped
    con.commit()
    con.close()
    before = _schema(path)
    with pytest.raises(StoreError, match="schema version 99, newer than this batchain"):
        SQLiteStore(path)
    assert _schema(path) == before


def test_a_damaged_store_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "damaged.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="damaged or not a batchain store"):
        SQLiteStore(path)
    code = run_cli(["jobs", "--store", str(path)])
    err = capsys.readouterr().err
    assert code == 1 and "internal error" not in err
    assert err.count("\n") == 1 and "is damaged or not a batchain store" in err


def test_a_read_only_store_can_be_read_not_changed(tmp_path: Path) -> None:
    path = tmp_path / "ro.sqlite"
    _store_with_a_job(path)
    data = [path, path.with_name(path.name + "-wal")]  # the data; -shm is SQLite's scratch index

    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in data if p.exists() and p.stat().st_size}

    before = files()
    with SQLiteStore(path, read_only=True) as st:
        assert st.read_only
        job = st.get_job("j1")
        assert job is not None and job.status == JobStatus.COMPLETED
        assert [i.idx for i in st.iter_items("j1")] == [0]
        with pytest.raises(StoreError, match="read-only"):
            st.update_job("j1", n_items=5)
    assert files() == before
