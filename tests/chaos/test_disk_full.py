"""A full disk under a running job (issue 12, case 3), with the sandbox ledger as judge.

The store lives on a small filesystem of its own: a tmpfs mounted for the test (CI runs as
root), filled mid-run by a file of zeroes; without root, SQLite's own page limit raises the
same SQLITE_FULL ("database or disk is full"). The job must stop with one line naming the
store and saying the disk is full, with nothing half-written: an input is either stored or
read again. Once space is freed a resume completes every item exactly once.

The bound on money: in realtime, a call goes on the wire only once its "sent" mark is
committed (``CallManager._realtime`` awaits ``Store.durable``), so every call whose answer
could not be stored is among the calls the store had marked as sent when the write failed;
a resume reports exactly those as ``calls_lost_in_crashes``. Nothing else may be billed
twice. In batch mode nothing at all is billed twice: answers stay at the provider and are
collected again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnablePassthrough

import batchain
from batchain import StoreError
from batchain.cli import run_cli
from batchain.sandbox import Sandbox
from batchain.states import JobStatus
from batchain.store import SQLiteStore
from batchain.store.records import JobRecord
from tests.engine.conftest import make_anthropic, make_openai
from tests.pgserver import count_in

pytestmark = pytest.mark.timeout(180)

CRASH = Path(__file__).parent.parent / "engine" / "crash"
N = 160
CONCURRENCY = 20
BATCH_N = 200
#: items done when the disk fills, well before the end
FILL_AT = 15
FAST = dict(batch_validating_s=0.02, batch_processing_s=0.3, batch_finalizing_s=0.02)

ITEMS_DONE = "SELECT COUNT(*) FROM items WHERE status='succeeded'"
BATCHES = "SELECT COUNT(*) FROM provider_batches WHERE status='submitted'"
COLLECTED = "SELECT COUNT(*) FROM provider_batches WHERE status='collected'"
CALLS_SENT = "SELECT COUNT(*) FROM calls WHERE status='sent'"
#: how the command line starts an error line
CLI_ERROR = "batchain: error: "


# -- small disks ---------------------------------------------------------------------------------


class PageLimitedStore(SQLiteStore):
    """A store whose connection can be held to its present size: SQLite then refuses to
    grow it with SQLITE_FULL, the very error a full disk gives."""

    def hold(self, full: bool) -> None:
        with self._lock:
            pages = self._conn.execute("PRAGMA page_count").fetchone()[0] if full else 0xFFFFFFFE
            self._conn.execute(f"PRAGMA max_page_count={int(pages)}")


class Disk:
    """Where a store lives, and how to fill and free its disk."""

    def __init__(self, where: Path) -> None:
        self.where = where

    def store(self, name: str) -> SQLiteStore:
        return SQLiteStore(self.where / name)

    def fill(self, store: Path) -> None:
        """Leave ``store`` no room to grow."""
        raise NotImplementedError

    def free(self) -> None:
        raise NotImplementedError


class Tmpfs(Disk):
    """A real small filesystem, filled with a file of zeroes: SQLite's writes get ENOSPC."""

    def __init__(self, where: Path) -> None:
        super().__init__(where)
        where.mkdir(exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(where)],
            check=True,
            capture_output=True,
        )
        self.filler = where / "filler"

    def fill(self, store: Path) -> None:
        _restart_wal(store)
        with open(self.filler, "ab", buffering=0) as f:
            for size in (1 << 20, 1 << 16, 1 << 12, 1):
                zeros = bytes(size)
                try:
                    while True:
                        f.write(zeros)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        assert shutil.disk_usage(self.where).free == 0

    def free(self) -> None:
        self.filler.unlink()

    def unmount(self) -> None:
        done = subprocess.run(["umount", str(self.where)], capture_output=True)
        if done.returncode != 0:  # something still holds a file open: detach it anyway
            subprocess.run(["umount", "-l", str(self.where)], capture_output=True)


