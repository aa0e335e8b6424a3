"""The commands' options and arguments, each declared once, and what their values mean.

Most options recur in several commands (--store, --concurrency, --rpm, --budget ...): each
is an ``Annotated`` alias here, so its flag and help read the same in every --help, and the
helpers below turn the given values into the keyword arguments of :func:`batchain.run`.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from batchain.cli.app import CliError
from batchain.options import Mode, PromptCache

# -- choices ------------------------------------------------------------------------------------


class Format(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    tsv = "tsv"
    parquet = "parquet"


# -- options of several commands ----------------------------------------------------------------

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="The job store: a SQLite file, or a postgresql:// URL. Default: $BATCHAIN_STORE, "
        "else ~/.batchain/store.sqlite.",
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

# -- arguments and options of the commands that start jobs (run, submit) ----------------------

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
BatchOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--batch-only",
        help="Batch mode: refuse (before anything is sent) a model whose endpoint has no Batch "
        "API, instead of running its calls in realtime at full price with a note.",
    ),
]
EndpointModeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--endpoint-mode",
        metavar="TARGET=batch|realtime",
        help="Batch mode: send the calls of a model (by name), base URL or host to its Batch API "
        "(batch) or realtime at full price (realtime), over what batchain knows of that endpoint. "
        "Repeat for more.",
    ),
]
FlexFallbackOpt = Annotated[
    str | None,
    typer.Option(
        "--flex-fallback",
        metavar="standard|batch|fail",
        help="Flex mode: what a call does that cannot go at flex (its model has no flex tier, or "
        "flex refused it for --flex-patience seconds): standard sends it at the standard tier and "
        "price; batch sends a call whose model has no flex through the Batch API (one refused "
        "at flex goes standard); fail fails it. (default: standard)",
        show_default=False,
    ),
]
FlexPatienceOpt = Annotated[
    float | None,
    typer.Option(
        "--flex-patience",
        min=0,
        help="Flex mode: seconds a call retries, backing off, while flex answers 429 Resource "
        "Unavailable, before --flex-fallback. (default: 300)",
        show_default=False,
    ),
]
FlexTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--flex-timeout",
        min=0.001,
        help="Flex mode: seconds one flex request may take (flex is slow). (default: 900)",
        show_default=False,
    ),
]
FlexModelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--flex-model",
        metavar="MODEL",
        help="Flex mode: an OpenAI model name (or pattern, gpt-5*) to send at flex, instead of "
        "those the price catalog has a flex price for. Repeat for more.",
        show_default=False,
    ),
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option("--max-batch-size", min=1, help="Batch mode: most requests in one provider batch."),
]
OpenBatchesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-open-batches",
        min=1,
        help="Batch mode: most provider batches open at once per model; the rest wait for one "
        "to end. (default: no cap)",
    ),
]
EnqueuedTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--max-enqueued-tokens",
        min=1,
        help="Batch mode: most input tokens in open provider batches per model (a provider's "
        "batch queue limit, e.g. OpenAI's enqueued tokens; ~4 characters a token). "
        "(default: no cap; the provider's limit is learned from its refusals)",
    ),
]
PromptCacheOpt = Annotated[
    PromptCache | None,
    typer.Option(
        "--prompt-cache",
        help="Batch mode: auto puts calls that share a long system prompt in the same provider "
        "batches and marks Anthropic's for its prompt cache, after one priming batch per prompt; "
        "off sends every request as the chain built it. (default: auto)",
    ),
]
PriorityOpt = Annotated[
    str | None,
    typer.Option(
        "--priority",
        help="Auto mode: one level for every item: high (realtime), normal or low (batch); "
        "or a number (positive: high, 0: normal, negative: low).",
    ),
]
PriorityFieldOpt = Annotated[
    str | None,
    typer.Option(
        "--priority-field",
        help="Auto mode: the input field (JSON key, CSV column) with each item's level: high, "
        "normal, low, a number or true/false; missing or empty: normal. An item whose value "
        "is none of these fails, naming it; the others run.",
    ),
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


# -- what the values mean -----------------------------------------------------------------------


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave; the rest keep their defaults (or the job's stored values)."""
    return {k: v for k, v in options.items() if v is not None}


def overrides(
    concurrency: int | None,
    rpm: float | None,
    tpm: float | None,
    max_retries: int | None,
    timeout: float | None,
) -> dict[str, Any]:
    """The tuning options (run, submit, resume, retry) as keyword arguments of the engine."""
    return given(max_concurrency=concurrency, rpm=rpm, tpm=tpm, max_retries=max_retries, timeout=timeout)


def launch_options(
    mode: Mode,
    no_cache: bool,
    realtime_fallback: bool,
    max_batch_size: int | None,
    poll_interval: float | None,
    max_open_batches: int | None = None,
    max_enqueued_tokens: int | None = None,
    endpoint_mode: list[str] | None = None,
    batch_only: bool = False,
) -> dict[str, Any]:
    """The options a new job starts with (run, submit), as keyword arguments of the engine."""
    if batch_only and realtime_fallback:
        raise CliError("--batch-only and --realtime-fallback contradict each other: choose one")
    return given(
        mode=mode.value,
        cache=not no_cache,
        fallback="realtime" if realtime_fallback else None,
        batch_only=batch_only or None,
        endpoint_modes=endpoint_modes(endpoint_mode),
        max_batch_size=max_batch_size,
        max_open_batches=max_open_batches,
        max_enqueued_tokens=max_enqueued_tokens,
        poll_min=poll_interval,
    )


def flex_options(
    fallback: str | None, patience: float | None, timeout: float | None, models: list[str] | None
) -> dict[str, Any]:
    """The flex-mode options (run), as keyword arguments of the engine."""
    from batchain.options import FLEX_FALLBACKS

    if fallback is not None and fallback not in FLEX_FALLBACKS:
        choices = ", ".join(FLEX_FALLBACKS[:-1]) + f" or {FLEX_FALLBACKS[-1]}"
        raise CliError(f"--flex-fallback {fallback!r}: use {choices}")
    return given(
        flex_fallback=fallback, flex_patience=patience, flex_timeout=timeout, flex_models=models or None
    )


def endpoint_modes(given: list[str] | None) -> dict[str, str] | None:
    """``--endpoint-mode TARGET=batch|realtime`` (repeated) as ``endpoint_modes``."""
    if not given:
        return None
    out: dict[str, str] = {}
    for text in given:
        target, sep, mode = text.rpartition("=")
        if not sep or not target.strip() or mode.strip().lower() not in ("batch", "realtime"):
            raise CliError(
                f"--endpoint-mode {text!r}: write TARGET=batch or TARGET=realtime, where TARGET is "
                "a model name, a base URL or a host"
            )
        out[target.strip()] = mode.strip().lower()
    return out


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_deadline(text: str | None) -> float | datetime | None:
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


def prices_path(prices: Path | None) -> str | None:
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
