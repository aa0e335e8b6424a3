"""Shared benchmark plumbing: a sandbox in its own process, client runs, medians, results.

Every benchmark writes ``bench/results/<name>.json`` in one self-describing shape
(``tables`` of rows), and ``bench/report.py`` turns all of them into docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batchain.sandbox import Sandbox, SandboxConfig

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


@contextmanager
def sandbox(**knobs: Any) -> Iterator[Sandbox]:
    """The sandbox in a separate process, so it never shares a core's GIL with the client."""
    with Sandbox(SandboxConfig(**knobs), process=True) as sb:
        yield sb


def run_client(script: str, *args: str, timeout: float = 900, src: str | None = None) -> dict[str, Any]:
    """Run ``bench/clients/<script>`` in a fresh interpreter; return its JSON line. ``src``:
    import batchain from that source tree (another checkout, for before/after runs)."""
    cmd = [sys.executable, str(ROOT / "clients" / script), *args]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def save(
    name: str,
    title: str,
    command: str,
    tables: list[dict[str, Any]],
    notes: list[str] | None = None,
    raw: Any = None,
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "name": name,
        "title": title,
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "tables": tables,
        "notes": notes or [],
        "raw": raw,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def show(tables: list[dict[str, Any]], path: Path) -> None:
    """Print what a benchmark saved (its tables, row by row) and where."""
    for t in tables:
        print(t["title"])
        for row in t["rows"]:
            print("   ", " | ".join(str(c) for c in row))
    print("wrote", path)
