"""``batchain worker``: run the store's jobs, on this machine, beside other workers."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.markup import escape

from batchain.cli.app import EXIT_INTERRUPTED, CliError
from batchain.cli.common import reopen_input, resolve_store, store_exists, store_name
from batchain.cli.options import StoreOpt
from batchain.cli.render import err_console


def worker(
    job_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[JOB]...",
            help="Run only these jobs, paused ones too (default: every unfinished job of the store).",
        ),
    ] = None,
    store: StoreOpt = None,
    concurrency: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="Jobs run at once by this worker.")
    ] = 4,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.05, help="Seconds between looks for jobs to take.")
    ] = 2.0,
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle", help="Exit once no job is left to run (by default a worker waits for new jobs)."
        ),
    ] = False,
) -> None:
    """Run the store's unfinished jobs, here, beside any other workers on the store.

    Each job runs in one worker at a time (under its lease); a worker that dies leaves its
    jobs to the others once their leases lapse (30 s), and they go on from the store: no
    answered call is paid again, no call at a provider is sent twice. With a PostgreSQL
    store (--store postgresql://...) the workers can be on any machines that reach it:
    `batchain submit` on one, `batchain worker` on the others. The chain is loaded from the
    reference each job recorded, which must resolve where the worker runs. Ctrl-C stops
    the worker and pauses its jobs (`batchain worker JOB` or `batchain resume JOB` takes
    one again); a worker killed outright leaves them to the others.
    """
    import batchain.worker as work

    where = resolve_store(store, must_exist=False)
    name = store_name(where)
    if not store_exists(where):
        raise CliError(f"no job store at {name} (pass --store or set BATCHAIN_STORE)")
    err = err_console()
    _log_jobs(err)
    err.print(f"worker on {escape(name)}: running its jobs" + (" (Ctrl-C to stop)" if not until_idle else ""))
    try:
        report = work.work(
            where,
            job_ids or (),
            concurrency=concurrency,
            poll_interval=poll_interval,
            until_idle=until_idle,
            inputs_for=_inputs_again,
        )
    except KeyboardInterrupt:
        err.print("worker stopped: its jobs paused (`batchain worker JOB` takes one again)")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    for job_id, why in report.passed_over.items():
        err.print(escape(f"{job_id}: not run here: {why}"))
    for job_id, n in report.helped.items():
        err.print(escape(f"{job_id}: helped with {n} items"))
    ended = ", ".join(f"{job_id} {status.value}" for job_id, status in report.ended.items()) or "none"
    err.print(escape(f"worker done: jobs run to their end: {ended}"))


def _inputs_again(job: Any) -> Any:
    """The rest of a job's inputs, from the file it was started with (None: not here)."""
    try:
        _reader, values = reopen_input(job, None, None, "resume")
    except CliError:
        return None
    return values


def _log_jobs(err: Any) -> None:
    """Each job a worker takes and ends, as a line on stderr."""
    handler = logging.StreamHandler(err.file)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("batchain.worker")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
