"""``python -m batchain.sandbox --host 127.0.0.1 --port 0 [--latency-ms 50 ...]``.

Prints ``READY http://HOST:PORT`` on stdout once listening, serves until
SIGTERM/SIGINT.  Every knob of :class:`SandboxConfig` is a ``--knob-name`` option;
``--config-json`` passes them all at once (options given explicitly win).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from batchain.sandbox.config import ConfigError, SandboxConfig
from batchain.sandbox.server import serve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batchain.sandbox",
        description="Local OpenAI/Anthropic API sandbox (realtime and batch).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config-json", default=None, help="all knobs as one JSON object")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (parent died)")
    for field in fields(SandboxConfig):
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=None,
            metavar=str(field.type).removesuffix(" | None").upper(),
            help=f"knob {field.name} (default {field.default!r})",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        knobs = json.loads(args.config_json) if args.config_json else {}
        for field in fields(SandboxConfig):
            value = getattr(args, field.name)
            if value is not None:
                knobs[field.name] = value
        config = SandboxConfig.from_dict(knobs)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(config, args.host, args.port, watch_stdin=args.watch_stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
