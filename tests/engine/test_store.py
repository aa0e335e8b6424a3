"""The store and the lifecycle table: transitions are enforced in one place."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import batchain
from batchain.errors import StoreError
from batchain.sandbox import Sandbox
from batchain.states import (
    TRANSITIONS,
    CallStatus,
    IllegalTransition,
    ItemStatus,
    JobStatus,
    LinkSource,
    check_transition,
)
from batchain.store import SCHEMA_VERSION, JobRecord, SQLiteStore, Usage, open_store
from batchain.store.sql import SQLStore
from tests.engine.conftest import make_openai


def _job(store: SQLStore, job_id: str = "j1") -> None:
    now = time.time()
    store.create_job(JobRecord(job_id, JobStatus.CREATED, "realtime", now, now))


def test_every_state_has_a_row_in_the_table() -> None:
    for enum_type, table in TRANSITIONS.items():
        assert set(table) == set(enum_type)  # type: ignore[call-overload]
        for targets in table.values():
            assert all(type(t) is enum_type for t in targets)


def test_terminal_states_cannot_move() -> None:
    with pytest.raises(IllegalTransition):
        check_transition(ItemStatus.SUCCEEDED, ItemStatus.PENDING)
    with pytest.raises(IllegalTransition):
        check_transition(CallStatus.SUCCEEDED, CallStatus.SENT)
    with pytest.raises(IllegalTransition):
        check_transition(JobStatus.CANCELLED, JobStatus.RUNNING)
    check_transition(JobStatus.COMPLETED, JobStatus.RUNNING)  # retry of failed items


def test_job_status_changes_go_through_the_table(store_path: Path) -> None:
    with SQLiteStore(store_path) as store:
        _job(store)
        store.set_job_status("j1", JobStatus.RUNNING)
        store.set_job_status("j1", JobStatus.COMPLETED)
        with pytest.raises(IllegalTransition):
            store.set_job_status("j1", JobStatus.WAITING)
        assert store.get_job("j1").status == JobStatus.COMPLETED  # type: ignore[union-attr]


def test_item_cannot_finish_twice(store_path: Path) -> None:
    with SQLiteStore(store_path) as store:
        _job(store)
        store.add_items("j1", [(0, '"a"'), (1, '"b"')])
        store.finish_item("j1", 0, ItemStatus.SUCCEEDED, '"A"')
        with pytest.raises(IllegalTransition, match="items #0 cannot become failed"):
            store.finish_item("j1", 0, ItemStatus.FAILED, error="{}")
        store.finish_item("j1", 1, ItemStatus.FAILED, error='{"type":"X","message":"m"}')
        assert store.item_counts("j1") == {"succeeded": 1, "failed": 1}
        # what each statement wrote: the status and output of one, the status and error of the other
        got = [(r.status, r.output, r.error) for r in store.iter_items("j1")]
        assert got == [("succeeded", '"A"', None), ("failed", None, '{"type":"X","message":"m"}')]
        assert store.reset_items("j1", (ItemStatus.FAILED,)) == 1
        assert store.item_counts("j1") == {"succeeded": 1, "pending": 1}


def test_a_succeeded_call_is_never_overwritten(store_path: Path) -> None:
    with SQLiteStore(store_path) as store:
        store.begin_call(
            "k", provider="openai", model="m", endpoint="/e", job_id="j1", status=CallStatus.SENT
        )
        store.call_succeeded("k", '{"ok":1}', Usage(10, 2, requests=1), "realtime")
        # a late duplicate attempt must not flip it back
        store.begin_call(
            "k", provider="openai", model="m", endpoint="/e", job_id="j2", status=CallStatus.SENT
        )
        store.call_failed("k", "boom", retryable=False)
        store.commit()
        rec = store.get_call("k")
        assert rec is not None
        assert rec.status == CallStatus.SUCCEEDED
        assert rec.response == '{"ok":1}'
        assert rec.job_id == "j1"
        assert (rec.usage.input_tokens, rec.usage.output_tokens) == (10, 2)


def test_writes_survive_reopening_and_schema_is_versioned(store_path: Path) -> None:
    store = SQLiteStore(store_path)
    _job(store)
    store.add_items("j1", [(i, str(i)) for i in range(2500)])
    store.commit()
    store.close()
    again = SQLiteStore(store_path)
    assert [i.idx for i in again.iter_items("j1")] == list(range(2500))
    row = again._read("SELECT value FROM meta WHERE key='schema_version'")[0]
    assert int(row[0]) == SCHEMA_VERSION
    again.close()


_CREATOR = """
import json, sys, time
from pathlib import Path
from batchain.states import JobStatus
from batchain.store import JobRecord, open_store

