"""The ``batchain`` command line: run chains over datasets, inspect and continue jobs.

Exit codes (all commands): 0 every item succeeded; 1 finished with failed items or bad
input rows; 2 usage error (bad arguments, unknown job, unreadable chain or input);
3 internal error; 130 stopped before the end (the job is paused and can be resumed).

Results go to stdout and everything for humans (progress, summaries, errors) to stderr,
so ``batchain run chain.py:chain in.jsonl > out.jsonl`` works as a pipeline step;
``batchain submit`` prints only the job id on stdout (``JOB=$(batchain submit ...)``).

A chain is ``path/to/file.py:attr``, ``package.module:attr`` or a YAML chain file
(:mod:`batchain.chains.yamlchain`); jobs record it (files as absolute paths), so ``wait``,
``resume``, ``retry`` and ``cancel`` reload it in any process. The engine and LangChain
are imported inside the commands that need them, so ``--help`` and ``jobs`` stay instant.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from batchain.errors import BatchainError
from batchain.io import InputError, InputReader, OutputError, ResultWriter
from batchain.options import Mode, Tier
from batchain.states import LinkSource

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable

    from batchain.job import Job

__all__ = ["EXIT_FAILED", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "app", "main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERNAL: Final = 3
EXIT_INTERRUPTED: Final = 130

#: bad input rows and error kinds shown in a summary; the rest are counted
_SHOW_BAD_ROWS: Final = 20
_SHOW_FAILED_ITEMS: Final = 10
_SHOW_ERROR_KINDS: Final = 3

# Typer >= 0.20 vendors click as typer._click; older ones raise the click package's errors.
_CLICK_ERRORS: Final[tuple[type[Exception], ...]] = (click.ClickException, typer.TyperException)
_ABORTS: Final[tuple[type[BaseException], ...]] = (click.Abort, typer.Abort)

_CALL_SOURCES: Final[dict[str, str]] = {
    LinkSource.PAID: "paid",
    LinkSource.CACHE: "reused from earlier jobs",
    LinkSource.REPLAY: "replayed after a restart",
    LinkSource.SHARED: "shared between identical items",
}

_EXIT_CODES_HELP = (
    "Exit codes: 0 every item succeeded · 1 finished with failed items or bad input rows · "
    "2 usage error (bad arguments, unknown job, unreadable chain or input) · 3 internal error · "
    "130 stopped before the end (job paused; resume it)."
)

app = typer.Typer(
    name="batchain",
    help=(
        "Run LangChain (LCEL) chains over datasets: realtime under rate limits, or through "
        "provider Batch APIs, with a durable job store.\n\n"
        "Start with `batchain demo` (no API keys needed), then "
        "`batchain run chain.py:chain inputs.jsonl -o results.jsonl` (or a YAML chain: "
        "`batchain run examples/classify.yaml examples/headlines.csv`)."
    ),
    epilog=_EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
sandbox_app = typer.Typer(
    help="The local sandbox provider: speaks the OpenAI and Anthropic APIs, for free, offline.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(sandbox_app, name="sandbox")


class CliError(BatchainError):
    """A user-facing error: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Format(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    tsv = "tsv"
    parquet = "parquet"


# -- shared options ---------------------------------------------------------------------------

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="The job store (SQLite file). Default: $BATCHAIN_STORE, else ~/.batchain/store.sqlite.",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="Write results here: .jsonl or .csv/.tsv (optionally .gz), or - for JSONL on stdout. "
        "Default: stdout when it is piped or redirected; in a terminal only the summary is shown.",
        show_default=False,
    ),
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency", "-c", min=1, help="Most model calls in flight at once. (run's default: 64)"
    ),
]
RpmOpt = Annotated[
    float | None, typer.Option("--rpm", min=0.001, help="Requests per minute to stay under (per provider).")
]
TpmOpt = Annotated[
    float | None, typer.Option("--tpm", min=1, help="Tokens per minute to stay under (per provider).")
]
RetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-retries", min=0, help="Retries of a failed call (429, 5xx, timeout). (run's default: 6)"
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout", min=0.001, help="Seconds before one model call times out. (run's default: 120)"
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress display and no summary; errors only.")
]
LimitOpt = Annotated[
    int | None,
    typer.Option("--limit", "-n", min=0, help="Read only the first N good input rows."),
]
FormatOpt = Annotated[
    Format | None,
    typer.Option(
        "--format",
        "-f",
        help="Input format when the extension does not tell. Default: by extension; - is JSONL.",
    ),
]
BudgetOpt = Annotated[
    float | None,
    typer.Option(
        "--budget",
        min=0,
        help="Hard cap in USD across realtime and batch; the job pauses when the next call would "
        "not fit, and resumes with a higher --budget.",
    ),
]
PricesOpt = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        exists=True,
        dir_okay=False,
        help="A JSON file of price overrides (per model, USD per million tokens).",
    ),
]
JobArg = Annotated[
    str, typer.Argument(metavar="JOB", help="The job id (see `batchain jobs`).", show_default=False)
]


# -- small helpers ----------------------------------------------------------------------------


def _stderr() -> Console:
    # soft_wrap: long lines (paths, commands) stay whole for copy-paste, even when piped
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _store_path(store: Path | None, *, must_exist: bool) -> Path:
    from batchain.store import default_store_path

    path = (store or default_store_path()).expanduser()
    if must_exist and not path.is_file():
        raise CliError(f"no job store at {path} (pass --store or set BATCHAIN_STORE)")
    return path


def _open_job(job_id: str, store: Path | None) -> Job:
    from batchain.job import Job

    path = _store_path(store, must_exist=False)
    if not path.is_file():
        raise CliError(
            f"no job {job_id!r}: there is no job store at {path} (pass --store or set BATCHAIN_STORE)"
        )
    try:
        return Job.open(job_id, store=path)
    except KeyError:
        raise CliError(f"no job {job_id!r} in {path} (see `batchain jobs --store {path}`)") from None


