"""Fixtures for driving the real ``batchain`` console script against an in-process sandbox."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from batchain.cli import run_cli
from batchain.sandbox import Sandbox, SandboxConfig
from tests import preloaded
from tests.conftest import TEST_KEY

REPO = Path(__file__).resolve().parents[2]
CHAIN = str(REPO / "examples" / "classify_chain.py") + ":chain"
HEADLINES = REPO / "src" / "batchain" / "data" / "headlines.jsonl"
LABELS = {"tech", "business", "entertainment", "sports", "other"}


def batchain_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m batchain.cli``."""
    script = Path(sys.executable).with_name("batchain")
    return [str(script)] if script.exists() else [sys.executable, "-m", "batchain.cli"]


@dataclass
class Cli:
    """Runs ``batchain ...`` in a subprocess with a private store and the sandbox's URLs."""

    env: dict[str, str]
    cwd: Path
    store: Path
    command: list[str] = field(default_factory=batchain_command)

    def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        # the console script, run by a child of the preloaded fork server (tests/preloaded.py):
        # a process of its own that skips the interpreter's start and the heavy imports
        script = self.command[1:] if self.command[0] == sys.executable else self.command
        done = preloaded.run(
            [*script, *args], env=env or self.env, cwd=self.cwd, timeout=timeout, text=True, input=stdin
        )
        done.args = [*self.command, *args]
        return done

    def here(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The same command in this process, on the same store: for a quick look at a job
        (status, jobs, results) where a new interpreter would only add a second of imports."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run_cli([*args, "--store", str(self.store)])
        return subprocess.CompletedProcess(["batchain", *args], code, out.getvalue(), err.getvalue())

    def popen(self, *args: str, **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.cwd,
            **kwargs,  # type: ignore[call-overload]
        )


@pytest.fixture(scope="session")
def cli_sandbox_session() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig()) as sb:
        yield sb


@pytest.fixture
def cli_sandbox(cli_sandbox_session: Sandbox) -> Iterator[Sandbox]:
    cli_sandbox_session.reset()
    cli_sandbox_session.configure(**SandboxConfig().to_dict())
    yield cli_sandbox_session
    cli_sandbox_session.reset()


def _base_env(store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.endswith("_BASE_URL")}
    env.update(BATCHAIN_STORE=str(store), PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.pop("BATCHAIN_DEBUG", None)
    return env


@pytest.fixture
def cli(cli_sandbox: Sandbox, tmp_path: Path) -> Cli:
    store = tmp_path / "store.sqlite"
    env = _base_env(store)
    env.update(
        OPENAI_BASE_URL=cli_sandbox.openai_base_url,
        OPENAI_API_KEY=TEST_KEY,
        ANTHROPIC_BASE_URL=cli_sandbox.anthropic_base_url,
        ANTHROPIC_API_KEY=TEST_KEY,
    )
    return Cli(env=env, cwd=tmp_path, store=store)


@pytest.fixture
def cli_offline(tmp_path: Path) -> Cli:
    """No keys, no sandbox URLs: what a fresh machine looks like."""
    store = tmp_path / "store.sqlite"
    return Cli(env=_base_env(store), cwd=tmp_path, store=store)
