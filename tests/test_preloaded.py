"""The preloaded children of tests/preloaded.py behave as ``python script`` children."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests import preloaded

SCRIPT = """
import os, sys, time, atexit
import batchain
from batchain.store.connection import busy_timeout_s
atexit.register(lambda: print("atexit ran", file=sys.stderr))
print("argv", sys.argv[1:], "cwd", os.getcwd(), "env", os.environ.get("PRELOADED_PROBE"))
print("path0", sys.path[0])
print("busy timeout", busy_timeout_s())  # read from the child's environment, not the server's
if sys.argv[1] == "sleep":
    time.sleep(60)
if sys.argv[1] == "fail":
    raise ValueError("boom")
sys.exit(int(sys.argv[2]))
"""


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "child_script.py"
    path.write_text(SCRIPT)
    return path


def test_a_child_gets_its_argv_environment_and_folder_and_exits_with_its_code(tmp_path: Path) -> None:
    script = _script(tmp_path)
    child = preloaded.popen(
        [str(script), "exit", "3"],
        env={"PRELOADED_PROBE": "yes", "PATH": "/usr/bin", "BATCHAIN_BUSY_TIMEOUT_S": "7.5"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 3
    assert f"argv ['exit', '3'] cwd {tmp_path} env yes" in out
    assert f"path0 {tmp_path}" in out
    assert "busy timeout 7.5" in out
    assert "atexit ran" in err


def test_a_child_that_raises_prints_its_traceback_and_exits_1(tmp_path: Path) -> None:
    done = preloaded.run([str(_script(tmp_path)), "fail", "0"], text=True, timeout=60)
    assert done.returncode == 1
    assert "ValueError: boom" in done.stderr


def test_a_child_is_a_process_signals_reach(tmp_path: Path) -> None:
    child = preloaded.popen([str(_script(tmp_path)), "sleep", "0"], stderr=subprocess.PIPE)
    assert child.poll() is None
    assert child.pid != 0 and child.pid != __import__("os").getpid()
    time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert child.stderr is not None


def test_a_child_interrupted_ends_as_python_does_on_an_uncaught_keyboardinterrupt(tmp_path: Path) -> None:
    child = preloaded.popen([str(_script(tmp_path)), "sleep", "0"], stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=30) == -signal.SIGINT  # as `python script` ends
    _, err = child.communicate()
    assert "KeyboardInterrupt" in err and "atexit ran" in err


def test_waiting_past_the_timeout_raises_as_popen_does(tmp_path: Path) -> None:
    child = preloaded.popen([str(_script(tmp_path)), "sleep", "0"])
    try:
        try:
            child.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        else:
            raise AssertionError("wait returned while the child sleeps")
    finally:
        child.kill()
        child.wait(timeout=30)
    assert sys.executable in child.args


def test_a_child_reads_the_given_stdin_and_runs_a_module(tmp_path: Path) -> None:
    (tmp_path / "echo_mod.py").write_text("import sys\nprint(sys.stdin.read().upper(), sys.argv[1:])\n")
    done = preloaded.run(["-m", "echo_mod", "a"], cwd=tmp_path, input="hello", text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "HELLO ['a']"
    empty = preloaded.run(["-m", "echo_mod"], cwd=tmp_path, text=True, timeout=60)
    assert empty.stdout.strip() == "[]"