def _is_yaml(ref: str) -> bool:
    return ref.strip().lower().endswith((".yaml", ".yml"))


def _absolute_ref(ref: str) -> str:
    """File references are recorded absolute, so other commands work from any directory."""
    if _is_yaml(ref):
        return str(Path(ref.strip()).expanduser().resolve())
    target, sep, attr = ref.rpartition(":")
    if sep and (target.endswith(".py") or "/" in target or "\\" in target):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return ref


def _load_chain(ref: str) -> tuple[Runnable[Any, Any], str]:
    """The chain and the reference to record: ``file.py:attr``, ``module:attr`` or a YAML file."""
    from batchain.chains.ref import ChainRefError, resolve_chain

    _remember_keys()  # before the chain's module runs: its errors may hold a key
    given, ref = ref, _absolute_ref(ref)
    try:
        if _is_yaml(ref):
            from batchain.chains.yamlchain import load_yaml_chain

            # errors name the file as the user wrote it; the job records it absolute
            return load_yaml_chain(given if Path(given).exists() else ref), ref
        return resolve_chain(ref), ref
    except ChainRefError as exc:
        raise CliError(f"cannot load chain: {exc}") from None
    except Exception as exc:  # the chain's own module failed to import
        raise CliError(f"cannot load chain {ref}: {type(exc).__name__}: {exc}") from None


def _with_chain(job: Job) -> Job:
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
    runnable, _ = _load_chain(rec.chain_ref)
    return Job.open(job.id, store=job.store, chain=runnable)


def _open_input(source: str, fmt: Format | None, limit: int | None) -> tuple[InputReader, Iterator[Any]]:
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


def _output_target(output: str | None) -> str | None:
    """The -o path, else stdout when it is piped, else nowhere (a terminal gets a summary)."""
    if output is not None:
        return output
    return None if sys.stdout.isatty() else "-"


def _check_output(target: str | None) -> None:
    if target is None:
        return
    try:
        ResultWriter(target)
    except OutputError as exc:
        raise CliError(str(exc)) from None


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave; the rest keep their defaults (or the job's stored values)."""
    return {k: v for k, v in options.items() if v is not None}


def _overrides(
    concurrency: int | None,
    rpm: float | None,
    tpm: float | None,
    max_retries: int | None,
    timeout: float | None,
) -> dict[str, Any]:
    return _given(max_concurrency=concurrency, rpm=rpm, tpm=tpm, max_retries=max_retries, timeout=timeout)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_deadline(text: str | None) -> float | datetime | None:
    """``90s``, ``30m``, ``2h``, ``1d`` or plain seconds from now; or an ISO date-time."""
    if text is None:
        return None
    match = _DURATION.fullmatch(text.strip())
    if match:
        return float(match.group(1)) * _SECONDS[match.group(2).lower()]
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"--deadline {text!r} is neither a duration (90s, 30m, 2h, 1d) nor an ISO date-time"
        ) from None


def _fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}{'es' if word.endswith('ch') else 's'}"


# -- run / resume / retry: running and reporting -------------------------------------------------


def _start_job(job_id: str, store: Path, start: Any) -> tuple[Job, bool]:
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
        _print_bad_rows(reader)
    _print_failed_items(failures, reader, job.id)
    counts = job.counts
    n_bad = reader.n_bad if reader is not None else 0
    paused = interrupted or counts["pending"] > 0
    if not quiet:
        _print_summary(job, counts, n_bad, elapsed, target, failures.kinds, paused)
    return _exit_code(counts, n_bad, paused)


def _exit_code(counts: dict[str, int], n_bad: int, paused: bool) -> int:
    if paused:
        return EXIT_INTERRUPTED
    if counts["failed"] or counts["cancelled"] or n_bad:
        return EXIT_FAILED
    return EXIT_OK


