"""What the commands print (rich): run summaries, the jobs table, a job's status, failed
items and bad input rows, cost lines, the estimate.

Results go to stdout and everything for humans to stderr. These functions only format and
print; the commands decide what runs and with which exit code.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rich.box import HEAVY_HEAD, Box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table

from batchain.cli.common import is_yaml
from batchain.cli.datafiles import InputReader, input_id
from batchain.engine.forecast import JobProgress, progress_text
from batchain.options import Mode, Tier
from batchain.states import BatchStatus, LinkSource

if TYPE_CHECKING:
    from batchain.job import Job

#: bad input rows and error kinds shown in a summary; the rest are counted
_SHOW_BAD_ROWS: Final = 20
_SHOW_FAILED_ITEMS: Final = 10
_SHOW_ERROR_KINDS: Final = 3
#: how a job got its calls, as the summaries say it
_CALL_SOURCES: Final[dict[str, str]] = {
    LinkSource.PAID: "paid",
    LinkSource.CACHE: "reused from earlier jobs",
    LinkSource.REPLAY: "replayed after a restart",
    LinkSource.SHARED: "shared between identical items",
}


def err_console() -> Console:
    # soft_wrap: long lines (paths, commands) stay whole for copy-paste, even when piped
    return Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}{'es' if word.endswith('ch') else 's'}"


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:197] + "..."


class Failures:
    """Failed items seen while writing results: counted by message, the first few kept."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.first: list[tuple[int, Any, str]] = []

    def add(self, result: Any) -> None:
        message = result.error_message or "unknown error"
        self.kinds[message] += 1
        if len(self.first) < _SHOW_FAILED_ITEMS:
            self.first.append((result.index, input_id(result.input), message))

    @property
    def total(self) -> int:
        return sum(self.kinds.values())


def print_failed_items(failures: Failures, reader: InputReader | None, job_id: str) -> None:
    """One line per failed item (the first few): where its input came from, and why."""
    if not failures.first:
        return
    err = err_console()
    for index, item_id, message in failures.first:
        where = reader.where(index) if reader is not None else None
        label = f"{where} (item {index})" if where else f"item {index}"
        if item_id is not None and not isinstance(item_id, dict | list):
            label += f" id {item_id}"
        err.print(f"[red]failed:[/red] {escape(label)}: {escape(one_line(message))}")
    hidden = failures.total - len(failures.first)
    if hidden > 0:
        err.print(f"[red]failed:[/red] … and {hidden:,} more (`batchain results {job_id}` lists them all)")


def print_bad_rows(reader: InputReader) -> None:
    if not reader.n_bad:
        return
    err = err_console()
    for bad in reader.bad_rows[:_SHOW_BAD_ROWS]:
        err.print(f"[yellow]bad input:[/yellow] {escape(str(bad))}")
    hidden = reader.n_bad - min(len(reader.bad_rows), _SHOW_BAD_ROWS)
    if hidden > 0:
        err.print(f"[yellow]bad input:[/yellow] … and {hidden:,} more")


def print_summary(
    job: Job,
    counts: dict[str, int],
    n_bad: int,
    elapsed: float,
    target: str | None,
    errors: Counter[str],
    paused: bool,
) -> None:
    err = err_console()
    state = "[yellow]paused[/yellow]" if paused else f"[bold]{job.status.value}[/bold]"
    err.print(f"job [bold]{escape(job.id)}[/bold] {state} in {elapsed:.1f} s")
    for label, text in _summary_rows(job, counts, n_bad, target):
        err.print(f"  {label:<8} {text}")
    for message, n in errors.most_common(_SHOW_ERROR_KINDS):
        err.print(f"  [red]{n:,} x[/red] {escape(one_line(message))}")
    err.print(_next_steps(job, counts, paused))


