"""``batchain demo``: two real jobs over the bundled headlines, end to end.

(a) classify headlines with ``prompt | ChatOpenAI(gpt-4o-mini) | StrOutputParser`` and
score the answers against the gold labels; (b) ask gpt-4o-mini, gpt-4o and
claude-haiku-4-5 the same question in one ``RunnableParallel`` and compare them; (c) on
the sandbox, run (a) again through the Batch API and compare what it costs.

Without both API keys the demo starts the built-in sandbox provider in this process, so
it runs offline and free; nothing is faked, the jobs go through batchain and the store
like any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableParallel
from rich.console import Console
from rich.table import Table

import batchain
from batchain.job import Job
from batchain.options import Mode
from batchain.states import LinkSource

__all__ = ["LABELS", "MODELS", "PROMPT", "DemoOptions", "load_headlines", "normalize_label", "run_demo"]

LABELS: Final[tuple[str, ...]] = ("tech", "business", "entertainment", "sports", "other")
MODELS: Final[tuple[str, ...]] = ("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5")
PROMPT: Final = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a careful news editor."),
        (
            "human",
            "Classify the news headline into one of: tech, business, entertainment, sports, other. "
            "Answer with the label only.\n\nHeadline: {headline}",
        ),
    ]
)
#: small realistic provider latency for the sandbox: 30-80 ms
_SANDBOX_LATENCY_MS: Final = 55.0
_SANDBOX_JITTER_MS: Final = 25.0
_SANDBOX_KEY: Final = "sk-sandbox-demo"
_UNKNOWN: Final = "?"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    store: Path | str
    n: int = 200
    compare: int = 50
    force_sandbox: bool = False
    cache: bool = True
    progress: bool = True


@dataclass(slots=True)
class _Providers:
    """Keyword arguments for the chat models, and the sandbox if one is running."""

    openai: dict[str, Any] = field(default_factory=dict)
    anthropic: dict[str, Any] = field(default_factory=dict)
    sandbox: Any = None

    def openai_model(self, model: str) -> Runnable[Any, Any]:
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(model=model, temperature=0, max_completion_tokens=16, **self.openai)

    def anthropic_model(self, model: str) -> Runnable[Any, Any]:
        from langchain_anthropic import ChatAnthropic

        # keywords by name: the SDK model's fields have aliases that static checkers do not see
        settings: dict[str, Any] = {"model": model, "temperature": 0, "max_tokens": 16, **self.anthropic}
        return ChatAnthropic(**settings)


# -- data and scoring -------------------------------------------------------------------------


def load_headlines(n: int) -> list[dict[str, str]]:
    """The first ``n`` bundled headlines (id, headline, label)."""
    rows: list[dict[str, str]] = []
    with files("batchain.data").joinpath("headlines.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
            if len(rows) >= n:
                break
    return rows


def normalize_label(answer: Any) -> str:
    """A model answer as one of :data:`LABELS`, or ``"?"``."""
    text = _text(answer).strip().strip(".!\"'`*").lower()
    if text in LABELS:
        return text
    found = [label for label in LABELS if label in text.split()]
    return found[0] if len(found) == 1 else _UNKNOWN


def _text(answer: Any) -> str:
    if isinstance(answer, BaseMessage):
        answer = answer.content
    if isinstance(answer, list):  # content blocks
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in answer)
    return "" if answer is None else str(answer)


def _inputs(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    # the gold label stays out of the chain's input: the model must not see the answer
    return [{"id": r["id"], "headline": r["headline"]} for r in rows]


# -- providers --------------------------------------------------------------------------------


@contextlib.contextmanager
def _providers(force_sandbox: bool, console: Console) -> Iterator[_Providers]:
    missing = [k for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY") if not os.environ.get(k)]
    if not missing and not force_sandbox:
        console.print("Using the real OpenAI and Anthropic APIs (keys found in the environment).")
        yield _Providers()
        return
    from batchain.sandbox import Sandbox, SandboxConfig

    config = SandboxConfig(latency_ms=_SANDBOX_LATENCY_MS, latency_jitter_ms=_SANDBOX_JITTER_MS)
    with Sandbox(config) as sb:
        why = "--sandbox given" if force_sandbox else f"{' and '.join(missing)} not set"
        console.print(
            f"{why}: using the built-in sandbox provider at {sb.url} "
            f"(local and free, {_SANDBOX_LATENCY_MS - _SANDBOX_JITTER_MS:.0f}-"
            f"{_SANDBOX_LATENCY_MS + _SANDBOX_JITTER_MS:.0f} ms latency)."
        )
        yield _Providers(
            openai={"base_url": sb.openai_base_url, "api_key": _SANDBOX_KEY},
            anthropic={"base_url": sb.anthropic_base_url, "api_key": _SANDBOX_KEY},
            sandbox=sb,
        )


def _run(chain: Runnable[Any, Any], inputs: list[dict[str, str]], options: DemoOptions, real: bool) -> Job:
    return batchain.run(
        chain,
        inputs,
        store=options.store,
        cache=options.cache,
        progress=options.progress,
        # gentler on real accounts; the sandbox takes anything
        max_concurrency=16 if real else 64,
    )


# -- (a) classification -----------------------------------------------------------------------


def _classify(p: _Providers, rows: list[dict[str, str]], options: DemoOptions, console: Console) -> Job:
    console.rule(f"(a) classify {len(rows)} headlines with gpt-4o-mini")
    chain = PROMPT | p.openai_model("gpt-4o-mini") | StrOutputParser()
    started = time.monotonic()
    job = _run(chain, _inputs(rows), options, p.sandbox is None)
    elapsed = time.monotonic() - started
    gold = [r["label"] for r in rows]
    predicted = [normalize_label(r.output) if r.ok else _UNKNOWN for r in job.iter_results()]
    correct = sum(g == q for g, q in zip(gold, predicted, strict=True))
    console.print(
        f"accuracy {correct}/{len(rows)} = [bold]{correct / max(len(rows), 1):.1%}[/bold] "
        f"against the gold labels · {_job_line(job, elapsed)}"
    )
    console.print(_confusion_table(gold, predicted))
    return job


def _confusion_table(gold: list[str], predicted: list[str]) -> Table:
    pairs = Counter(zip(gold, predicted, strict=True))
    columns = [*LABELS, *([_UNKNOWN] if _UNKNOWN in predicted else [])]
    table = Table(title="confusion (rows: gold label, columns: answer)", title_justify="left")
    table.add_column("gold", style="bold")
    for label in columns:
        table.add_column(label, justify="right")
    table.add_column("recall", justify="right")
    for g in LABELS:
        total = sum(n for (gg, _), n in pairs.items() if gg == g)
        cells = [_cell(pairs[(g, q)], g == q) for q in columns]
        table.add_row(g, *cells, f"{pairs[(g, g)] / total:.0%}" if total else "-")
    return table


def _cell(n: int, diagonal: bool) -> str:
    if not n:
        return "[dim]·[/dim]"
    return f"[green]{n}[/green]" if diagonal else f"[red]{n}[/red]"


# -- (b) three-model comparison -----------------------------------------------------------------


def _compare(p: _Providers, rows: list[dict[str, str]], options: DemoOptions, console: Console) -> Job:
    console.rule(f"(b) three models, one RunnableParallel, {len(rows)} headlines")
    models = {name: _model(p, name) for name in MODELS}
    # messages, not strings: each answer carries its own token usage
    chain = PROMPT | RunnableParallel(models)
    started = time.monotonic()
    ledger_before = len(p.sandbox.ledger()) if p.sandbox is not None else 0
    job = _run(chain, _inputs(rows), options, p.sandbox is None)
    elapsed = time.monotonic() - started
    console.print(_model_table(job, rows))
    console.print(_job_line(job, elapsed))
    if p.sandbox is not None:
        console.print(_ledger_line(p.sandbox, ledger_before))
    return job


def _model(p: _Providers, name: str) -> Runnable[Any, Any]:
    return p.anthropic_model(name) if name.startswith("claude") else p.openai_model(name)


def _model_table(job: Job, rows: list[dict[str, str]]) -> Table:
    answers: dict[str, list[str]] = {m: [] for m in MODELS}
    tokens: dict[str, list[int]] = {m: [0, 0] for m in MODELS}
    for r in job.iter_results():
        outputs = r.output if r.ok and isinstance(r.output, dict) else {}
        for m in MODELS:
            answers[m].append(normalize_label(outputs.get(m)))
            usage = getattr(outputs.get(m), "usage_metadata", None) or {}
            tokens[m][0] += usage.get("input_tokens", 0)
            tokens[m][1] += usage.get("output_tokens", 0)
    gold = [r["label"] for r in rows]
    all_agree = sum(len({answers[m][i] for m in MODELS}) == 1 for i in range(len(rows)))
    table = Table(title=f"per model (all three agree on {all_agree}/{len(rows)})", title_justify="left")
    for col in ("model", "agrees with gold", "input tokens", "output tokens"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for m in MODELS:
        correct = sum(a == g for a, g in zip(answers[m], gold, strict=True))
        table.add_row(
            m,
            f"{correct}/{len(rows)} ({correct / max(len(rows), 1):.0%})",
            f"{tokens[m][0]:,}",
            f"{tokens[m][1]:,}",
        )
    return table


def _ledger_line(sandbox: Any, before: int) -> str:
    """What the sandbox billed during job (b), per model: the provider's side of the story."""
    billed: dict[str, list[int]] = {}
    for entry in sandbox.ledger()[before:]:
        counters = billed.setdefault(entry.model, [0, 0, 0])
        counters[0] += 1
        counters[1] += entry.input_tokens
        counters[2] += entry.output_tokens
    parts = []
    for m in MODELS:
        if m in billed:
            n, i, o = billed[m]
            parts.append(f"{m} {n} calls, {i:,} in / {o:,} out")
        else:
            parts.append(f"{m} nothing (its answers were reused from the store)")
    return "sandbox ledger for (b), what the provider billed: " + "; ".join(parts)