class _Failures:
    """Failed items seen while writing results: counted by message, the first few kept."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.first: list[tuple[int, Any, str]] = []

    def add(self, result: Any) -> None:
        message = result.error_message or "unknown error"
        self.kinds[message] += 1
        if len(self.first) < _SHOW_FAILED_ITEMS:
            from batchain.io import input_id

            self.first.append((result.index, input_id(result.input), message))

    @property
    def total(self) -> int:
        return sum(self.kinds.values())


def _write_results(job: Job, target: str | None) -> _Failures:
    """Stream every result to ``target`` (if any); collect the failures on the way."""
    from batchain.states import ItemStatus

    failures = _Failures()
    if target is None:
        for r in job.iter_results((ItemStatus.FAILED,)):
            failures.add(r)
        return failures
    costs = _item_costs(job)
    try:
        with ResultWriter(target) as writer:
            for r in job.iter_results():
                writer.write(r, costs.get(r.index))
                if r.status == ItemStatus.FAILED:
                    failures.add(r)
    except OutputError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    return failures


def _print_failed_items(failures: _Failures, reader: InputReader | None, job_id: str) -> None:
    """One line per failed item (the first few): where its input came from, and why."""
    if not failures.first:
        return
    err = _stderr()
    for index, item_id, message in failures.first:
        where = reader.where(index) if reader is not None else None
        label = f"{where} (item {index})" if where else f"item {index}"
        if item_id is not None and not isinstance(item_id, dict | list):
            label += f" id {item_id}"
        err.print(f"[red]failed:[/red] {escape(label)}: {escape(_one_line(message))}")
    hidden = failures.total - len(failures.first)
    if hidden > 0:
        err.print(f"[red]failed:[/red] … and {hidden:,} more (`batchain results {job_id}` lists them all)")


def _print_bad_rows(reader: InputReader) -> None:
    if not reader.n_bad:
        return
    err = _stderr()
    for bad in reader.bad_rows[:_SHOW_BAD_ROWS]:
        err.print(f"[yellow]bad input:[/yellow] {escape(str(bad))}")
    hidden = reader.n_bad - min(len(reader.bad_rows), _SHOW_BAD_ROWS)
    if hidden > 0:
        err.print(f"[yellow]bad input:[/yellow] … and {hidden:,} more")


def _print_summary(
    job: Job,
    counts: dict[str, int],
    n_bad: int,
    elapsed: float,
    target: str | None,
    errors: Counter[str],
    paused: bool,
) -> None:
    err = _stderr()
    state = "[yellow]paused[/yellow]" if paused else f"[bold]{job.status.value}[/bold]"
    err.print(f"job [bold]{job.id}[/bold] {state} in {elapsed:.1f} s")
    for label, text in _summary_rows(job, counts, n_bad, target):
        err.print(f"  {label:<8} {text}")
    for message, n in errors.most_common(_SHOW_ERROR_KINDS):
        err.print(f"  [red]{n:,} x[/red] {escape(_one_line(message))}")
    err.print(_next_steps(job, counts, paused))


def _summary_rows(job: Job, counts: dict[str, int], n_bad: int, target: str | None) -> list[tuple[str, str]]:
    stats, usage = job.stats, job.usage
    items = f"{counts['succeeded']:,} ok · {counts['failed']:,} failed"
    if counts["pending"]:
        items += f" · {counts['pending']:,} not run yet"
    if n_bad:
        items += f" · {_plural(n_bad, 'bad input row')} skipped"
    # distinct calls by source, counted by the store: right in every mode and across resumes
    sources = job.call_stats
    paid, cached = sources.get(LinkSource.PAID, 0), sources.get(LinkSource.CACHE, 0)
    calls = f"{paid:,} paid · {cached:,} reused from earlier jobs"
    for key in (LinkSource.REPLAY, LinkSource.SHARED):
        if sources.get(key):
            calls += f" · {sources[key]:,} {_CALL_SOURCES[key]}"
    calls += f" · {stats.get('retries', 0):,} retries · {stats.get('rate_limited', 0):,} rate-limited"
    tokens = f"{usage.input_tokens:,} in · {usage.output_tokens:,} out"
    if usage.cache_read_tokens:
        tokens += f" ({usage.cache_read_tokens:,} of the input from the provider's prompt cache)"
    rows = [("items", items), ("calls", calls), ("tokens", tokens), ("cost", _cost_text(job))]
    if counts["pending"] and job.record.note:
        rows.append(("note", escape(job.record.note)))
    if job.record.mode != Mode.REALTIME:
        rows.insert(2, ("tiers", _tiers(job)))
    if target is not None:
        rows.append(("results", "stdout" if target == "-" else escape(target)))
    return rows


def _tiers(job: Job) -> str:
    """How the job's paid calls went out: realtime, or in provider batches over rounds.

    Counted from the store, so a job submitted by one command and collected by another
    shows all of its batches.
    """
    batches = job.store.job_batches(job.id)
    batched = sum(int(b.get("n_calls") or 0) for b in batches)
    rounds = max((int((b.get("info") or {}).get("round") or 0) for b in batches), default=0)
    try:
        realtime = sum(line.calls for tier, line in job.report().by_tier().items() if tier != Tier.BATCH)
    except Exception:
        realtime = int(job.stats.get("sent", 0))
    return (
        f"{realtime:,} calls realtime · {batched:,} in "
        f"{_plural(len(batches), 'provider batch')} over {_plural(rounds, 'round')} (batch price)"
    )


def _next_steps(job: Job, counts: dict[str, int], paused: bool) -> str:
    steps = [f"batchain status {job.id}", f"batchain results {job.id} -o results.jsonl"]
    if paused and job.status.value == "waiting":  # its batches are still at the provider
        steps.insert(0, f"batchain wait {job.id}")
        steps.append(f"batchain cancel {job.id}")
    elif paused:
        more = " --budget MORE" if "budget" in (job.record.note or "") else ""
        steps.insert(0, f"batchain resume {job.id}" + ("" if job.record.inputs_complete else " INPUT") + more)
        steps.append(f"batchain cancel {job.id}")
    elif counts["failed"] and job.status.value != "cancelled":
        steps.insert(0, f"batchain retry {job.id}")
    return "next: " + " · ".join(steps)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:197] + "..."


# -- commands: run, submit, wait ----------------------------------------------------------------

ChainArg = Annotated[
    str,
    typer.Argument(
        metavar="CHAIN",
        help="The chain: path/to/file.py:attr, package.module:attr, or a YAML chain file "
        "(chain.yaml: prompt, model, optional labels or output schema; see examples/).",
        show_default=False,
    ),
]
InputArg = Annotated[
    str,
    typer.Argument(
        metavar="INPUT",
        help="The dataset: .jsonl (one JSON value per line), .csv/.tsv (header row), .parquet, "
        "optionally .gz; or - for JSONL on stdin.",
        show_default=False,
    ),
]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Pay for every call again instead of reusing stored answers.")
]
JobIdOpt = Annotated[str | None, typer.Option("--job-id", help="Name the job (default: a new sortable id).")]
FallbackOpt = Annotated[
    bool,
    typer.Option(
        "--realtime-fallback",
        help="Batch mode: let models without a Batch API run in realtime at full price "
        "(by default such a chain is refused before anything is sent).",
    ),
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option("--max-batch-size", min=1, help="Batch mode: most requests in one provider batch."),
]
PollOpt = Annotated[
    float | None,
    typer.Option(
        "--poll-interval",
        min=0.01,
        help="Batch mode: seconds before the first poll of a provider batch; later polls back off "
        "up to 60 s. (default: 1)",
    ),
]


@app.command()
def run(
    chain: ChainArg,
    input: InputArg,
    output: OutputOpt = None,
    mode: Annotated[
        Mode,
        typer.Option(
            help="realtime: every call now, full price. batch: provider Batch APIs, half price, "
            "minutes to hours. auto: urgent items (--priority) realtime, the rest batch, "
            "stragglers realtime before --deadline."
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
    max_batch_size: BatchSizeOpt = None,
    poll_interval: PollOpt = None,
    priority: Annotated[
        str | None,
        typer.Option(
            "--priority",
            help="Auto mode: the input field that marks urgent items; items where it is positive or "
            "true run realtime, the rest batch.",
        ),
    ] = None,
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
    _check_mode(
        mode, detach, auto_only=priority is not None or deadline is not None or deadline_margin is not None
    )
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
        options=_overrides(concurrency, rpm, tpm, max_retries, timeout)
        | _given(
            mode=mode.value,
            cache=not no_cache,
            fallback=Mode.REALTIME if realtime_fallback else None,
            max_batch_size=max_batch_size,
            poll_min=poll_interval,
            priority=priority,
            deadline=_parse_deadline(deadline),
            deadline_margin=deadline_margin,
            budget=budget,
            prices=_prices_path(prices),
        ),
    )


@app.command()
def submit(
    chain: ChainArg,
    input: InputArg,
    mode: Annotated[
        Mode,
        typer.Option(
            help="Only batch: the job waits at the provider after this command. Realtime and auto "
            "jobs run while `batchain run` runs."
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
    max_batch_size: BatchSizeOpt = None,
    poll_interval: PollOpt = None,
    budget: BudgetOpt = None,
    prices: PricesOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Start a batch job and return once its first round is at the provider.

    Prints the job id on stdout (JOB=$(batchain submit ...)) and a summary on stderr. The
    process may exit: `batchain wait JOB` collects the results later, from any process
    (`batchain status JOB` shows where it is, `batchain cancel JOB` stops it). Options are
    those of `batchain run`; they are stored with the job and apply when it continues.
    """
    if mode != Mode.BATCH:
        raise CliError(
            f"submit starts batch jobs; run a {mode.value} job with `batchain run --mode {mode.value}`"
        )
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
        options=_overrides(concurrency, rpm, tpm, max_retries, timeout)
        | _given(
            mode=mode.value,
            cache=not no_cache,
            fallback=Mode.REALTIME if realtime_fallback else None,
            max_batch_size=max_batch_size,
            poll_min=poll_interval,
            budget=budget,
            prices=_prices_path(prices),
        ),
    )


