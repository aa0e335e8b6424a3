"""What several commands do alike: find the store and a job, load a chain, open the input
and the output.

Each helper turns a user's mistake into a :class:`~batchain.cli.app.CliError` (one line,
exit code 2), so the commands read as the steps they take.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from batchain.cli.app import CliError
from batchain.cli.datafiles import InputError, InputReader, OutputError, ResultWriter
from batchain.cli.options import Format

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable

    from batchain.job import Job


#: where a store is: a SQLite file, or a PostgreSQL URL (which may hold a password)
Where = Path | str


def resolve_store(store: str | None, *, must_exist: bool) -> Where:
    """The store: --store, else $BATCHAIN_STORE, else ~/.batchain/store.sqlite."""
    from batchain.store import default_store_path, is_postgres_url

    given = store or os.environ.get("BATCHAIN_STORE")
    if is_postgres_url(given):
        assert given is not None
        return given
    path = Path(store).expanduser() if store else default_store_path().expanduser()
    if must_exist and not path.is_file():
        raise CliError(f"no job store at {path} (pass --store or set BATCHAIN_STORE)")
    return path


def store_exists(where: Where) -> bool:
    """Is there a store (a database always is: it says itself which jobs it has)?"""
    return isinstance(where, str) or where.is_file()


def store_name(where: Where) -> str:
    """How messages name the store: a file's path, a URL without its password."""
    if isinstance(where, str):
        from batchain.store.postgres import redacted

        return redacted(where)
    return str(where)


def open_job(job_id: str, store: str | None) -> Job:
    """The job, without its chain (see :func:`with_chain`); no such job is a usage error."""
    from batchain.job import Job

    where = resolve_store(store, must_exist=False)
    name = store_name(where)
    if not store_exists(where):
        raise CliError(
            f"no job {job_id!r}: there is no job store at {name} (pass --store or set BATCHAIN_STORE)"
        )
    try:
        return Job.open(job_id, store=where)
    except KeyError:
        raise CliError(f"no job {job_id!r} in {name} (see `batchain jobs --store {name}`)") from None


def is_yaml(ref: str) -> bool:
    return ref.strip().lower().endswith((".yaml", ".yml"))


def absolute_ref(ref: str) -> str:
    """File references are recorded absolute, so other commands work from any directory."""
    if is_yaml(ref):
        return str(Path(ref.strip()).expanduser().resolve())
    target, sep, attr = ref.rpartition(":")
    if sep and (target.endswith(".py") or "/" in target or "\\" in target):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return ref


def load_chain(ref: str) -> tuple[Runnable[Any, Any], str]:
    """The chain and the reference to record: ``file.py:attr``, ``module:attr`` or a YAML file."""
    from batchain.chains.ref import ChainRefError, resolve_chain

    remember_keys()  # before the chain's module runs: its errors may hold a key
    given, ref = ref, absolute_ref(ref)
    try:
        if is_yaml(ref):
            from batchain.chains.yamlchain import load_yaml_chain

            # errors name the file as the user wrote it; the job records it absolute
            return load_yaml_chain(given if Path(given).exists() else ref), ref
        return resolve_chain(ref), ref
    except ChainRefError as exc:
        raise CliError(f"cannot load chain: {exc}") from None
    except Exception as exc:  # the chain's own module failed to import
        raise CliError(f"cannot load chain {ref}: {type(exc).__name__}: {exc}") from None


def with_chain(job: Job) -> Job:
    """The job with its recorded chain loaded now, so a bad reference is a usage error."""
    from batchain.job import Job
    from batchain.states import JobStatus

    rec = job.record
    if rec.status == JobStatus.CANCELLED:
        raise CliError(f"job {job.id} was cancelled; start a new one with `batchain run`")
    if not rec.chain_ref:
        raise CliError(
            f"job {job.id} has no recorded chain reference (it was started from Python); "
            "continue it with batchain.Job.open(job_id, chain=...)"
        )
    runnable, _ = load_chain(rec.chain_ref)
    return Job.open(job.id, store=job.store, chain=runnable)