class PageLimit(Disk):
    """Without root: the same SQLITE_FULL, from SQLite's page limit on the store's connection."""

    def __init__(self, where: Path) -> None:
        super().__init__(where)
        where.mkdir(exist_ok=True)
        self.held: list[PageLimitedStore] = []

    def store(self, name: str) -> SQLiteStore:
        store = PageLimitedStore(self.where / name)
        self.held.append(store)
        return store

    def fill(self, store: Path) -> None:
        for held in self.held:
            held.hold(True)

    def free(self) -> None:
        for store in self.held:
            store.hold(False)


def _restart_wal(store: Path) -> None:
    """Checkpoint the store's WAL into its file and empty it, as SQLite itself does from
    time to time: the job's next writes must then grow the WAL. (Filled at another moment,
    the disk may let a job write on for a while inside a WAL that already has the room.)"""
    # a short busy timeout, tried again at once: the job's writes leave only short gaps
    con = sqlite3.connect(store, timeout=0.001)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(sqlite3.OperationalError):  # locked: try again
                busy, log, _done = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy and log == 0:
                    return
        raise AssertionError("the store's WAL could not be checkpointed")
    finally:
        con.close()


def _mount(where: Path) -> Tmpfs | str:
    """A tmpfs mounted at ``where``, or why there can be none here."""
    if sys.platform != "linux":
        return "tmpfs mounts need Linux"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs as root)"
    if shutil.which("mount") is None:
        return "no mount command"
    try:
        return Tmpfs(where)
    except subprocess.CalledProcessError as exc:
        return f"cannot mount a tmpfs here: {exc.stderr.decode().strip()}"


@contextlib.contextmanager
def _small_disk(where: Path, *, real: bool) -> Iterator[Disk]:
    """A tmpfs where one can be mounted (unmounted after), else SQLite's page limit, or a
    skip when ``real`` insists on a filesystem."""
    mounted = _mount(where)
    if isinstance(mounted, str):
        if real:
            pytest.skip(mounted)
        yield PageLimit(where)
        return
    try:
        yield mounted
    finally:
        mounted.unmount()