def _launch(
    chain: str,
    input: str,
    *,
    output: str | None,
    store: Path | None,
    limit: int | None,
    fmt: Format | None,
    job_id: str | None,
    quiet: bool,
    detach: bool,
    options: dict[str, Any],
) -> NoReturn:
    """Create the job and run it (``detach``: until the first round is at the provider)."""
    from batchain.job import new_job_id

    store_path = _store_path(store, must_exist=False)
    target = None if detach else _output_target(output)
    _check_output(target)
    reader, values = _open_input(input, fmt, limit)
    runnable, ref = _load_chain(chain)
    jid = job_id or new_job_id()
    _ensure_new_job(store_path, jid)
    options["progress"] = not quiet and not detach
    started = time.monotonic()

    def start() -> None:
        import batchain

        launch = batchain.submit if detach else batchain.run
        launch(runnable, values, store=store_path, job_id=jid, chain_ref=ref, **options)

    job, interrupted = _run_guarded(jid, store_path, start)
    elapsed = time.monotonic() - started
    if detach and not interrupted:
        raise typer.Exit(_report_submitted(job, reader, quiet, elapsed))
    code = _report(job, reader=reader, target=target, quiet=quiet, elapsed=elapsed, interrupted=interrupted)
    raise typer.Exit(code)


def _report_submitted(job: Job, reader: InputReader, quiet: bool, elapsed: float) -> int:
    """After submit: the job id on stdout; what is at the provider and what next on stderr."""
    _print_bad_rows(reader)
    failures = _write_results(job, None)
    _print_failed_items(failures, reader, job.id)
    print(job.id, flush=True)
    counts = job.counts
    if not quiet:
        err = _stderr()
        batches = _batch_summary(job)
        err.print(
            f"job [bold]{job.id}[/bold] {job.status.value} in {elapsed:.1f} s: "
            f"{counts['total']:,} items, {counts['succeeded']:,} already done; provider batches: {batches}"
        )
        err.print(
            f"next: batchain wait {job.id} (waits and collects, from any process) · "
            f"batchain status {job.id} · batchain cancel {job.id}"
        )
    return EXIT_FAILED if reader.n_bad or counts["failed"] else EXIT_OK


@app.command()
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

    job = _open_job(job_id, store)
    reader, values = _input_again(job, input, fmt, limit, "wait")
    if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED) and reader is None:
        # nothing left to run: report what there is
        target = _output_target(output)
        _check_output(target)
        code = _report(job, reader=None, target=target, quiet=quiet, elapsed=0.0, interrupted=False)
        raise typer.Exit(code)
    _continue(job, reader, values, output, quiet, _given(poll_min=poll_interval))


def _input_again(
    job: Job, input: str | None, fmt: Format | None, limit: int | None, command: str
) -> tuple[InputReader | None, Iterator[Any] | None]:
    if input is not None:
        return _open_input(input, fmt, limit)
    if not job.record.inputs_complete:
        raise CliError(
            f"job {job.id} stopped after reading {job.record.n_items:,} input rows; "
            f"pass the same INPUT again: batchain {command} {job.id} INPUT"
        )
    return None, None