def open_input(source: str, fmt: Format | None, limit: int | None) -> tuple[InputReader, Iterator[Any]]:
    """A reader and its values, with the first record already read.

    Reading the first record before the job exists makes an unreadable input (bad CSV
    header, not gzip, no pyarrow) a usage error instead of a job that stops at once.
    """
    try:
        reader = InputReader(source, fmt=fmt.value if fmt else None, limit=limit)
        values = reader.values()
        first = list(itertools.islice(values, 1))
    except InputError as exc:
        raise CliError(str(exc)) from None
    return reader, itertools.chain(first, values)


class CountedValues:
    """An input's values with their count, which the progress line shows as the total
    (``batchain.run`` takes the ``len()`` of inputs that have one)."""

    def __init__(self, values: Iterable[Any], count: int) -> None:
        self._values = values
        self._count = count

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return self._count


def counted(reader: InputReader, values: Iterable[Any], shown: bool) -> Iterable[Any]:
    """``values``, counted first when the progress line is ``shown`` and the input can be
    counted (a file, not stdin)."""
    if not shown:
        return values
    from batchain.engine.progress import wants_progress

    count = reader.count_rows() if wants_progress(None) else None
    return values if count is None else CountedValues(values, count)


def input_ref(source: str, fmt: Format | None, limit: int | None) -> str | None:
    """What the job records of its input file, so ``resume`` can reopen it: the absolute
    path, ``--format`` and ``--limit``, and the file's size and modification time (to tell
    the file that was read from one changed since). None for stdin, which cannot be
    reopened."""
    if source == "-":
        return None
    path = Path(source).expanduser()
    try:
        stat = path.stat()
    except OSError:
        return None
    ref = {
        "path": str(path.resolve()),
        "format": fmt.value if fmt else None,
        "limit": limit,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    return json.dumps(ref)


def reopen_input(
    job: Job, fmt: Format | None, limit: int | None, command: str
) -> tuple[InputReader, Iterator[Any]]:
    """The job's input file again, as recorded when it started (a resume that was not
    given INPUT); a clear error if it cannot be, naming the way out."""
    again = f"batchain {command} {job.id} INPUT"
    stopped = f"job {job.id} stopped after reading {job.record.n_items:,} input rows"
    ref = json.loads(job.record.input_ref) if job.record.input_ref else None
    if not isinstance(ref, dict) or not ref.get("path"):
        raise CliError(f"{stopped}; pass the same INPUT again: {again}", whole=True)
    path = Path(ref["path"])
    try:
        stat = path.stat()
    except OSError:
        gone = f"{stopped} from {path}, which is no longer there; pass its new place: {again}"
        raise CliError(gone, whole=True) from None
    if (stat.st_size, stat.st_mtime_ns) != (ref.get("size"), ref.get("mtime_ns")):
        raise CliError(
            f"{stopped} from {path}, which has changed since (size or modification time); "
            f"if its first {job.record.n_items:,} rows are the same, pass it again: {again}",
            whole=True,
        )
    recorded = Format(ref["format"]) if ref.get("format") in Format.__members__ else None
    from batchain.cli.render import err_console

    err_console().print(f"reading the rest of the inputs again from {path}")
    return open_input(str(path), fmt or recorded, limit if limit is not None else ref.get("limit"))


def output_target(output: str | None) -> str | None:
    """The -o path, else stdout when it is piped, else nowhere (a terminal gets a summary)."""
    if output is not None:
        return output
    return None if sys.stdout.isatty() else "-"


def check_output(target: str | None) -> None:
    if target is None:
        return
    try:
        ResultWriter(target)
    except OutputError as exc:
        raise CliError(str(exc)) from None


#: per-item costs are held in memory while results are written; beyond this the column is empty
_PER_ITEM_COST_LIMIT: Final = 250_000


def item_costs(job: Job) -> dict[int, Any]:
    """USD billed per item; empty when unknown. Cost never stops results from being written."""
    if job.record.n_items > _PER_ITEM_COST_LIMIT:
        return {}
    try:
        report = job.report(per_item=True)
    except Exception:
        return {}
    return {idx: c.cost for idx, c in (report.items or {}).items()}


def remember_keys() -> None:
    """Teach the redactor the keys in the environment, so no message can echo them.

    Called before any chain is loaded and before any error is printed: not at start-up,
    because the redactor lives in the engine, and `batchain jobs` or `--help` need none of it.
    """
    from batchain.providers.base import remember_secret

    for name, value in os.environ.items():
        if name.endswith(("_API_KEY", "_TOKEN", "_SECRET")):
            remember_secret(value)