# -- (c) batch mode ---------------------------------------------------------------------------


def _batch(
    p: _Providers, rows: list[dict[str, str]], options: DemoOptions, console: Console, realtime: Job
) -> Job:
    console.rule(f"(c) the same {len(rows)} headlines through the Batch API")
    chain = PROMPT | p.openai_model("gpt-4o-mini") | StrOutputParser()
    started = time.monotonic()
    # cache off: (a) already answered these exact requests, and reusing them would skip the batch
    job = batchain.run(
        chain,
        _inputs(rows),
        mode=Mode.BATCH,
        store=options.store,
        cache=False,
        progress=options.progress,
        poll_min=0.2,
        poll_max=1.0,
    )
    elapsed = time.monotonic() - started
    console.print(_job_line(job, elapsed))
    batch_cost, realtime_cost = job.cost, realtime.cost
    if batch_cost is not None and realtime_cost:
        console.print(
            f"cost at list prices: [bold]${batch_cost:.6f}[/bold] in batch vs ${realtime_cost:.6f} "
            f"in realtime for (a): {batch_cost / realtime_cost:.0%} of the price"
        )
    return job


# -- shared reporting ---------------------------------------------------------------------------


def _job_line(job: Job, elapsed: float) -> str:
    sources, usage = job.call_stats, job.usage
    counts = job.counts
    reused = sum(n for source, n in sources.items() if source != LinkSource.PAID)
    failed = f" · [red]{counts['failed']} failed[/red]" if counts["failed"] else ""
    return (
        f"{job.id}: {counts['succeeded']} items ok{failed} in {elapsed:.1f} s · "
        f"calls {sources.get(LinkSource.PAID, 0)} paid, {reused} reused from the store · "
        f"tokens {usage.input_tokens:,} in / {usage.output_tokens:,} out"
    )