def _batch_summary(job: Job) -> str:
    """Provider batches of a job by status, e.g. ``2 submitted · 1 collected``."""
    by_status = Counter(str(b.get("status")) for b in job.store.job_batches(job.id))
    return " · ".join(f"{n} {status}" for status, n in sorted(by_status.items())) or "none"


def _check_mode(mode: Mode, detach: bool, *, auto_only: bool) -> None:
    from batchain.options import MODES

    if mode.value not in MODES:
        raise CliError(f"--mode {mode.value} is not available in this version yet; use {' or '.join(MODES)}")
    if detach and mode != Mode.BATCH:
        raise CliError("--detach needs --mode batch (realtime jobs run while the command runs)")
    if auto_only and mode != Mode.AUTO:
        raise CliError("--priority, --deadline and --deadline-margin apply to --mode auto")


def _ensure_new_job(store_path: Path, job_id: str) -> None:
    if not store_path.is_file():
        return
    from batchain.store import SQLiteStore

    with SQLiteStore(store_path) as st:
        if st.get_job(job_id) is not None:
            raise CliError(
                f"job {job_id!r} already exists in {store_path}; continue it with `batchain resume`"
            )


def _run_guarded(job_id: str, store_path: Path, start: Any) -> tuple[Job, bool]:
    """Run the job; errors raised before it starts are usage errors (mode, options)."""
    from batchain.engine.runner import JobBusy
    from batchain.store import SQLiteStore

    try:
        return _start_job(job_id, store_path, start)
    except JobBusy as exc:  # another process runs it: nothing was done here
        raise CliError(f"{exc} (see `batchain status {job_id}`)") from None
    except InputError as exc:
        # the input broke while being read (e.g. a truncated .gz): the job is resumable
        raise CliError(
            f"{exc}; the job {job_id} stopped, fix the input and `batchain resume {job_id} INPUT`"
        ) from None
    except (ValueError, RuntimeError) as exc:
        with SQLiteStore(store_path) as st:
            job = st.get_job(job_id)
        if job is None or job.n_items == 0:  # refused before any item ran: mode, options
            raise CliError(str(exc)) from None
        raise


@app.command()
def resume(
    job_id: JobArg,
    input: Annotated[
        str | None,
        typer.Argument(
            metavar="INPUT",
            help="The job's dataset again, if the job stopped before reading all of it "
            "(same file, same --limit and --format).",
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
    quiet: QuietOpt = False,
) -> None:
    """Continue a paused or interrupted job: run the items that have no result yet.

    Model calls that already succeeded are replayed from the store, never paid twice.
    Options not given keep the values the job was started with.
    """
    job = _open_job(job_id, store)
    reader, values = _input_again(job, input, fmt, limit, "resume")
    options = _overrides(concurrency, rpm, tpm, max_retries, timeout) | _given(
        budget=budget, poll_min=poll_interval
    )
    _continue(job, reader, values, output, quiet, options)


@app.command()
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
    quiet: QuietOpt = False,
) -> None:
    """Run a job's failed (and cancelled) items again, in a new process if you like.

    The chain is re-imported from the reference the job recorded. Successful items and
    their calls are kept; only the failed items run.
    """
    job = _open_job(job_id, store)
    if not job.record.inputs_complete:
        raise CliError(f"job {job.id} has unread inputs; finish it first: batchain resume {job.id} INPUT")
    _continue(
        job,
        None,
        None,
        output,
        quiet,
        _overrides(concurrency, rpm, tpm, max_retries, timeout) | _given(budget=budget),
        failed_only=True,
    )


def _continue(
    job: Job,
    reader: InputReader | None,
    values: Iterator[Any] | None,
    output: str | None,
    quiet: bool,
    options: dict[str, Any],
    *,
    failed_only: bool = False,
) -> None:
    target = _output_target(output)
    _check_output(target)
    job = _with_chain(job)
    started = time.monotonic()

    def start() -> None:
        if failed_only:
            job.retry(progress=not quiet, **options)
        elif values is None:
            job.wait(progress=not quiet, **options)
        else:
            job.resume(values, progress=not quiet, **options)

    done, interrupted = _run_guarded(job.id, job.store_path, start)
    code = _report(
        done,
        reader=reader,
        target=target,
        quiet=quiet,
        elapsed=time.monotonic() - started,
        interrupted=interrupted,
    )
    raise typer.Exit(code)


@app.command()
def cancel(job_id: JobArg, store: StoreOpt = None) -> None:
    """Cancel a job; finished results are kept.

    Its provider batches are cancelled, and the items that have not run end as cancelled.
    A cancelled job does not run again.
    """
    from batchain.states import JobStatus

    job = _open_job(job_id, store)
    if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
        _stderr().print(f"job {job.id} is already {job.status.value}; nothing to cancel")
        return
    from batchain.engine.runner import JobBusy

    if job.record.mode == Mode.BATCH:  # cancelling talks to the provider through the chain's models
        job = _with_chain(job)
    try:
        job.cancel()
    except JobBusy as exc:
        raise CliError(f"{exc}; stop it (Ctrl-C), then cancel") from None
    counts = job.counts
    _stderr().print(
        f"job {job.id} {job.status.value}: {counts['succeeded']:,} results kept, "
        f"{counts['cancelled']:,} items cancelled"
    )


# -- commands: jobs, status, results -----------------------------------------------------------


@app.command()
def jobs(
    store: StoreOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many jobs.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per job instead of a table.")
    ] = False,
) -> None:
    """List the jobs in the store, newest first."""
    from batchain.store import SQLiteStore

    path = _store_path(store, must_exist=False)
    if not path.is_file():
        _stderr().print(f"no jobs yet (no store at {escape(str(path))})")
        return
    with SQLiteStore(path) as st:
        records = st.list_jobs(limit)
        rows = [(rec, _counts(st.item_counts(rec.id))) for rec in records]
    if as_json:
        for rec, counts in rows:
            print(json.dumps(_job_summary(rec, counts)))
        return
    if not rows:
        _stderr().print(f"no jobs in {escape(str(path))}")
        return
    # piped output gets room for the whole table instead of rich's 80-column default
    Console(width=None if sys.stdout.isatty() else 200).print(_jobs_table(rows, path))