folder, me, stores = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
for trial, where in enumerate(stores):
    while not (folder / f"go.{trial}").exists():  # every process starts each trial together
        time.sleep(0.001)
    try:
        store = open_store(where)
        now = time.time()
        store.create_job(JobRecord(f"job-{me}", JobStatus.CREATED, "realtime", now, now))
        store.commit()
        store.close()
        print("ok", flush=True)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}".replace("\\n", " "), flush=True)
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_creating_one_new_store_at_once_all_open_it(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """SQLite answers busy at once, without waiting, to a second process switching a new
    store to WAL; before opening retried it, about one trial in four of three processes
    failed ("locked"), and the loser's clean-up unlinked the file under the others
    ("disk I/O error"). PostgreSQL: the schema is made under the store's lock."""
    processes, trials = 4, 20
    if backend == "sqlite":
        stores: list[str] = [str(tmp_path / str(trial) / "store.sqlite") for trial in range(trials)]
    else:
        from tests.pgserver import drop_schema, fresh_schema_url

        request.getfixturevalue("pg_url")  # skips (or, under CI, fails) without a server
        trials = 8
        stores = [fresh_schema_url() for _ in range(trials)]
        for url in stores:
            request.addfinalizer(lambda url=url: drop_schema(url))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATOR, str(tmp_path), str(me), json.dumps(stores)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for me in range(processes)
    ]
    outcomes = []
    for trial in range(trials):
        (tmp_path / f"go.{trial}").touch()
        outcomes.append([p.stdout.readline().strip() for p in procs if p.stdout is not None])
    for p in procs:
        p.communicate(timeout=60)
    assert all(out == ["ok"] * processes for out in outcomes), outcomes
    for where in stores:
        store = open_store(where)
        assert sorted(j.id for j in store.list_jobs()) == [f"job-{me}" for me in range(processes)]
        store.close()


