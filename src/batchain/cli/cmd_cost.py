"""The money commands: ``report`` (what a job cost; ``cost`` is its former name) and
``estimate`` (what a run would cost, before it runs)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from batchain.cli.app import EXIT_FAILED, EXIT_OK, CliError
from batchain.cli.common import load_chain, open_input, open_job, resolve_store
from batchain.cli.options import FormatOpt, JobArg, LimitOpt, PricesOpt, StoreOpt, prices_path
from batchain.cli.render import estimate_json, print_bad_rows, print_estimate


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
    from batchain.cost.render import render_table, to_json

    job = open_job(job_id, store)
    try:
        cost_report = job.report(prices=prices_path(prices))
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"cannot price job {job.id}: {exc}") from None
    if as_json:
        print(json.dumps(to_json(cost_report)))
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(render_table(cost_report, width=console.width))


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
        typer.Option(
            "--urgent-fraction",
            min=0,
            max=1,
            help="Share of items auto mode would run realtime (high priority); the rest are priced as batch.",
        ),
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

    reader, values = open_input(input, fmt, limit)
    runnable, _ = load_chain(chain)
    try:
        est = batchain.estimate(
            runnable,
            values,
            pilot=pilot,
            store=resolve_store(store, must_exist=False),
            prices=prices_path(prices),
            urgent_fraction=urgent_fraction,
            progress=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise CliError(f"cannot estimate: {exc}") from None
    print_bad_rows(reader)
    if as_json:
        print(json.dumps(estimate_json(est)))
    else:
        print_estimate(est)
    raise typer.Exit(EXIT_FAILED if reader.n_bad else EXIT_OK)