def _counts(raw: dict[str, int]) -> dict[str, int]:
    from batchain.states import ItemStatus

    counts = {s.value: raw.get(s.value, 0) for s in ItemStatus}
    counts["total"] = sum(raw.values())
    return counts


def _job_summary(rec: Any, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": rec.id,
        "status": rec.status.value,
        "mode": rec.mode,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "chain_ref": rec.chain_ref,
        "inputs_complete": rec.inputs_complete,
        "counts": counts,
        "note": rec.note,
    }


def _jobs_table(rows: list[tuple[Any, dict[str, int]]], path: Path) -> Table:
    table = Table(title=f"jobs in {escape(str(path))}", title_justify="left")
    table.add_column("id", no_wrap=True, style="bold")
    table.add_column("status", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    table.add_column("ok", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("total", justify="right")
    table.add_column("created", no_wrap=True)
    table.add_column("chain", overflow="fold")
    for rec, counts in rows:
        total = f"{counts['total']:,}" + ("" if rec.inputs_complete else "+")
        table.add_row(
            rec.id,
            rec.status.value,
            rec.mode,
            f"{counts['succeeded']:,}",
            f"{counts['failed']:,}",
            total,
            _fmt_time(rec.created_at),
            escape(_short_ref(rec.chain_ref)),
        )
    return table


def _short_ref(ref: str | None) -> str:
    if not ref:
        return "-"
    if _is_yaml(ref):
        return Path(ref).name
    target, _, attr = ref.rpartition(":")
    return f"{Path(target).name}:{attr}" if "/" in target or "\\" in target else ref


@app.command()
def status(
    job_id: JobArg,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as one JSON object.")] = False,
) -> None:
    """Show one job: state, item counts, calls, tokens, and the most common errors.

    Exit code: 0 if no item has failed, 1 if some have, 2 if there is no such job.
    """
    job = _open_job(job_id, store)
    rec, counts = job.record, job.counts
    errors: Counter[str] = Counter()
    for r in job.errors():
        errors[r.error_message or "unknown error"] += 1
    if as_json:
        usage = job.usage
        data = _job_summary(rec, counts) | {
            "calls": job.call_stats,
            "last_run": job.stats,
            "usage": {k: getattr(usage, k) for k in usage.__slots__},
            "errors": [{"error": m, "count": n} for m, n in errors.most_common()],
            "cost": _cost_json(job),
            "batches": [
                {k: b.get(k) for k in ("id", "provider", "status", "provider_batch_id", "n_calls")}
                for b in job.store.job_batches(job.id)
            ],
        }
        print(json.dumps(data))
    else:
        _print_status(job, counts, errors)
    raise typer.Exit(EXIT_FAILED if counts["failed"] or counts["cancelled"] else EXIT_OK)


def _print_status(job: Job, counts: dict[str, int], errors: Counter[str]) -> None:
    rec, out = job.record, _stdout()
    out.print(f"[bold]{rec.id}[/bold]  {rec.status.value}  ({rec.mode})")
    items = " · ".join(f"{counts[k]:,} {k}" for k in ("succeeded", "failed", "pending", "cancelled"))
    items += f" · {counts['total']:,} total" + ("" if rec.inputs_complete else " (inputs not all read yet)")
    calls = " · ".join(f"{n:,} {_CALL_SOURCES.get(k, k)}" for k, n in sorted(job.call_stats.items()))
    usage = job.usage
    last = job.stats
    rows = [
        ("chain", escape(rec.chain_ref or "- (started from Python)")),
        ("created", f"{_fmt_time(rec.created_at)}   updated {_fmt_time(rec.updated_at)}"),
        ("items", items),
        ("calls", calls or "none"),
        ("tokens", f"{usage.input_tokens:,} in · {usage.output_tokens:,} out (paid by this job)"),
        ("cost", _cost_text(job)),
        (
            "last run",
            f"{last.get('sent', 0):,} sent · {last.get('retries', 0):,} retries · "
            f"{last.get('rate_limited', 0):,} rate-limited · "
            f"peak {last.get('peak_in_flight', 0):,} in flight",
        ),
        ("store", escape(str(job.store_path))),
    ]
    if job.store.job_batches(job.id):
        rows.insert(5, ("batches", _batch_summary(job)))
    if rec.note:
        rows.append(("note", escape(rec.note)))
    for label, text in rows:
        out.print(f"  {label:<9} {text}")
    for message, n in errors.most_common(_SHOW_ERROR_KINDS):
        out.print(f"  [red]{n:,} x[/red] {escape(_one_line(message))}")
    if rec.status.value == "waiting":
        out.print(f"next: batchain wait {rec.id} (collects the results) · batchain cancel {rec.id}")
    elif rec.status.value == "paused":
        out.print(f"next: batchain resume {rec.id}" + ("" if rec.inputs_complete else " INPUT"))
    elif counts["failed"]:
        out.print(f"next: batchain retry {rec.id}")


@app.command()
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
    job = _open_job(job_id, store)
    target = output or "-"
    _check_output(target)
    costs = _item_costs(job)
    try:
        with ResultWriter(target) as writer:
            for r in job.iter_results():
                writer.write(r, costs.get(r.index))
            n = writer.n_written
    except OutputError as exc:
        raise CliError(str(exc)) from None
    if target != "-":
        _stderr().print(f"wrote {_plural(n, 'row')} to {escape(target)}")


# -- cost ---------------------------------------------------------------------------------------

#: per-item costs are held in memory while results are written; beyond this the column is empty
_PER_ITEM_COST_LIMIT: Final = 250_000


def _prices_path(prices: Path | None) -> str | None:
    """An absolute path (the job records it, and may resume elsewhere), checked now."""
    if prices is None:
        return None
    from batchain.cost.prices import PriceBook

    path = str(prices.expanduser().resolve())
    try:
        PriceBook(path)
    except Exception as exc:
        raise CliError(f"cannot use price file {prices}: {exc}") from None
    return path


def _item_costs(job: Job) -> dict[int, Any]:
    """USD billed per item; empty when unknown. Cost never stops results from being written."""
    if job.record.n_items > _PER_ITEM_COST_LIMIT:
        return {}
    try:
        report = job.report(per_item=True)
    except Exception:
        return {}
    return {idx: c.cost for idx, c in (report.items or {}).items()}


def _cost_text(job: Job) -> str:
    try:
        report = job.report()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__}: {escape(_one_line(str(exc)))})"
    text = f"${report.paid:,.6f} paid"
    if report.savings:
        text += f" · ${report.savings:,.6f} saved by batch/flex pricing"
    if report.avoided:
        text += f" · ${report.avoided:,.6f} avoided by reuse"
    if not report.complete:
        unknown = ", ".join(sorted({f"{p}/{m}" for p, m in report.unknown_models}))
        text += f" · no known price for {escape(unknown)} (not counted)"
    return text


