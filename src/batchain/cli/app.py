"""The typer application the commands are registered on, the exit codes and the user-facing error.

A module of its own, importing nothing else of the command line, so the command modules
and the entry point (:mod:`batchain.cli`) all share it without importing each other.
"""

from __future__ import annotations

from typing import Final

import typer

from batchain.errors import BatchainError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "app",
    "sandbox_app",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERNAL: Final = 3
EXIT_INTERRUPTED: Final = 130
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
    """A user-facing error: printed as one line, exits with ``code``. ``whole``: the line is
    never shortened (it says what to do, and the end of it matters)."""

    def __init__(self, message: str, code: int = EXIT_USAGE, *, whole: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.whole = whole
