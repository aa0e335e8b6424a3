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

This package is the command line only: :mod:`~batchain.cli.app` (the typer app, exit codes),
:mod:`~batchain.cli.options` (options declared once), the commands in ``cmd_run``,
``cmd_jobs``, ``cmd_cost``, ``cmd_dashboard`` and ``cmd_sandbox``, :mod:`~batchain.cli.render` (what they
print), :mod:`~batchain.cli.datafiles` (reading inputs, writing results) and
:mod:`~batchain.cli.demo`. This module registers the commands and is the entry point
(``batchain = "batchain.cli:main"``).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Final, NoReturn

import click
import typer

from batchain.cli.app import (
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    app,
    sandbox_app,
)
from batchain.cli.cmd_cost import estimate, report
from batchain.cli.cmd_dashboard import dashboard
from batchain.cli.cmd_jobs import cancel, compact, jobs, results, status
from batchain.cli.cmd_run import resume, retry, run, submit, wait
from batchain.cli.cmd_sandbox import demo, sandbox_serve
from batchain.cli.cmd_worker import worker
from batchain.cli.common import remember_keys
from batchain.cli.render import one_line
from batchain.errors import StoreError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "app",
    "main",
    "run_cli",
]

# -- the commands, in the order `batchain --help` lists them ------------------------------------

app.command()(run)
app.command()(submit)
app.command()(wait)
app.command()(resume)
app.command()(retry)
app.command()(cancel)
app.command()(jobs)
app.command()(status)
app.command()(results)
app.command("report")(report)
app.command()(compact)
app.command()(worker)
# `batchain cost` was this command's first name
app.command("cost", hidden=True, help="The same as `batchain report` (its former name).")(report)
app.command()(estimate)
app.command()(demo)
app.command()(dashboard)
sandbox_app.command("serve")(sandbox_serve)

# -- entry point --------------------------------------------------------------------------------

# Typer >= 0.20 vendors click as typer._click; older ones raise the click package's errors.
_CLICK_ERRORS: Final = (click.ClickException, typer.TyperException)
_ABORTS: Final[tuple[type[BaseException], ...]] = (click.Abort, typer.Abort)


def _error_line(message: str, *, whole: bool = False) -> None:
    """Print ``message`` as one line; shortened when long, unless ``whole`` (a line that
    names a file and what to do about it is cut nowhere)."""
    from batchain.providers.base import redact

    remember_keys()
    line = " ".join(message.split()) if whole else one_line(message)
    print(f"batchain: error: {redact(line)}", file=sys.stderr, flush=True)


def _warning_line(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any, **__: Any
) -> None:
    """A warning as one line of its own (``warnings.showwarning`` in the CLI), not Python's
    file, line and source text."""
    from batchain.providers.base import redact

    text = " ".join(str(message).split())
    print(f"batchain: warning: {redact(text)}", file=sys.stderr, flush=True)


def _usage_error(exc: click.ClickException | typer.TyperException) -> int:
    """Argument errors as one line; ``batchain`` alone (no command) shows the help."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        exc.show()
        return EXIT_USAGE
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    _error_line(exc.format_message() + where)
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
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            code = app(args=argv, prog_name="batchain", standalone_mode=False)
    except _CLICK_ERRORS as exc:
        return _usage_error(exc)
    except _ABORTS:
        return EXIT_INTERRUPTED
    except CliError as exc:
        _error_line(exc.message, whole=exc.whole)
        return exc.code
    except StoreError as exc:  # damaged, newer, read-only, disk full: one line, nothing half-written
        _error_line(str(exc), whole=True)
        return EXIT_FAILED
    except BrokenPipeError:
        # the reader went away (`batchain results JOB | head`): stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        _internal_error(exc)
    return code if isinstance(code, int) else EXIT_OK


def main() -> None:
    sys.exit(run_cli())
