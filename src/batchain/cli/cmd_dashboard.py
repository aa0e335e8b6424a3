"""``batchain dashboard``: the live web page over the store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from batchain.cli.app import CliError
from batchain.cli.common import resolve_store, store_name
from batchain.cli.options import StoreOpt
from batchain.cli.render import err_console


def dashboard(
    store: StoreOpt = None,
    host: Annotated[
        str,
        typer.Option(help="Interface to listen on (anything but loopback shows the jobs to that network)."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0 picks a free one).")
    ] = 8800,
) -> None:
    """Serve a live dashboard of the store's jobs in the browser, until Ctrl-C.

    Read-only: every job with its progress, cost against its budget, savings and finish;
    one job's progress over time, provider batches, calls by model and tier, commonest
    errors, and its results as JSONL or CSV. Needs the `dashboard` extra (plotly).
    """
    from batchain.dashboard import DashboardUnavailable, serve

    path = resolve_store(store, must_exist=True)

    def ready(url: str) -> None:
        err_console().print(f"dashboard of {escape(store_name(path))} at {url} (Ctrl-C to stop)")

    try:
        serve(path, host=host, port=port, on_ready=ready)
    except DashboardUnavailable as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        pass