def _cost_json(job: Job) -> Any:
    from batchain.cost.report import to_json

    try:
        return to_json(job.report())
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def report(
    job_id: JobArg,
    store: StoreOpt = None,
    prices: PricesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """The cost report of a job: tokens, cost and savings by model, tier and round.

    One table: calls, tokens, USD paid, list price and savings by provider/model and tier
    (realtime, batch), then by batch round; what reuse avoided (cache hits, shared calls,
    replays); failed calls and items. Models without a known price are listed, never
    counted as free. --json prints the same as one JSON object.
    """
    from batchain.cost.report import render_table, to_json

    job = _open_job(job_id, store)
    try:
        cost_report = job.report(prices=_prices_path(prices))
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"cannot price job {job.id}: {exc}") from None
    if as_json:
        print(json.dumps(to_json(cost_report)))
        return
    Console(width=None if sys.stdout.isatty() else 160).print(render_table(cost_report))


app.command("report")(report)
# `batchain cost` was this command's first name
app.command("cost", hidden=True, help="The same as `batchain report` (its former name).")(report)


@app.command()
def estimate(
    chain: Annotated[
        str,
        typer.Argument(metavar="CHAIN", help="The chain, as for `batchain run`.", show_default=False),
    ],
    input: Annotated[
        str,
        typer.Argument(metavar="INPUT", help="The dataset, as for `batchain run`.", show_default=False),
    ],
    pilot: Annotated[
        int,
        typer.Option(
            "--pilot",
            min=0,
            help="Also run this many items for real (a small job that is paid for) and extrapolate "
            "with a 95% interval.",
        ),
    ] = 0,
    urgent_fraction: Annotated[
        float,
        typer.Option("--urgent-fraction", min=0, max=1, help="Share of items auto mode would run realtime."),
    ] = 0.0,
    limit: LimitOpt = None,
    fmt: FormatOpt = None,
    store: StoreOpt = None,
    prices: PricesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as one JSON object.")] = False,
) -> None:
    """Estimate what running CHAIN over INPUT would cost in realtime, batch and auto mode.

    Without --pilot nothing is sent: the first model request of every item is built and its
    tokens counted, with output between 0 and max_tokens. With --pilot N a few items run for
    real and every stage is measured.
    """
    import batchain

    reader, values = _open_input(input, fmt, limit)
    runnable, _ = _load_chain(chain)
    try:
        est = batchain.estimate(
            runnable,
            values,
            pilot=pilot,
            store=_store_path(store, must_exist=False),
            prices=_prices_path(prices),
            urgent_fraction=urgent_fraction,
            progress=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise CliError(f"cannot estimate: {exc}") from None
    _print_bad_rows(reader)
    if as_json:
        print(json.dumps(_estimate_json(est)))
    else:
        _print_estimate(est)
    raise typer.Exit(EXIT_FAILED if reader.n_bad else EXIT_OK)


def _estimate_json(est: Any) -> dict[str, Any]:
    def usd(v: Any) -> str | None:
        return None if v is None else str(v)

    return {
        "items": est.items,
        "calls": est.calls,
        "input_tokens": est.input_tokens,
        "max_output_tokens": est.max_output_tokens,
        "token_method": est.token_method,
        "models": est.models,
        "basis": est.basis,
        "pilot_job": est.pilot_job,
        "costs": {
            m: {"low": usd(c.low), "expected": usd(c.expected), "high": usd(c.high)}
            for m, c in est.costs.items()
        },
        "notes": est.notes,
    }


def _print_estimate(est: Any) -> None:
    out = _stdout()
    out.print(est.table())
    models = ", ".join(f"{m} ({n:,})" for m, n in sorted(est.models.items()))
    out.print(f"{est.items:,} items · {est.calls:,} first-stage calls · {est.input_tokens:,} input tokens")
    if models:
        out.print(f"models: {escape(models)}")
    if est.pilot_job:
        out.print(f"pilot job: {est.pilot_job} (see `batchain report {est.pilot_job}`)")
    for note in est.notes:
        out.print(f"[dim]note: {escape(note)}[/dim]")


# -- commands: sandbox, demo --------------------------------------------------------------------


@sandbox_app.command("serve")
def sandbox_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0 picks a free one).")
    ] = 8765,
    latency_ms: Annotated[float, typer.Option(min=0, help="Delay before every realtime answer.")] = 0.0,
    latency_jitter_ms: Annotated[float, typer.Option(min=0, help="Random ± added to the latency.")] = 0.0,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute before 429s.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute before 429s.")] = None,
    error_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of requests answered with a 500.")
    ] = 0.0,
    overloaded_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of requests answered 529/503 overloaded.")
    ] = 0.0,
    batch_processing_s: Annotated[
        float, typer.Option(min=0, help="How long a provider batch stays in progress.")
    ] = 0.5,
    batch_item_error_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of batch items that fail.")
    ] = 0.0,
    batch_expire_after_fraction: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="Expire batches after this share of items is done."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for jitter and fault injection.")] = 0,
) -> None:
    """Serve the OpenAI and Anthropic APIs locally until Ctrl-C.

    Answers are deterministic (classification prompts get one of their labels), usage is
    billed to a ledger, limits give real 429s. Point the official SDKs or LangChain at it
    with OPENAI_BASE_URL / ANTHROPIC_BASE_URL; any API key works.
    """
    from batchain.sandbox import SandboxConfig, serve
    from batchain.sandbox.config import ConfigError

    try:
        config = SandboxConfig(
            latency_ms=latency_ms,
            latency_jitter_ms=latency_jitter_ms,
            rpm=rpm,
            tpm=tpm,
            error_rate=error_rate,
            overloaded_rate=overloaded_rate,
            batch_processing_s=batch_processing_s,
            batch_item_error_rate=batch_item_error_rate,
            batch_expire_after_fraction=batch_expire_after_fraction,
            seed=seed,
        )
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        serve(config, host, port, on_ready=_sandbox_banner)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _sandbox_banner(url: str) -> None:
    lines = [
        f"batchain sandbox listening on {url}   (Ctrl-C to stop)",
        f"  OpenAI API     {url}/v1",
        f"  Anthropic API  {url}",
        "Point the SDKs (and ChatOpenAI / ChatAnthropic) at it, with any key:",
        f"  export OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY=sk-sandbox",
        f"  export ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=sk-ant-sandbox",
        f"Billing ledger: {url}/_sandbox/ledger/summary",
    ]
    print("\n".join(lines), flush=True)