def _summary_rows(job: Job, counts: dict[str, int], n_bad: int, target: str | None) -> list[tuple[str, str]]:
    stats, usage = job.stats, job.usage
    items = f"{counts['succeeded']:,} ok · {counts['failed']:,} failed"
    if counts["pending"]:
        items += f" · {counts['pending']:,} not run yet"
    if n_bad:
        items += f" · {plural(n_bad, 'bad input row')} skipped"
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
    from batchain.cost.report import realtime_notes  # not at import: `--help` stays light

    rows.extend(("note", escape(note)) for note in realtime_notes(stats))
    if job.record.mode != Mode.REALTIME:
        rows.insert(2, ("tiers", _tiers(job)))
    if target is not None:
        rows.append(("results", "stdout" if target == "-" else escape(target)))
    return rows


def _tiers(job: Job) -> str:
    """How the job's paid calls went out: realtime, or in provider batches over rounds
    (flex mode: at flex or at the standard tier).

    Counted from the store, so a job submitted by one command and collected by another
    shows all of its batches.
    """
    if job.record.mode == Mode.FLEX:
        return _flex_tiers(job)
    every = job.store.job_batches(job.id)
    # a lost batch ran nothing: its calls, if sent again, are counted in another batch
    batches = [b for b in every if b.status != BatchStatus.LOST]
    lost = len(every) - len(batches)
    batched = sum(b.n_calls for b in batches)
    rounds = max((int(b.info.get("round") or 0) for b in every), default=0)
    try:
        realtime = sum(line.calls for tier, line in job.report().by_tier().items() if tier != Tier.BATCH)
    except Exception:
        realtime = int(job.stats.get("sent", 0))
    return (
        f"{realtime:,} calls realtime · {batched:,} in "
        f"{plural(len(batches), 'provider batch')} over {plural(rounds, 'round')} (batch price)"
        + (f" · {plural(lost, 'batch')} lost" if lost else "")
    )


def _flex_tiers(job: Job) -> str:
    """Flex mode: paid calls at flex and at the standard tier, and why some were standard."""
    by_tier = job.report().by_tier()
    flex = by_tier[Tier.FLEX].calls if Tier.FLEX in by_tier else 0
    standard = sum(line.calls for tier, line in by_tier.items() if tier != Tier.FLEX)
    text = f"{flex:,} calls at flex (batch price) · {standard:,} at the standard tier"
    fallbacks = int(job.stats.get("flex_fallbacks", 0))
    refused = int(job.stats.get("flex_unavailable", 0))
    if refused:
        text += f" · {refused:,} flex refusals (Resource Unavailable) retried"
    if fallbacks:
        text += f" · {fallbacks:,} sent standard after flex refused them"
    return text


def _next_steps(job: Job, counts: dict[str, int], paused: bool) -> str:
    steps = [f"batchain status {job.id}", f"batchain results {job.id} -o results.jsonl"]
    if paused and job.status.value == "waiting":  # its batches are still at the provider
        steps.insert(0, f"batchain wait {job.id}")
        steps.append(f"batchain cancel {job.id}")
    elif paused:
        more = " --budget MORE" if "budget" in (job.record.note or "") else ""
        # INPUT only where the job cannot reopen its inputs itself (read from stdin)
        needs_input = not job.record.inputs_complete and not job.record.input_ref
        steps.insert(0, f"batchain resume {job.id}" + (" INPUT" if needs_input else "") + more)
        steps.append(f"batchain cancel {job.id}")
    elif counts["failed"] and job.status.value != "cancelled":
        steps.insert(0, f"batchain retry {job.id}")
    return "next: " + " · ".join(steps)


def batch_summary(job: Job) -> str:
    """Provider batches of a job by status, e.g. ``2 submitted · 1 collected``."""
    by_status = Counter(b.status for b in job.store.job_batches(job.id))
    return " · ".join(f"{n} {status}" for status, n in sorted(by_status.items())) or "none"


def _cost_text(job: Job) -> str:
    try:
        report = job.report()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__}: {escape(one_line(str(exc)))})"
    text = f"${report.paid:,.6f} paid"
    if report.savings:
        text += f" · ${report.savings:,.6f} saved by batch/flex pricing"
    if report.avoided:
        text += f" · ${report.avoided:,.6f} avoided by reuse"
    usage = report.usage
    if usage.cache_read_tokens or usage.cache_creation_tokens:
        text += (
            f" · prompt cache: {usage.cache_read_tokens:,} tokens read, "
            f"{usage.cache_creation_tokens:,} written, ${report.cache_saved:,.6f} saved"
        )
    if not report.complete:
        unknown = ", ".join(sorted({f"{p}/{m}" for p, m in report.unknown_models}))
        text += f" · no known price for {escape(unknown)} (not counted)"
    return text


