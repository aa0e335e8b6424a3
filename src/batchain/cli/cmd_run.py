"""The commands that run jobs: ``run``, ``submit``, ``wait``, ``resume`` and ``retry``.

They share one path: open the input, load the chain, run the job until it ends or pauses
(Ctrl-C pauses it), then write the results and the summary and pick the exit code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from batchain.cli.app import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CliError
from batchain.cli.common import (
    Where,
    check_output,
    counted,
    input_ref,
    item_costs,
    load_chain,
    open_input,
    open_job,
    output_target,
    reopen_input,
    resolve_store,
    store_exists,
    with_chain,
)
from batchain.cli.datafiles import InputError, InputReader, OutputError, ResultWriter
from batchain.cli.options import (
    BatchOnlyOpt,
    BatchSizeOpt,
    BudgetOpt,
    ChainArg,
    ConcurrencyOpt,
    EndpointModeOpt,
    EnqueuedTokensOpt,
    FallbackOpt,
    FlexFallbackOpt,
    FlexModelOpt,
    FlexPatienceOpt,
    FlexTimeoutOpt,
    Format,
    FormatOpt,
    InputArg,
    JobArg,
    JobIdOpt,
    LimitOpt,
    NoCacheOpt,
    OpenBatchesOpt,
    OutputOpt,
    PollOpt,
    PricesOpt,
    PriorityFieldOpt,
    PriorityOpt,
    PromptCacheOpt,
    QuietOpt,
    RetriesOpt,
    RpmOpt,
    StoreOpt,
    TimeoutOpt,
    TpmOpt,
    endpoint_modes,
    flex_options,
    given,
    launch_options,
    overrides,
    parse_deadline,
    prices_path,
)
from batchain.cli.render import (
    Failures,
    batch_summary,
    err_console,
    print_bad_rows,
    print_failed_items,
    print_summary,
)
from batchain.errors import BatchUnsupportedError, HostUnreachable
from batchain.options import Mode

if TYPE_CHECKING:
    from batchain.job import Job


def run(
    chain: ChainArg,
    input: InputArg,
    output: OutputOpt = None,
    mode: Annotated[
        Mode,
        typer.Option(
            help="realtime: every call now, full price. batch: provider Batch APIs, half price, "
            "minutes to hours. auto: per item by priority (--priority-field or --priority): "
            "high realtime, normal flex where the model offers it (else batch), low batch; "
            "everything realtime near --deadline. flex: every call now, at OpenAI's flex tier "
            "where the model offers it (batch price, slower, may be refused: --flex-fallback)."
        ),
    ] = Mode.REALTIME,
    store: StoreOpt = None,
    concurrency: ConcurrencyOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_retries: RetriesOpt = None,
    timeout: TimeoutOpt = None,
    no_cache: NoCacheOpt = False,
    limit: LimitOpt = None,
    fmt: FormatOpt = None,
    job_id: JobIdOpt = None,
    realtime_fallback: FallbackOpt = False,
    batch_only: BatchOnlyOpt = False,
    endpoint_mode: EndpointModeOpt = None,
    max_batch_size: BatchSizeOpt = None,
    max_open_batches: OpenBatchesOpt = None,
    max_enqueued_tokens: EnqueuedTokensOpt = None,
    prompt_cache: PromptCacheOpt = None,
    poll_interval: PollOpt = None,
    priority: PriorityOpt = None,
    priority_field: PriorityFieldOpt = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            "--deadline",
            help="Auto mode: finish by then, as a duration from now (90s, 30m, 2h, 1d) or an ISO "
            "date-time; batch stragglers move to realtime before it.",
        ),
    ] = None,
    deadline_margin: Annotated[
        float | None,
        typer.Option(
            "--deadline-margin",
            min=0,
            help="Auto mode: seconds before the deadline to move stragglers to realtime. (default: 300)",
        ),
    ] = None,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="Batch mode: the same as `batchain submit`: print the job id once the first round "
            "is at the provider, and return.",
        ),
    ] = False,
    flex_fallback: FlexFallbackOpt = None,
    flex_patience: FlexPatienceOpt = None,
    flex_timeout: FlexTimeoutOpt = None,
    flex_model: FlexModelOpt = None,
    budget: BudgetOpt = None,
    prices: PricesOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run CHAIN over every row of INPUT as a new durable job, and wait for the end.

    Each row is one chain input (a JSON value, or a dict per CSV row). Malformed rows are
    reported as file:line, skipped and counted; the good rows still run, and failed items
    are listed with the file:line of their row. Identical model calls are made once, and
    calls answered in earlier jobs are reused unless --no-cache.

    Stop with Ctrl-C: calls on the wire land, the job pauses, and `batchain resume JOB`
    continues it without paying twice.
    """
    auto_only = any(o is not None for o in (priority, priority_field, deadline, deadline_margin))
    flex_only = any(v is not None for v in (flex_fallback, flex_patience, flex_timeout, flex_model))
    _check_mode(mode, detach, auto_only=auto_only, flex_only=flex_only)
    _check_priority(priority, priority_field)
    _launch(
        chain,
        input,
        output=output,
        store=store,
        limit=limit,
        fmt=fmt,
        job_id=job_id,
        quiet=quiet,
        detach=detach,
        options=overrides(concurrency, rpm, tpm, max_retries, timeout)
        | launch_options(
            mode,
            no_cache,
            realtime_fallback,
            max_batch_size,
            poll_interval,
            max_open_batches,
            max_enqueued_tokens,
            endpoint_mode,
            batch_only,
        )
        | given(
            prompt_cache=prompt_cache.value if prompt_cache else None,
            priority=priority,
            priority_field=priority_field,
            deadline=parse_deadline(deadline),
            deadline_margin=deadline_margin,
            budget=budget,
            prices=prices_path(prices),
        )
        | flex_options(flex_fallback, flex_patience, flex_timeout, flex_model),
    )