def run_demo(options: DemoOptions, console: Console) -> int:
    """Run both demo jobs; 0 if every item succeeded, else 1."""
    rows = load_headlines(options.n)
    with _providers(options.force_sandbox, console) as p:
        jobs = [_classify(p, rows, options, console)]
        if options.compare:
            jobs.append(_compare(p, rows[: options.compare], options, console))
        real = p.sandbox is None
        if real:
            console.print(
                "[dim]batch mode (half price, minutes to hours at a real provider): "
                "batchain run CHAIN INPUT --mode batch[/dim]"
            )
        else:
            jobs.append(_batch(p, rows, options, console, jobs[0]))
    console.rule()
    ids = " ".join(j.id for j in jobs)
    from batchain.cli.common import store_name

    name = store_name(options.store)  # a URL's password is never shown
    at = f" --store {name}"
    console.print(
        f"the demo's own store: {name} · see the jobs: batchain jobs{at} · "
        f"batchain status {jobs[0].id}{at} · the bill: batchain report {jobs[-1].id}{at}"
    )
    console.print(f"demo jobs: {ids}")
    if options.cache and real:
        console.print("[dim]answers are stored: a second demo run reuses them (--no-cache pays again)[/dim]")
    return 0 if all(j.counts["failed"] == 0 for j in jobs) else 1