def cost_json(job: Job) -> Any:
    from batchain.cost.render import to_json

    try:
        return to_json(job.report())
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def progress_json(p: JobProgress) -> dict[str, Any]:
    return {
        "items_done": p.items_done,
        "items_total": p.items_total,
        "items_failed": p.items_failed,
        "batches": p.batches,
        "open_batches": p.open_batches,
        "requests_done": p.requests_done,
        "requests_total": p.requests_total,
        "expected_finish": p.expected_finish,
    }


def job_summary(rec: Any, counts: dict[str, int]) -> dict[str, Any]:
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
        "runner": rec.runner(time.time()),
    }


@dataclass(frozen=True, slots=True)
class _JobsLayout:
    """How much the jobs table shows: the chain column, the creation date (how), borders."""

    chain: bool = True
    date_fmt: str | None = "%Y-%m-%d %H:%M:%S"
    box: Box | None = HEAVY_HEAD


_SHORT_DATE: Final = "%m-%d %H:%M"
#: columns the chain column needs to be worth showing (a longer reference folds)
_CHAIN_ROOM: Final = 24
#: the jobs table's layouts, widest first: a narrower terminal gets the first that fits
#: (the chain goes first, then the creation date shortens, then the borders, then the date)
_JOBS_LAYOUTS: Final = (
    _JobsLayout(),
    _JobsLayout(chain=False),
    _JobsLayout(chain=False, date_fmt=_SHORT_DATE),
    _JobsLayout(chain=False, date_fmt=_SHORT_DATE, box=None),
    _JobsLayout(chain=False, date_fmt=None, box=None),
)


def jobs_table(rows: list[tuple[Any, dict[str, int]]], path: str, width: int | None = None) -> Table:
    """The jobs as a table; ``width`` (the terminal's columns) picks the widest layout that
    fits, so no column is squeezed to nothing (the chain column, which folds, needs
    :data:`_CHAIN_ROOM` columns)."""
    if width is None:
        return _jobs_table(rows, path, _JOBS_LAYOUTS[0])
    console = Console(width=10_000)
    for layout in _JOBS_LAYOUTS:
        table = _jobs_table(rows, path, replace(layout, chain=False))
        need = Measurement.get(console, console.options, table).maximum
        if need + (_CHAIN_ROOM if layout.chain else 0) <= width:
            break
    return _jobs_table(rows, path, layout)