def submit(
    chain: ChainArg,
    input: InputArg,
    mode: Annotated[
        Mode,
        typer.Option(
            help="batch: the job waits at the provider after this command. realtime, auto, flex: "
            "the job is queued (its inputs stored) for `batchain worker` or `batchain wait`."
        ),
    ] = Mode.BATCH,
    store: StoreOpt = None,
    concurrency: ConcurrencyOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_retries: RetriesOpt = None,
    timeout: TimeoutOpt = None,
    no_cache: NoCacheOpt = False,
    limit: LimitOpt = None,
    fmt: FormatOpt = None,
    job_id: JobIdOpt = None,
    realtime_fallback: FallbackOpt = False,
    batch_only: BatchOnlyOpt = False,
    endpoint_mode: EndpointModeOpt = None,
    max_batch_size: BatchSizeOpt = None,
    max_open_batches: OpenBatchesOpt = None,
    max_enqueued_tokens: EnqueuedTokensOpt = None,
    prompt_cache: PromptCacheOpt = None,
    poll_interval: PollOpt = None,
    budget: BudgetOpt = None,
    prices: PricesOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Start a batch job and return once its first round is at the provider; in another
    mode, queue the job (its inputs stored, nothing run) for workers.

    Prints the job id on stdout (JOB=$(batchain submit ...)) and a summary on stderr. The
    process may exit: `batchain wait JOB` runs or collects the rest later, from any process,
    and so does any `batchain worker` on the store (`batchain status JOB` shows where it
    is, `batchain cancel JOB` stops it). Options are those of `batchain run`; they are
    stored with the job and apply when it continues.
    """
    _launch(
        chain,
        input,
        output=None,
        store=store,
        limit=limit,
        fmt=fmt,
        job_id=job_id,
        quiet=quiet,
        detach=True,
        options=overrides(concurrency, rpm, tpm, max_retries, timeout)
        | launch_options(
            mode,
            no_cache,
            realtime_fallback,
            max_batch_size,
            poll_interval,
            max_open_batches,
            max_enqueued_tokens,
            endpoint_mode,
            batch_only,
        )
        | given(
            prompt_cache=prompt_cache.value if prompt_cache else None,
            budget=budget,
            prices=prices_path(prices),
        ),
    )


def _launch(
    chain: str,
    input: str,
    *,
    output: str | None,
    store: str | None,
    limit: int | None,
    fmt: Format | None,
    job_id: str | None,
    quiet: bool,
    detach: bool,
    options: dict[str, Any],
) -> NoReturn:
    """Create the job and run it (``detach``: until the first round is at the provider)."""
    from batchain.job import new_job_id

    store_path = resolve_store(store, must_exist=False)
    target = None if detach else output_target(output)
    check_output(target)
    reader, values = open_input(input, fmt, limit)
    runnable, ref = load_chain(chain)
    jid = job_id or new_job_id()
    _ensure_new_job(store_path, jid)
    options["progress"] = not quiet and not detach
    inputs = counted(reader, values, options["progress"])
    started = time.monotonic()

    def start() -> None:
        import batchain

        launch = batchain.submit if detach else batchain.run
        source = input_ref(input, fmt, limit)
        launch(runnable, inputs, store=store_path, job_id=jid, chain_ref=ref, input_ref=source, **options)

    job, interrupted = _run_guarded(jid, store_path, start)
    elapsed = time.monotonic() - started
    if detach and not interrupted:
        raise typer.Exit(_report_submitted(job, reader, quiet, elapsed))
    code = _report(job, reader=reader, target=target, quiet=quiet, elapsed=elapsed, interrupted=interrupted)
    raise typer.Exit(code)


def _report_submitted(job: Job, reader: InputReader, quiet: bool, elapsed: float) -> int:
    """After submit: the job id on stdout; what is at the provider and what next on stderr."""
    print_bad_rows(reader)
    failures = _write_results(job, None)
    print_failed_items(failures, reader, job.id)
    print(job.id, flush=True)
    counts = job.counts
    if not quiet:
        err = err_console()
        if job.record.mode == Mode.BATCH:
            where = f"provider batches: {batch_summary(job)}"
            then = "waits and collects, from any process"
        else:
            where = f"queued ({job.record.mode} mode): a worker runs it (`batchain worker`)"
            then = "or run it now, from any process"
        err.print(
            f"job [bold]{job.id}[/bold] {job.status.value} in {elapsed:.1f} s: "
            f"{counts['total']:,} items, {counts['succeeded']:,} already done; {where}"
        )
        err.print(
            f"next: batchain wait {job.id} ({then}) · batchain status {job.id} · batchain cancel {job.id}"
        )
    return EXIT_FAILED if reader.n_bad or counts["failed"] else EXIT_OK


def wait(
    job_id: JobArg,
    input: Annotated[
        str | None,
        typer.Argument(
            metavar="INPUT",
            help="The job's dataset again, only if it stopped before reading all of it "
            "(same file, same --limit and --format).",
            show_default=False,
        ),
    ] = None,
    output: OutputOpt = None,
    store: StoreOpt = None,
    poll_interval: PollOpt = None,
    limit: LimitOpt = None,
    fmt: FormatOpt = None,
    priority: PriorityOpt = None,
    priority_field: PriorityFieldOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run a submitted job to the end, with live progress; then write its results.

    Polls the job's provider batches, collects the results and submits the next rounds
    until every item has a result, then writes the results (-o) and the summary. Works
    from any process and on any job (a realtime job that was interrupted runs its
    remaining items). Ctrl-C leaves the batches at the provider; wait again later. Exit
    codes as for `batchain run`.
    """
    from batchain.states import JobStatus

    job = open_job(job_id, store)
    reader, values = _input_again(job, input, fmt, limit, "wait")
    if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED) and reader is None:
        # nothing left to run: report what there is
        target = output_target(output)
        check_output(target)
        code = _report(job, reader=None, target=target, quiet=quiet, elapsed=0.0, interrupted=False)
        raise typer.Exit(code)
    levels = _priority_again(job, priority, priority_field)
    _continue(job, reader, values, output, quiet, given(poll_min=poll_interval) | levels)


