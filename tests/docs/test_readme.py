"""The README's tutorial, run block by block, in order, as a reader would run it.

Every fenced block between ``<!-- tutorial -->`` and ``<!-- /tutorial -->`` must be one of:

* ``bash``: run with bash in a scratch directory holding copies of ``examples/`` and the
  bundled datasets, exactly as written, except that the sandbox port 8765 becomes a free
  port; variables set or exported by a block (``export ...``, ``JOB=$(...)``) carry over to
  the next blocks, as in one terminal. The one block that is just ``batchain sandbox serve``
  (the reader's other terminal) runs in the background for the whole tutorial.
* ``python``: executed in this process as ``__main__``, in the same directory, with the
  environment the shell blocks exported, and the names defined by earlier Python blocks.
* a block preceded by ``<!-- file: path -->``: must be that file of the repository, verbatim.

Any other block fails the test, so the tutorial cannot grow a block that is not run.
"""

from __future__ import annotations

import inspect
import os
import re
import runpy
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
START, END = "<!-- tutorial -->", "<!-- /tutorial -->"
FENCE = re.compile(
    r"^(?:<!-- file: (?P<file>\S+) -->\n)?```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
SERVE = "batchain sandbox serve"
README_PORT = 8765
#: run in the scratch directory: the paths the tutorial uses, relative to a checkout
COPIED = ("examples", "src/batchain/data")
#: each bash block runs with everything earlier blocks set (``set -a`` exports every
#: assignment), stops at the first failing command, and saves its environment for the next
BASH = """set -a -eo pipefail
source "$1"
source "$2"
export -p > "$1"
env -0 > "$3"
"""


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    file: str | None
    line: int

    def where(self) -> str:
        return f"README.md:{self.line} ({self.lang or 'no language'} block)"


def tutorial_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, "the tutorial markers are missing"
    start, end = text.index(START), text.index(END)
    offset = text[:start].count("\n")
    section = text[start:end]
    blocks = [
        Block(
            lang=m.group("lang").strip(),
            body=m.group("body"),
            file=m.group("file"),
            line=offset + section[: m.start()].count("\n") + 1,
        )
        for m in FENCE.finditer(section)
    ]
    fences = len(re.findall(r"^```", section, re.MULTILINE))
    assert fences == 2 * len(blocks), "a fenced block in the tutorial is not closed (or not parsed)"
    return blocks


def test_every_tutorial_block_is_one_the_runner_runs() -> None:
    """Fast and static: catches a block of another kind before the slow test runs."""
    from batchain.cli.cmd_sandbox import sandbox_serve

    blocks = tutorial_blocks()
    assert len(blocks) >= 12
    for block in blocks:
        if block.file is not None:
            assert (REPO / block.file).read_text(encoding="utf-8") == block.body, (
                f"{block.where()} must be {block.file}, verbatim"
            )
        else:
            assert block.lang in ("bash", "python"), f"{block.where()}: the README test cannot run it"
    serve = [b for b in blocks if b.lang == "bash" and b.body.strip() == SERVE]
    assert len(serve) == 1 and serve[0] is blocks[0], "the tutorial starts the sandbox first, once"
    # the exports name the port the sandbox listens on by default
    assert inspect.signature(sandbox_serve).parameters["port"].default == README_PORT
    assert f"127.0.0.1:{README_PORT}" in blocks[1].body


def test_quickstart_is_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    quickstart = text[text.index("## Quickstart") : text.index(START)]
    blocks = [m.group("body").strip() for m in FENCE.finditer(quickstart)]
    assert blocks == [
        "python3 -m pip install . && python3 -m batchain demo",
        'python3 -m pip install -e ".[dev]" && python3 -m pytest -q',
    ]


def test_every_yaml_block_is_a_chain_that_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """YAML outside the tutorial (the format reference) is checked too: it must load."""
    from batchain.chains.yamlchain import load_yaml_chain

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    text = README.read_text(encoding="utf-8")
    yaml_blocks = [m.group("body") for m in FENCE.finditer(text) if m.group("lang").strip() == "yaml"]
    assert len(yaml_blocks) >= 2
    for n, body in enumerate(yaml_blocks):
        path = tmp_path / f"block{n}.yaml"
        path.write_text(body)
        assert load_yaml_chain(path) is not None


# -- running ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _base_env() -> dict[str, str]:
    """A reader's shell: no provider settings, batchain and python3 from this venv first."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL")) and not k.startswith(("BATCHAIN_", "PYTEST"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(NO_COLOR="1", COLUMNS="160", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    for rel in COPIED:
        shutil.copytree(REPO / rel, tmp_path / rel, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
    return tmp_path


@pytest.fixture
def sandbox_port() -> Iterator[list[subprocess.Popen[str]]]:
    """Holds the background ``batchain sandbox serve``; stopped with Ctrl-C at the end."""
    servers: list[subprocess.Popen[str]] = []
    yield servers
    for proc in servers:
        proc.send_signal(2)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _start_sandbox(block: Block, env: dict[str, str], cwd: Path, port: int) -> subprocess.Popen[str]:
    command = [*shlex.split(block.body), "--port", str(port)]
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert "listening on" in banner, f"{block.where()}: {banner}{proc.stdout.read() if proc.poll() else ''}"
    return proc


def _run_bash(block: Block, n: int, cwd: Path, env: dict[str, str], state: Path, port: int) -> dict[str, str]:
    script = cwd / f".readme-block-{n}.sh"
    script.write_text(block.body.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}"))
    env_out = cwd / ".readme-env"
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", BASH, "readme", str(state), str(script), str(env_out)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, (
        f"{block.where()} failed with exit code {proc.returncode}:\n{block.body}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    print(f"$ {block.where()}\n{proc.stdout}{proc.stderr}")
    pairs = (item.partition("=") for item in env_out.read_text().split("\0") if item)
    return {k: v for k, _, v in pairs}


def _run_python(
    block: Block,
    n: int,
    cwd: Path,
    env: dict[str, str],
    names: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, object]:
    for key in set(os.environ) - set(env):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    script = cwd / f".readme-block-{n}.py"
    script.write_text(block.body)
    try:
        return runpy.run_path(str(script), init_globals=names, run_name="__main__")
    except Exception as exc:
        raise AssertionError(f"{block.where()} raised {type(exc).__name__}: {exc}\n{block.body}") from exc


def test_readme_tutorial_runs(
    scratch: Path, sandbox_port: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = tutorial_blocks()
    port = _free_port()
    env = _base_env()
    state = scratch / ".readme-shell-state"
    state.write_text("")
    names: dict[str, object] = {}
    monkeypatch.chdir(scratch)
    ran = 0
    for n, block in enumerate(blocks):
        if block.file is not None:
            assert (REPO / block.file).read_text(encoding="utf-8") == block.body, block.where()
        elif block.lang == "bash" and block.body.strip() == SERVE:
            sandbox_port.append(_start_sandbox(block, env, scratch, port))
        elif block.lang == "bash":
            env = _run_bash(block, n, scratch, env, state, port)
        elif block.lang == "python":
            names = _run_python(block, n, scratch, env, names, monkeypatch)
        else:
            raise AssertionError(f"{block.where()}: the README test cannot run it")
        ran += 1
    assert ran == len(blocks)

    # what the tutorial promises, checked on what it left behind
    from batchain import Job

    store = scratch / "tutorial.sqlite"
    assert store.is_file(), "the tutorial's jobs live in the store it exported"
    labels = [line for line in (scratch / "labels.jsonl").read_text().splitlines() if line]
    assert len(labels) == 1000 and all('"status": "succeeded"' in line for line in labels)
    batch_job = Job.open(env["JOB"], store=store)
    assert batch_job.record.mode == "batch" and batch_job.counts["succeeded"] == 1000
    assert batch_job.call_stats.get("cache", 0) == 20  # the sample's answers, not paid again
    assert Job.open("summaries", store=store).counts["succeeded"] == 40
    # step 5: gpt-4o-mini's answers came from step 3, the other two models were paid in batch
    compare = names["job"]
    assert isinstance(compare, Job) and compare.counts["succeeded"] == 100
    assert names["report"].cache_hits == 100  # type: ignore[attr-defined]
    paid = {model: line.calls for (_, model), line in names["report"].by_model().items()}  # type: ignore[attr-defined]
    assert paid == {"gpt-4o": 100, "claude-haiku-4-5": 100}
    ledger = _ledger(port)
    assert {(e["provider"], e["tier"]) for e in ledger} == {
        ("openai", "realtime"),
        ("openai", "batch"),
        ("anthropic", "batch"),
    }
    assert not _duplicates(port), "the tutorial paid for a request twice"


def _ledger(port: int) -> list[dict[str, object]]:
    import httpx

    entries: list[dict[str, object]] = httpx.get(
        f"http://127.0.0.1:{port}/_sandbox/ledger", timeout=10
    ).json()
    return entries


def _duplicates(port: int) -> dict[str, int]:
    import httpx

    dupes: dict[str, int] = httpx.get(f"http://127.0.0.1:{port}/_sandbox/duplicates", timeout=10).json()
    return dupes
