"""The README's Quickstart, as a new user runs it: its install-and-demo command in a fresh
virtual environment, from a copy of the checkout, with no API key and an empty home.

This is what a fresh machine does first; it catches a dependency the package forgot, a
file the wheel leaves out, or a demo that needs something only a developer has. It also
holds the install light: the sandbox's optional server speedups stay out of it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
#: in a copy of the checkout, only what a clone has (no environments, stores or caches)
LEFT_OUT = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.py[co]", "*.sqlite*", "*.egg-info", "build"
)
#: uvicorn's optional extras: they speed up only the sandbox server (the `sandbox` extra)
HEAVY = ("uvloop", "httptools", "watchfiles")


def quickstart_command() -> str:
    """The Quickstart's first shell block: the one command that installs and runs the demo."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quickstart") :]
    block = re.search(r"```bash\n(?P<body>.*?)```", section, re.DOTALL)
    assert block is not None, "README.md: the Quickstart has no bash block"
    command = block.group("body").strip()
    assert "\n" not in command and "batchain demo" in command, f"not install-and-demo: {command!r}"
    return command


def fresh_env(bin_dir: Path, home: Path) -> dict[str, str]:
    """A new user's shell: the fresh venv first on PATH, no provider keys or batchain settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL"))
        and not k.startswith(("BATCHAIN_", "PYTEST", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), NO_COLOR="1")
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1")
    return env


@pytest.mark.timeout(600)
def test_the_quickstart_installs_and_runs_the_demo_in_a_fresh_venv(tmp_path: Path) -> None:
    command = quickstart_command()
    checkout = tmp_path / "batchain"
    shutil.copytree(REPO, checkout, ignore=LEFT_OUT)
    env_dir, home = tmp_path / "venv", tmp_path / "home"
    home.mkdir()
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=checkout,
        env=fresh_env(bin_dir, home),
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, f"{command!r} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    # the demo ran a job on the sandbox and kept it in its own store, in the new user's home
    assert "sandbox" in done.stdout + done.stderr
    assert (home / ".batchain" / "demo.sqlite").is_file()
    assert not (home / ".batchain" / "store.sqlite").exists(), "the demo wrote to the default store"
    # it ran the installed package, not this checkout
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import batchain, uvicorn; print(batchain.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(env_dir) in where.stdout
    site = subprocess.run(
        [str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    extras = [name for name in HEAVY if (Path(site) / name).exists()]
    assert not extras, f"the plain install pulls in the sandbox's optional speedups: {extras}"
    assert sys.version_info >= (3, 11)