def _input_again(
    job: Job, input: str | None, fmt: Format | None, limit: int | None, command: str
) -> tuple[InputReader | None, Iterator[Any] | None]:
    if input is not None:
        return open_input(input, fmt, limit)
    if not job.record.inputs_complete:
        return reopen_input(job, fmt, limit, command)
    return None, None


def _check_mode(mode: Mode, detach: bool, *, auto_only: bool, flex_only: bool = False) -> None:
    from batchain.options import MODES

    if mode.value not in MODES:
        raise CliError(f"--mode {mode.value} is not available in this version yet; use {' or '.join(MODES)}")
    if detach and mode != Mode.BATCH:
        raise CliError("--detach needs --mode batch (realtime jobs run while the command runs)")
    if auto_only and mode != Mode.AUTO:
        raise CliError("--priority, --priority-field, --deadline and --deadline-margin apply to --mode auto")
    if flex_only and mode not in (Mode.FLEX, Mode.AUTO):
        raise CliError(
            "--flex-fallback, --flex-patience, --flex-timeout and --flex-model apply to --mode flex"
            " (and to auto mode's flex calls)"
        )


def _priority_again(job: Job, priority: str | None, priority_field: str | None) -> dict[str, Any]:
    """``--priority`` / ``--priority-field`` given to a job run again (resume, retry, wait):
    they replace the job's stored rule for the items left, in auto mode only. A job run
    with a priority function (from Python: it cannot be stored) needs one of them here."""
    from batchain.options import PRIORITY_FUNCTION

    _check_priority(priority, priority_field)
    stored = job.record.options
    mode = stored.get("mode") or Mode.REALTIME.value
    if (priority is not None or priority_field is not None) and mode != Mode.AUTO.value:
        raise CliError(
            f"--priority and --priority-field apply to --mode auto; job {job.id} runs in {mode} mode"
        )
    if stored.get(PRIORITY_FUNCTION) and priority is None and priority_field is None:
        raise CliError(
            f"job {job.id} ran with a priority function, which cannot be stored: give the items "
            "left one level (--priority normal) or an input field (--priority-field NAME), or "
            "continue it from Python with priority=... again",
            whole=True,
        )
    return given(priority=priority, priority_field=priority_field)


