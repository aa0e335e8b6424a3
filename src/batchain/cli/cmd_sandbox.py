"""The commands that need no API key: ``sandbox serve`` (the local OpenAI/Anthropic server)
and ``demo`` (real jobs end to end, on the sandbox when no keys are set)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from batchain.cli.app import CliError
from batchain.cli.common import remember_keys, resolve_store
from batchain.cli.options import StoreOpt
from batchain.cli.render import out_console, sandbox_banner


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
    """Serve the OpenAI, Anthropic and Gemini APIs locally until Ctrl-C.

    Answers are deterministic (classification prompts get one of their labels), usage is
    billed to a ledger, limits give real 429s. Point the official SDKs or LangChain at it
    with OPENAI_BASE_URL / ANTHROPIC_BASE_URL / GOOGLE_GEMINI_BASE_URL; any API key works.
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
        serve(config, host, port, on_ready=sandbox_banner)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def demo_store_path() -> Path:
    """Where the demo keeps its jobs by default: ``demo.sqlite`` beside the default store."""
    from batchain.store import default_store_path

    return default_store_path().with_name("demo.sqlite")


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
    in a store of their own, demo.sqlite beside the default store (or --store), so your
    own job list stays yours; the demo prints the commands that look at them.
    """
    from batchain.cli.demo import DemoOptions, run_demo

    remember_keys()
    options = DemoOptions(
        store=resolve_store(store, must_exist=False) if store is not None else demo_store_path(),
        n=n,
        compare=min(compare, n),
        force_sandbox=sandbox,
        cache=not no_cache,
        progress=not quiet,
    )
    raise typer.Exit(run_demo(options, out_console()))