@pytest.fixture(params=["tmpfs", "page_limit"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Disk]:
    """Every kind of small disk: a real one, and SQLite's page limit."""
    if request.param == "page_limit":
        yield PageLimit(tmp_path / "disk")
        return
    with _small_disk(tmp_path / "disk", real=True) as d:
        yield d


@pytest.fixture
def best_disk(tmp_path: Path) -> Iterator[Disk]:
    """A real small filesystem where one can be mounted, else SQLite's page limit."""
    with _small_disk(tmp_path / "disk", real=False) as d:
        yield d


@pytest.fixture
def real_disk(tmp_path: Path) -> Iterator[Tmpfs]:
    with _small_disk(tmp_path / "disk", real=True) as d:
        assert isinstance(d, Tmpfs)
        yield d


# -- watching a run ------------------------------------------------------------------------------


class FillWhen(threading.Thread):
    """Fills the disk once ``ready(store)`` holds: a full disk arriving mid-run."""

    def __init__(self, disk: Disk, store: Path, ready: Callable[[Path], bool]) -> None:
        super().__init__(daemon=True)
        self.disk, self.store_path, self.ready = disk, store, ready
        self.filled = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 120
        try:
            while not self.done.is_set() and time.monotonic() < deadline:
                if self.ready(self.store_path):
                    self.disk.fill(self.store_path)
                    self.filled.set()
                    return
                time.sleep(0.005)
        except BaseException as exc:  # told to the test, not lost in this thread
            self.error = exc

    def __enter__(self) -> FillWhen:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()
        if self.error is not None:
            raise AssertionError(f"filling the disk failed: {self.error!r}") from self.error


def _at_least(sql: str, target: int) -> Callable[[Path], bool]:
    return lambda store: count_in(store, sql) >= target


def _then(first: Callable[[Path], bool], second: Callable[[Path], bool]) -> Callable[[Path], bool]:
    seen = [False]

    def ready(store: Path) -> bool:
        seen[0] = seen[0] or first(store)
        return seen[0] and second(store)

    return ready


def _assert_one_line(message: str, store: Path, job_id: str) -> None:
    assert "\n" not in message.strip(), message
    assert message.startswith(f"disk full: store {store} could not be written"), message
    assert f"job {job_id} stopped with nothing lost: free space on that disk, then resume it" in message


def _state(store: Path, job_id: str) -> dict[str, Any]:
    """What the store holds after the failed run (read by a connection of our own)."""
    con = sqlite3.connect(store, timeout=30)
    try:
        n_items, status = con.execute("SELECT n_items, status FROM jobs WHERE id=?", (job_id,)).fetchone()
        idx = [r[0] for r in con.execute("SELECT idx FROM items WHERE job_id=? ORDER BY idx", (job_id,))]
        done = con.execute(ITEMS_DONE).fetchone()[0]
        sent = con.execute(CALLS_SENT).fetchone()[0]
    finally:
        con.close()
    return {"n_items": n_items, "status": status, "idx": idx, "done": done, "sent": sent}


def _assert_nothing_half_written(state: dict[str, Any], n: int) -> None:
    # an input read is stored (the count of inputs read moves with the rows, never alone)
    assert state["idx"] == list(range(state["n_items"]))
    assert state["done"] < n, "the disk filled too late: the job had finished"
    assert state["status"] != JobStatus.COMPLETED.value


# -- chains --------------------------------------------------------------------------------------


def _two_stage(sb: Sandbox) -> Runnable[Any, Any]:
    model = make_openai(sb)
    summary = ChatPromptTemplate.from_template("Summarise item {n}") | model | StrOutputParser()
    title = ChatPromptTemplate.from_template("Title for: {summary}") | model | StrOutputParser()
    return RunnablePassthrough.assign(summary=summary) | RunnablePassthrough.assign(title=title)


def _two_providers(sb: Sandbox) -> Runnable[Any, Any]:
    gpt, claude = make_openai(sb), make_anthropic(sb, max_tokens=64)
    first = ChatPromptTemplate.from_template("Summarise item {n}") | gpt | StrOutputParser()
    second = ChatPromptTemplate.from_template("Title for: {summary}") | claude | StrOutputParser()
    return RunnablePassthrough.assign(summary=first) | RunnablePassthrough.assign(title=second)


def _inputs(n: int) -> Iterator[dict[str, int]]:
    return ({"n": i} for i in range(n))


def _assert_every_item_once(job: batchain.Job, n: int) -> None:
    assert job.status == JobStatus.COMPLETED
    results = job.results()
    assert [r.index for r in results] == list(range(n))
    assert all(r.ok and r.output["title"] and r.input == {"n": r.index} for r in results)


# -- the store itself ----------------------------------------------------------------------------


def test_a_failed_write_is_undone_as_a_whole_and_later_writes_are_refused(tmp_path: Path) -> None:
    disk = PageLimit(tmp_path / "disk")
    store = disk.store("s.sqlite")
    assert isinstance(store, PageLimitedStore)
    now = time.time()
    store.create_job(
        JobRecord(id="j", status=JobStatus.RUNNING, mode="realtime", created_at=now, updated_at=now)
    )
    told: list[StoreError] = []
    store.watch("j", told.append)
    store.add_items("j", [(0, '"kept"')])
    store.update_job("j", n_items=1)
    store.commit()
    # the inputs read and their rows, in one transaction that the full disk refuses
    store.update_job("j", n_items=501)
    disk.fill(store.path)
    with pytest.raises(StoreError, match=r"disk full: store .* could not be written") as failed:
        store.add_items("j", [(i, '"x"' * 2000) for i in range(1, 501)])
    assert told == [failed.value]
    disk.free()
    # while the run watches, nothing more is written, not even what would fit now
    with pytest.raises(StoreError) as again:
        store.update_job("j", n_items=7)
    assert again.value is failed.value
    store.unwatch("j")
    job = store.get_job("j")
    assert job is not None and job.n_items == 1  # not 501 without the rows: nothing half-done
    assert [i.idx for i in store.iter_items("j")] == [0]
    store.update_job("j", n_items=2)  # no run builds on the undone writes: usable again
    store.commit()
    store.close()


def test_a_full_disk_on_opening_is_one_line(real_disk: Tmpfs, capsys: pytest.CaptureFixture[str]) -> None:
    path = real_disk.where / "s.sqlite"
    with real_disk.store("s.sqlite") as st:
        now = time.time()
        st.create_job(
            JobRecord(id="j", status=JobStatus.PAUSED, mode="batch", created_at=now, updated_at=now)
        )
    real_disk.fill(path)
    # a WAL store grows its -shm index even to be read
    with pytest.raises(StoreError, match=re.escape(f"disk full: store {path} could not be written")):
        SQLiteStore(path)
    fresh = real_disk.where / "new.sqlite"
    with pytest.raises(StoreError, match=re.escape(f"disk full: store {fresh} could not be written")):
        SQLiteStore(fresh)
    assert not fresh.exists()  # no empty file left behind
    assert run_cli(["jobs", "--store", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{CLI_ERROR}disk full: store {path}"), err
    real_disk.free()
    assert run_cli(["jobs", "--store", str(path)]) == 0


# -- realtime ------------------------------------------------------------------------------------


def test_realtime_job_on_a_full_disk_stops_in_one_line_and_resume_completes_it(
    sandbox: Sandbox, disk: Disk
) -> None:
    sandbox.configure(latency_ms=20, latency_jitter_ms=10)
    store = disk.store("rt.sqlite")
    chain = _two_stage(sandbox)
    fill = FillWhen(disk, store.path, _at_least(ITEMS_DONE, FILL_AT))
    with fill as filler, pytest.raises(StoreError) as failed:
        batchain.run(chain, _inputs(N), store=store, job_id="rt", max_concurrency=CONCURRENCY, progress=False)
    assert filler.filled.is_set()
    assert failed.value.disk_full
    _assert_one_line(str(failed.value), store.path, "rt")
    state = _state(store.path, "rt")
    _assert_nothing_half_written(state, N)

    disk.free()
    job = batchain.Job.open("rt", store=store, chain=chain).resume(_inputs(N), progress=False)
    _assert_every_item_once(job, N)
    ledger = sandbox.ledger()
    assert len({e.request_hash for e in ledger}) == 2 * N  # every call answered...
    paid_twice = sum(c - 1 for c in sandbox.duplicates().values())
    # ...and billed twice only if the store had it marked as sent when the write failed
    assert job.stats["calls_lost_in_crashes"] == state["sent"]
    assert paid_twice <= state["sent"]
    assert len(ledger) == 2 * N + paid_twice


def test_cli_realtime_run_on_a_full_disk_prints_one_line_and_resume_completes_it(
    sandbox: Sandbox, real_disk: Tmpfs, tmp_path: Path
) -> None:
    sandbox.configure(latency_ms=20, latency_jitter_ms=10)
    store = real_disk.where / "cli.sqlite"
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"n": {i}}}\n' for i in range(N)))
    chain = f"{CRASH / 'chain_for_crash.py'}:chain"
    env = dict(os.environ, CRASH_OPENAI_BASE_URL=sandbox.openai_base_url, NO_COLOR="1")
    env.pop("BATCHAIN_DEBUG", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        common = ["--store", str(store), "-q", "-o", str(tmp_path / "out.jsonl")]
        return subprocess.run(
            [sys.executable, "-m", "batchain.cli", *args, *common],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )

    with FillWhen(real_disk, store, _at_least(ITEMS_DONE, FILL_AT)) as filler:
        done = cli("run", chain, str(data), "--mode", "realtime", "--job-id", "cli", "-c", str(CONCURRENCY))
    assert filler.filled.is_set()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(CLI_ERROR)
    _assert_one_line(done.stderr.removeprefix(CLI_ERROR), store, "cli")
    state = _state(store, "cli")
    _assert_nothing_half_written(state, N)

    real_disk.free()
    done = cli("resume", "cli", str(data))
    assert done.returncode == 0, done.stderr
    with SQLiteStore(store) as st:
        job = batchain.Job.open("cli", store=st)
        _assert_every_item_once(job, N)
        lost = job.stats["calls_lost_in_crashes"]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == N
    paid_twice = sum(c - 1 for c in sandbox.duplicates().values())
    assert lost == state["sent"] and paid_twice <= lost
    assert len({e.request_hash for e in sandbox.ledger()}) == 2 * N


# -- batch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["polling", "later_round"])
def test_batch_job_on_a_full_disk_stops_in_one_line_and_resume_pays_nothing_twice(
    sandbox: Sandbox, best_disk: Disk, when: str
) -> None:
    sandbox.configure(**FAST)
    store = best_disk.store("b.sqlite")
    chain = _two_providers(sandbox)
    ready = (
        _at_least(BATCHES, 1) if when == "polling" else _then(_at_least(COLLECTED, 1), _at_least(BATCHES, 1))
    )
    with FillWhen(best_disk, store.path, ready) as filler, pytest.raises(StoreError) as failed:
        batchain.run(
            chain,
            _inputs(BATCH_N),
            store=store,
            job_id="b",
            mode="batch",
            progress=False,
            poll_min=0.05,
            poll_max=0.2,
        )
    assert filler.filled.is_set()
    _assert_one_line(str(failed.value), store.path, "b")
    state = _state(store.path, "b")
    assert state["n_items"] == BATCH_N  # a batch job stores every input before it starts
    _assert_nothing_half_written(state, BATCH_N)

    best_disk.free()
    job = batchain.Job.open("b", store=store, chain=chain).resume(progress=False)
    _assert_every_item_once(job, BATCH_N)
    # the answers stayed at the provider: collected again, never paid again
    assert not sandbox.duplicates(), "a request was billed twice"
    assert len(sandbox.ledger()) == 2 * BATCH_N
    assert {e.tier for e in sandbox.ledger()} == {"batch"}


# -- a store that lost items (as builds before this fix could) -----------------------------------


def test_a_job_missing_items_is_not_completed_and_a_resume_reads_them_again(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    n = 20
    path = tmp_path / "lost.sqlite"
    chain = _two_stage(sandbox)
    batchain.run(chain, _inputs(n), store=path, job_id="lost", progress=False)
    billed = len(sandbox.ledger())
    # what the earlier bug left: the count of inputs read says 20, two rows are gone
    con = sqlite3.connect(path)
    con.execute("DELETE FROM items WHERE job_id='lost' AND idx IN (3, 7)")
    # the counters agree with the rows, as in an older store migrated after that bug
    con.execute("UPDATE job_item_counts SET n = n - 2 WHERE job_id='lost' AND status='succeeded'")
    con.execute("UPDATE jobs SET status='paused' WHERE id='lost'")
    con.commit()
    con.close()

    job = batchain.Job.open("lost", store=path, chain=chain)
    with pytest.raises(batchain.InputError, match="2 of the 20 inputs read are not in the store"):
        job.resume(progress=False)
    assert job.status == JobStatus.PAUSED  # every stored item has a result, yet not completed

    job.resume(_inputs(n), progress=False)
    _assert_every_item_once(job, n)
    assert len(sandbox.ledger()) == billed  # their calls were answered before: replayed, not paid