def _check_priority(priority: str | None, priority_field: str | None) -> None:
    """``--priority`` is a level, never a field name (that is ``--priority-field``)."""
    from batchain.priority import ALLOWED, parse_level

    if priority is not None and priority_field is not None:
        raise CliError(
            "--priority (one level for every item) and --priority-field contradict each other: choose one"
        )
    if priority is None:
        return
    try:
        parse_level(priority)
    except ValueError:
        raise CliError(
            f"--priority {priority!r} is not a level: use {ALLOWED}; for an input field, "
            f"use --priority-field {priority}",
            whole=True,
        ) from None


def _ensure_new_job(store_path: Where, job_id: str) -> None:
    if not store_exists(store_path):
        return
    from batchain.store import open_store

    with open_store(store_path) as st:
        if st.get_job(job_id) is not None:
            raise CliError(f"job {job_id!r} already exists in {st.name}; continue it with `batchain resume`")


def _run_guarded(job_id: str, store_path: Where, start: Any) -> tuple[Job, bool]:
    """Run the job; errors raised before it starts are usage errors (mode, options)."""
    from batchain.engine.lifecycle import JobBusy
    from batchain.errors import StoreError
    from batchain.store import open_store

    try:
        return _start_job(job_id, store_path, start)
    except JobBusy as exc:  # another process runs it: nothing was done here
        raise CliError(f"{exc} (see `batchain status {job_id}`)") from None
    except StoreError:
        raise  # one line, printed by run_cli
    except HostUnreachable as exc:  # the job paused, no item failed: say which host
        raise CliError(
            f"{exc.host} is unreachable ({exc.why}): the job is paused, no item failed; "
            f"`batchain resume {job_id}` once it answers",
            EXIT_FAILED,
        ) from None
    except BatchUnsupportedError as exc:
        with open_store(store_path) as st:
            job = st.get_job(job_id)
        if job is None or job.n_items == 0:  # refused before anything was submitted
            raise CliError(exc.explain(cli=True), whole=True) from None
        # a model made at call time, met mid-run: the job paused
        way = exc.explain(cli=True, command=f"batchain resume {job_id}")
        raise CliError(way, EXIT_FAILED, whole=True) from None
    except InputError as exc:
        # the input broke while being read (e.g. a truncated .gz): the job is resumable
        raise CliError(
            f"{exc}; the job {job_id} stopped, fix the input and `batchain resume {job_id} INPUT`"
        ) from None
    except (ValueError, RuntimeError) as exc:
        with open_store(store_path) as st:
            job = st.get_job(job_id)
        if job is None or job.n_items == 0:  # refused before any item ran: mode, options
            raise CliError(str(exc)) from None
        raise


def _start_job(job_id: str, store: Where, start: Any) -> tuple[Job, bool]:
    """Run ``start()`` (which runs the job); ``(job, interrupted)``. Ctrl-C pauses the job."""
    from batchain.job import Job

    interrupted = False
    try:
        start()
    except KeyboardInterrupt:
        interrupted = True
    try:
        return Job.open(job_id, store=store), interrupted
    except KeyError:  # interrupted before the job was created
        raise CliError("interrupted before the job started", EXIT_INTERRUPTED) from None