def test_a_store_whose_creator_never_lets_go_is_refused_after_the_busy_timeout(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a new store that another connection keeps reading waits for it only up to
    the busy timeout, WAL switch and its retries included, and then gives up with the
    usual one line: it never waits for ever."""
    monkeypatch.setenv("BATCHAIN_BUSY_TIMEOUT_S", "0.5")
    holder = sqlite3.connect(store_path, isolation_level=None)
    holder.execute("CREATE TABLE made_by_another (x)")  # in rollback mode, not yet WAL
    holder.execute("BEGIN")
    holder.execute("SELECT * FROM made_by_another").fetchall()  # its read lock stays held
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="is locked"):
            SQLiteStore(store_path)
        waited = time.monotonic() - t0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert 0.4 <= waited < 5, waited
    SQLiteStore(store_path).close()  # once the lock is let go, the store opens


def test_newer_schema_is_refused(store_path: Path) -> None:
    SQLiteStore(store_path).close()
    import sqlite3

    con = sqlite3.connect(store_path)
    con.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(RuntimeError, match="newer"):
        SQLiteStore(store_path)


def test_a_reader_on_its_own_connection_is_not_held_up_by_the_shared_one(store_path: Path) -> None:
    with SQLiteStore(store_path) as st:
        st.create_job(JobRecord("j", JobStatus.CREATED, "realtime", time.time(), time.time()))
    shared = SQLiteStore(store_path, read_only=True)
    own = SQLiteStore(store_path, read_only=True, own_connection=True)
    try:
        assert own._db is not shared._db and own._db.lock is not shared._db.lock
        with shared._db.lock:  # a long read on the shared connection (from another thread)
            got: list[object] = []
            reader = threading.Thread(target=lambda: got.append(own.get_job("j")))
            reader.start()
            reader.join(timeout=5)
            assert got and got[0] is not None
        with pytest.raises(ValueError, match="read-only"):
            SQLiteStore(store_path, own_connection=True)
    finally:
        own.close()
        shared.close()


def _in_file_alone(path: Path) -> int:
    """Items in the store file itself, its WAL ignored (``immutable``: SQLite reads the
    file as it is): what checkpoints have copied there."""
    con = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
    try:
        return int(con.execute("SELECT COUNT(*) FROM items").fetchone()[0])
    except sqlite3.DatabaseError:
        # not even the schema is there yet, or a checkpoint is copying pages as we read
        # ("malformed": immutable promises SQLite a file that does not change)
        return 0
    finally:
        con.close()


def _checkpointers(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"batchain-checkpoint:{path.resolve()}"]


def test_a_thread_of_its_own_copies_the_wal_into_the_store_file(store_path: Path) -> None:
    with SQLiteStore(store_path) as store:
        _job(store)
        # about 400 pages: far below the writer's own checkpoint (BACKSTOP_PAGES)
        store.add_items("j1", [(i, json.dumps("x" * 800)) for i in range(2000)])
        store.commit()
        assert len(_checkpointers(store_path)) == 1
        deadline = time.monotonic() + 10
        seen = _in_file_alone(store_path)
        while seen < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = _in_file_alone(store_path)
        assert seen == 2000
    # closed: the thread is gone, and so is the WAL (no other connection held it)
    assert _checkpointers(store_path) == []
    assert not store_path.with_name(store_path.name + "-wal").exists()
    assert _in_file_alone(store_path) == 2000  # the file no longer changes: a whole read


def test_a_read_only_store_copies_nothing(store_path: Path) -> None:
    with SQLiteStore(store_path) as store:
        _job(store)
    with SQLiteStore(store_path, read_only=True):
        assert _checkpointers(store_path) == []


def _open_files(under: Path) -> set[str]:
    """Files under ``under`` this process holds open (Linux)."""
    out: set[str] = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(under)):
            out.add(Path(target).name)
    return out


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd (Linux)")
def test_a_dropped_job_handle_closes_the_store_it_opened(fast: Sandbox, tmp_path: Path) -> None:
    """A process that runs many jobs on many store files keeps open only the stores a job
    handle still holds (before, each run left its file, WAL and shared memory open)."""
    chain = ChatPromptTemplate.from_template("Say {x}") | make_openai(fast) | StrOutputParser()
    for i in range(3):
        batchain.run(chain, [{"x": i}], store=tmp_path / f"dropped{i}.sqlite", progress=False)
    kept = batchain.run(chain, [{"x": 9}], store=tmp_path / "kept.sqlite", progress=False)
    with pytest.raises(ValueError, match="already exists"):
        batchain.run(chain, [{"x": 9}], store=tmp_path / "kept.sqlite", job_id=kept.id, progress=False)
    with pytest.raises(KeyError):
        batchain.Job.open("no-such-job", store=tmp_path / "missing-job.sqlite")
    gc.disable()  # closed when the handle is dropped, not whenever the collector runs
    try:
        open_store(tmp_path / "next.sqlite").close()  # opening a store closes the dropped ones
    finally:
        gc.enable()
    assert {name.split(".")[0] for name in _open_files(tmp_path)} == {"kept"}
    outputs = kept.outputs()  # (a call in an assert would keep the handle alive)
    assert outputs[0].endswith("Say 9")  # the handle in use keeps its store
    # a handle given another's store keeps it open when the first is dropped (a worker
    # opens a job, then opens it again with its chain on the same store)
    again = batchain.Job.open(kept.id, store=kept.store, chain=chain)
    del kept
    open_store(tmp_path / "next.sqlite").close()
    outputs = again.outputs()
    assert outputs[0].endswith("Say 9") and "kept.sqlite" in _open_files(tmp_path)
    del again
    open_store(tmp_path / "next.sqlite").close()
    assert "kept.sqlite" not in _open_files(tmp_path)
    own = SQLiteStore(tmp_path / "own.sqlite")
    batchain.run(chain, [{"x": 1}], store=own, progress=False)
    gc.collect()
    open_store(tmp_path / "next.sqlite").close()
    assert own.list_jobs()  # a store the caller passed in is the caller's to close
    own.close()


def test_rows_inserted_many_at_a_time_keep_each_rows_conflict_rule(any_store: str | Path) -> None:
    """Items, waits and links written many rows to a statement (on SQLite; the rows past
    the last full statement one by one) are each inserted, ignored or replaced as one row
    alone would be, rows repeated within one statement included, and counted once."""
    store = open_store(any_store)
    assert isinstance(store, SQLStore)
    try:
        _job(store, "j")
        store.add_items("j", [(i, str(i)) for i in range(0, 250, 2)])
        store.add_items("j", [(i, json.dumps(-i)) for i in range(250)])  # the even ones are kept
        assert store.item_counts("j") == {"pending": 250}
        assert {r.idx: r.input for r in store.iter_items("j")} == {
            i: str(i) if i % 2 == 0 else json.dumps(-i) for i in range(250)
        }
        # each of 60 items is waited for 4 or 5 times over: the last row of each wins
        store.set_waits("j", [(i % 60, f"k{i}") for i in range(260)])
        waits = {idx: key for idx, key, _ in store.waits_of("j", list(range(250)))}
        assert waits == {j: f"k{max(i for i in range(260) if i % 60 == j)}" for j in range(60)}
        store.link_calls([("j", f"k{i % 70}", i % 70, LinkSource.PAID) for i in range(250)])
        links = store._read("SELECT item_idx, key FROM job_calls WHERE job_id=? ORDER BY item_idx", ("j",))
        assert [tuple(r) for r in links] == [(i, f"k{i}") for i in range(70)]
        store.commit()
    finally:
        store.close()