@app.command()
def demo(
    store: StoreOpt = None,
    n: Annotated[int, typer.Option("--n", min=1, max=200, help="Headlines to classify (200 bundled).")] = 200,
    compare: Annotated[
        int, typer.Option("--compare", min=0, max=200, help="Headlines for the three-model comparison.")
    ] = 50,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Use the built-in sandbox even when API keys are set.")
    ] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Pay for every call again.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Classify headlines, compare three models, run them in batch: real jobs, end to end.

    Without OPENAI_API_KEY and ANTHROPIC_API_KEY this runs against the built-in sandbox
    provider (free, offline, with realistic latency). With both keys it uses the real
    APIs and costs a few cents (the batch part then only shows the command). The jobs land
    in the store: try `batchain jobs` after.
    """
    from batchain.demo import DemoOptions, run_demo

    _remember_keys()
    options = DemoOptions(
        store=_store_path(store, must_exist=False),
        n=n,
        compare=min(compare, n),
        force_sandbox=sandbox,
        cache=not no_cache,
        progress=not quiet,
    )
    raise typer.Exit(run_demo(options, _stdout()))


# -- entry point --------------------------------------------------------------------------------


def _error_line(message: str) -> None:
    from batchain.providers.base import redact

    _remember_keys()

    print(f"batchain: error: {redact(_one_line(message))}", file=sys.stderr, flush=True)


def _remember_keys() -> None:
    """Teach the redactor the keys in the environment, so no message can echo them.

    Called before any chain is loaded and before any error is printed: not at start-up,
    because the redactor lives in the engine, and `batchain jobs` or `--help` need none of it.
    """
    from batchain.providers.base import remember_secret

    for name, value in os.environ.items():
        if name.endswith(("_API_KEY", "_TOKEN", "_SECRET")):
            remember_secret(value)


def _usage_error(exc: Exception) -> int:
    """Argument errors as one line; ``batchain`` alone (no command) shows the help."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # type: ignore[attr-defined]
        return EXIT_USAGE
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    _error_line(exc.format_message() + where)  # type: ignore[attr-defined]
    return int(getattr(exc, "exit_code", EXIT_USAGE))


def _internal_error(exc: BaseException) -> NoReturn:
    if os.environ.get("BATCHAIN_DEBUG"):
        raise exc
    _error_line(f"internal error: {type(exc).__name__}: {exc} (set BATCHAIN_DEBUG=1 for the traceback)")
    sys.exit(EXIT_INTERNAL)


def run_cli(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code (``main`` exits with it)."""
    # `batchain run mychain:chain` should import mychain from where the user stands
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        code = app(args=argv, prog_name="batchain", standalone_mode=False)
    except _CLICK_ERRORS as exc:
        return _usage_error(exc)
    except _ABORTS:
        return EXIT_INTERRUPTED
    except CliError as exc:
        _error_line(exc.message)
        return exc.code
    except BrokenPipeError:
        # the reader went away (`batchain results JOB | head`): stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        _internal_error(exc)
    return code if isinstance(code, int) else EXIT_OK


def main() -> None:
    sys.exit(run_cli())


if __name__ == "__main__":
    main()