def resume(
    job_id: JobArg,
    input: Annotated[
        str | None,
        typer.Argument(
            metavar="INPUT",
            help="The job's dataset, if it stopped before reading all of it and its file moved "
            "(by default the file the job was started with is read again, with its --limit and --format).",
            show_default=False,
        ),
    ] = None,
    output: OutputOpt = None,
    store: StoreOpt = None,
    concurrency: ConcurrencyOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_retries: RetriesOpt = None,
    timeout: TimeoutOpt = None,
    limit: LimitOpt = None,
    fmt: FormatOpt = None,
    poll_interval: PollOpt = None,
    budget: BudgetOpt = None,
    realtime_fallback: FallbackOpt = False,
    batch_only: BatchOnlyOpt = False,
    endpoint_mode: EndpointModeOpt = None,
    priority: PriorityOpt = None,
    priority_field: PriorityFieldOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Continue a paused or interrupted job: run the items that have no result yet.

    Model calls that already succeeded are replayed from the store, never paid twice.
    Options not given keep the values the job was started with.
    """
    job = open_job(job_id, store)
    reader, values = _input_again(job, input, fmt, limit, "resume")
    options = overrides(concurrency, rpm, tpm, max_retries, timeout) | given(
        budget=budget,
        poll_min=poll_interval,
        fallback="realtime" if realtime_fallback else None,
        batch_only=batch_only or None,
        endpoint_modes=endpoint_modes(endpoint_mode),
    )
    _continue(job, reader, values, output, quiet, options | _priority_again(job, priority, priority_field))


def retry(
    job_id: JobArg,
    output: OutputOpt = None,
    store: StoreOpt = None,
    concurrency: ConcurrencyOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_retries: RetriesOpt = None,
    timeout: TimeoutOpt = None,
    budget: BudgetOpt = None,
    priority: PriorityOpt = None,
    priority_field: PriorityFieldOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run a job's failed (and cancelled) items again, in a new process if you like.

    The chain is re-imported from the reference the job recorded. Successful items and
    their calls are kept; only the failed items run.
    """
    job = open_job(job_id, store)
    if not job.record.inputs_complete:
        then = f"batchain resume {job.id}" + ("" if job.record.input_ref else " INPUT")
        raise CliError(f"job {job.id} has unread inputs; finish it first: {then}", whole=True)
    _continue(
        job,
        None,
        None,
        output,
        quiet,
        overrides(concurrency, rpm, tpm, max_retries, timeout)
        | given(budget=budget)
        | _priority_again(job, priority, priority_field),
        failed_only=True,
    )


def _continue(
    job: Job,
    reader: InputReader | None,
    values: Iterable[Any] | None,
    output: str | None,
    quiet: bool,
    options: dict[str, Any],
    *,
    failed_only: bool = False,
) -> None:
    target = output_target(output)
    check_output(target)
    job = with_chain(job)
    if reader is not None and values is not None:
        values = counted(reader, values, not quiet)
    started = time.monotonic()

    def start() -> None:
        if failed_only:
            job.retry(progress=not quiet, **options)
        elif values is None:
            job.wait(progress=not quiet, **options)
        else:
            job.resume(values, progress=not quiet, **options)

    done, interrupted = _run_guarded(job.id, job.store.location, start)
    code = _report(
        done,
        reader=reader,
        target=target,
        quiet=quiet,
        elapsed=time.monotonic() - started,
        interrupted=interrupted,
    )
    raise typer.Exit(code)


def _report(
    job: Job,
    *,
    reader: InputReader | None,
    target: str | None,
    quiet: bool,
    elapsed: float,
    interrupted: bool,
) -> int:
    """Write results, print bad rows, failed items and the summary; return the exit code."""
    failures = _write_results(job, target)
    if reader is not None:
        print_bad_rows(reader)
    print_failed_items(failures, reader, job.id)
    counts = job.counts
    n_bad = reader.n_bad if reader is not None else 0
    paused = interrupted or counts["pending"] > 0
    if not quiet:
        print_summary(job, counts, n_bad, elapsed, target, failures.kinds, paused)
    return _exit_code(counts, n_bad, paused)


def _exit_code(counts: dict[str, int], n_bad: int, paused: bool) -> int:
    if paused:
        return EXIT_INTERRUPTED
    if counts["failed"] or counts["cancelled"] or n_bad:
        return EXIT_FAILED
    return EXIT_OK


def _write_results(job: Job, target: str | None) -> Failures:
    """Stream every result to ``target`` (if any); collect the failures on the way."""
    from batchain.states import ItemStatus

    failures = Failures()
    if target is None:
        for r in job.iter_results((ItemStatus.FAILED,)):
            failures.add(r)
        return failures
    costs = item_costs(job)
    try:
        with ResultWriter(target) as writer:
            for r in job.iter_results():
                writer.write(r, costs.get(r.index))
                if r.status == ItemStatus.FAILED:
                    failures.add(r)
    except OutputError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    return failures
