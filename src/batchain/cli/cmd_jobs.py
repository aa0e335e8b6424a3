"""The commands that look at jobs, stop them or tidy the store: ``cancel``, ``jobs``,
``status``, ``results`` and ``compact``.

``jobs``, ``status`` and ``results`` only read the store, so they stay instant: no chain is
loaded and no model library imported. ``jobs`` reads each job's item counters, never its
items; ``status`` reads the job's own rows through indexes, never the rest of the store.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from batchain.cli.app import EXIT_FAILED, EXIT_OK, CliError
from batchain.cli.common import (
    check_output,
    item_costs,
    open_job,
    resolve_store,
    store_exists,
    store_name,
    with_chain,
)
from batchain.cli.datafiles import OutputError, ResultWriter
from batchain.cli.options import JobArg, StoreOpt
from batchain.cli.render import (
    cost_json,
    err_console,
    helpers_of,
    job_summary,
    jobs_table,
    plural,
    print_status,
    progress_json,
)
from batchain.options import Mode


def cancel(job_id: JobArg, store: StoreOpt = None) -> None:
    """Cancel a job; finished results are kept.

    Its provider batches are cancelled, and the items that have not run end as cancelled.
    A cancelled job does not run again.
    """
    from batchain.states import JobStatus

    job = open_job(job_id, store)
    if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
        err_console().print(escape(f"job {job.id} is already {job.status.value}; nothing to cancel"))
        return
    from batchain.engine.lifecycle import JobBusy

    if job.record.mode == Mode.BATCH:  # cancelling talks to the provider through the chain's models
        job = with_chain(job)
    try:
        job.cancel()
    except JobBusy as exc:
        raise CliError(f"{exc}; stop it (Ctrl-C), then cancel") from None
    counts = job.counts
    err_console().print(
        f"job {job.id} {job.status.value}: {counts['succeeded']:,} results kept, "
        f"{counts['cancelled']:,} items cancelled"
    )


def jobs(
    store: StoreOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many jobs.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per job instead of a table.")
    ] = False,
) -> None:
    """List the jobs in the store, newest first."""
    from batchain.store import open_store

    where = resolve_store(store, must_exist=False)
    name = store_name(where)
    if not store_exists(where):
        err_console().print(f"no jobs yet (no store at {escape(name)})")
        return
    with open_store(where) as st:
        records = st.list_jobs(limit)
        rows = [(rec, _counts(st.item_counts(rec.id))) for rec in records]
    if as_json:
        for rec, counts in rows:
            print(json.dumps(job_summary(rec, counts)))
        return
    if not rows:
        err_console().print(f"no jobs in {escape(name)}")
        return
    # piped output gets room for the whole table instead of rich's 80-column default
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(jobs_table(rows, name, console.width))


def _counts(raw: dict[str, int]) -> dict[str, int]:
    from batchain.states import ItemStatus

    counts = {s.value: raw.get(s.value, 0) for s in ItemStatus}
    counts["total"] = sum(raw.values())
    return counts


#: failed items `status` reads to find the most common errors
_ERRORS_READ = 10_000


def status(
    job_id: JobArg,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as one JSON object.")] = False,
) -> None:
    """Show one job: state, item counts, calls, tokens, and the most common errors.

    Exit code: 0 if no item has failed, 1 if some have, 2 if there is no such job.
    """
    from batchain.states import ItemStatus

    job = open_job(job_id, store)
    rec, counts = job.record, job.counts
    errors: Counter[str] = Counter()
    # the most common errors among the first failed items: a bounded read, whatever the job's size
    for r in itertools.islice(job.iter_results((ItemStatus.FAILED,)), _ERRORS_READ):
        errors[r.error_message or "unknown error"] += 1
    if as_json:
        usage = job.usage
        data = job_summary(rec, counts) | {
            "calls": job.call_stats,
            "last_run": job.stats,
            "usage": {k: getattr(usage, k) for k in usage.__slots__},
            "errors": [{"error": m, "count": n} for m, n in errors.most_common()],
            "cost": cost_json(job),
            "progress": progress_json(job.progress()),
            "helpers": helpers_of(job),
            "batches": [
                {k: getattr(b, k) for k in ("id", "provider", "status", "provider_batch_id", "n_calls")}
                for b in job.store.job_batches(job.id)
            ],
        }
        print(json.dumps(data))
    else:
        print_status(job, counts, errors)
    raise typer.Exit(EXIT_FAILED if counts["failed"] or counts["cancelled"] else EXIT_OK)


def results(
    job_id: JobArg,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Write to this .jsonl or .csv/.tsv file (optionally .gz). Default: JSONL on stdout.",
            show_default=False,
        ),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Write a job's results, one row per item in input order: index, id, status, output, error.

    Works on a running or paused job too (items not run yet have status pending).
    """
    job = open_job(job_id, store)
    target = output or "-"
    check_output(target)
    costs = item_costs(job)
    try:
        with ResultWriter(target) as writer:
            for r in job.iter_results():
                writer.write(r, costs.get(r.index))
            n = writer.n_written
    except OutputError as exc:
        raise CliError(str(exc)) from None
    if target != "-":
        err_console().print(f"wrote {plural(n, 'row')} to {escape(target)}")


def compact(
    job_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[JOB]...",
            help="The jobs to compact. Default: every finished job in the store.",
            show_default=False,
        ),
    ] = None,
    store: StoreOpt = None,
    vacuum: Annotated[
        bool,
        typer.Option(
            "--vacuum",
            help="Then rewrite the store file to give the freed space back to the disk "
            "(takes as much free disk as the store, and a while for a large one).",
        ),
    ] = False,
) -> None:
    """Drop what only running jobs need from finished (completed or cancelled) jobs.

    Removed: the call each item waited for, and request bodies of answered calls (kept by
    stores of earlier versions). Kept: results, outputs, errors, answered calls and their
    responses (the cache, which later jobs reuse), cost reports, usage. A job that is not
    finished is left alone. Exit code: 0, or 1 if a named job could not be compacted.
    """
    from batchain.store import open_store

    where = resolve_store(store, must_exist=True)
    name = store_name(where)
    err = err_console()
    skipped = 0
    with open_store(where) as st:
        before = st.size()
        ids = job_ids or [rec.id for rec in st.list_jobs(limit=None)]
        for job_id in ids:
            try:
                done = st.compact_job(job_id)
            except KeyError:
                raise CliError(f"no job {job_id!r} in {name} (see `batchain jobs --store {name}`)") from None
            if done.compacted:
                dropped = f"{done.waits:,} waits, {done.requests:,} request bodies dropped"
                err.print(escape(f"{job_id}: compacted ({dropped})"))
            elif job_ids:
                skipped += 1
                err.print(escape(f"{job_id}: not compacted: it is {done.status} (only finished jobs are)"))
        if vacuum:
            st.vacuum()
        after = st.size()
    err.print(f"store {escape(name)}: {_mb(before)} before, {_mb(after)} after")
    raise typer.Exit(EXIT_FAILED if skipped else EXIT_OK)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