def _jobs_table(rows: list[tuple[Any, dict[str, int]]], path: str, layout: _JobsLayout) -> Table:
    table = Table(
        title=f"jobs in {escape(path)}",
        title_justify="left",
        box=layout.box,
        pad_edge=layout.box is not None,
    )
    table.add_column("id", no_wrap=True, style="bold")
    table.add_column("status", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    for name in ("ok", "failed", "total"):
        table.add_column(name, justify="right", no_wrap=True)
    if layout.date_fmt:
        table.add_column("created", no_wrap=True)
    if layout.chain:
        table.add_column("chain", overflow="fold")
    for rec, counts in rows:
        total = f"{counts['total']:,}" + ("" if rec.inputs_complete else "+")
        cells = [
            escape(rec.id),
            rec.status.value,
            escape(rec.mode),
            f"{counts['succeeded']:,}",
            f"{counts['failed']:,}",
            total,
        ]
        if layout.date_fmt:
            cells.append(time.strftime(layout.date_fmt, time.localtime(rec.created_at)))
        if layout.chain:
            cells.append(escape(_short_ref(rec.chain_ref)))
        table.add_row(*cells)
    return table


def _short_ref(ref: str | None) -> str:
    if not ref:
        return "-"
    if is_yaml(ref):
        return Path(ref).name
    target, _, attr = ref.rpartition(":")
    return f"{Path(target).name}:{attr}" if "/" in target or "\\" in target else ref


def helpers_of(job: Job) -> list[str]:
    """The processes (``host:pid``) helping with a job's items, besides its lease holder."""
    runner = job.record.runner(time.time())
    return sorted({r.host_pid for r in job.store.job_runners(job.id)} - {runner or ""})


def print_status(job: Job, counts: dict[str, int], errors: Counter[str]) -> None:
    rec, out = job.record, out_console()
    out.print(f"[bold]{escape(rec.id)}[/bold]  {rec.status.value}  ({escape(rec.mode)})")
    items = " · ".join(f"{counts[k]:,} {k}" for k in ("succeeded", "failed", "pending", "cancelled"))
    items += f" · {counts['total']:,} total" + ("" if rec.inputs_complete else " (inputs not all read yet)")
    calls = " · ".join(f"{n:,} {_CALL_SOURCES.get(k, k)}" for k, n in sorted(job.call_stats.items()))
    usage = job.usage
    last = job.stats
    rows = [
        ("chain", escape(rec.chain_ref or "- (started from Python)")),
        ("created", f"{fmt_time(rec.created_at)}   updated {fmt_time(rec.updated_at)}"),
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
        ("store", escape(job.store.name)),
    ]
    runner = rec.runner(time.time())
    if runner is not None:
        rows.insert(1, ("runner", escape(f"{runner} (its lease, until {fmt_time(rec.lease_until or 0)})")))
    helpers = helpers_of(job)
    if helpers:
        rows.insert(2, ("helpers", escape(f"{len(helpers)}: " + ", ".join(helpers))))
    rows[5:5] = [(label, escape(text)) for label, text in progress_text(job.progress())[1:]]
    if rec.note:
        rows.append(("note", escape(rec.note)))
    _print_rows(out, rows)
    for message, n in errors.most_common(_SHOW_ERROR_KINDS):
        out.print(f"  [red]{n:,} x[/red] {escape(one_line(message))}")
    if rec.status.value == "waiting":
        out.print(escape(f"next: batchain wait {rec.id} (collects the results) · batchain cancel {rec.id}"))
    elif rec.status.value == "paused":
        out.print(escape(f"next: batchain resume {rec.id}" + ("" if rec.inputs_complete else " INPUT")))
    elif counts["failed"]:
        out.print(escape(f"next: batchain retry {rec.id}"))


def _print_rows(out: Console, rows: list[tuple[str, str]]) -> None:
    """Labelled rows: in a terminal, values wrap between words under their column (a
    line wider than the terminal is not left to break mid-word); piped, one line each."""
    if not out.is_terminal:
        for label, text in rows:
            out.print(f"  {label:<9} {text}")
        return
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, min_width=9)
    grid.add_column(overflow="fold")
    for label, text in rows:
        grid.add_row(label, text)
    Console(highlight=False).print(Padding(grid, (0, 0, 0, 2)))


def estimate_json(est: Any) -> dict[str, Any]:
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


def print_estimate(est: Any) -> None:
    out = out_console()
    out.print(est.table())
    models = ", ".join(f"{m} ({n:,})" for m, n in sorted(est.models.items()))
    out.print(f"{est.items:,} items · {est.calls:,} first-stage calls · {est.input_tokens:,} input tokens")
    if models:
        out.print(f"models: {escape(models)}")
    if est.pilot_job:
        out.print(escape(f"pilot job: {est.pilot_job} (see `batchain report {est.pilot_job}`)"))
    for note in est.notes:
        out.print(f"[dim]note: {escape(note)}[/dim]")


def sandbox_banner(url: str) -> None:
    lines = [
        f"batchain sandbox listening on {url}   (Ctrl-C to stop)",
        f"  OpenAI API     {url}/v1",
        f"  Anthropic API  {url}",
        f"  Gemini API     {url}",
        "Point the SDKs (and ChatOpenAI / ChatAnthropic / ChatGoogleGenerativeAI) at it, with any key:",
        f"  export OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY=sk-sandbox",
        f"  export ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=sk-ant-sandbox",
        f"  export GOOGLE_GEMINI_BASE_URL={url} GOOGLE_API_KEY=sandbox-key",
        f"Billing ledger: {url}/_sandbox/ledger/summary",
    ]
    print("\n".join(lines), flush=True)
