"""Child Python processes for the tests, forked from a server that has imported the heavy
libraries once.

A child that runs a chain imports batchain, LangChain and the provider SDKs first: about
3.5 s of CPU on a slow 2-core machine, most of what the crash, lease and storm tests
spend, which start hundreds of such children. :func:`popen` runs ``python script args``
as a child forked from multiprocessing's fork server, which preloaded those imports. The
child is a process of its own: its own pid, killed, stopped and interrupted by signals as
any other, and it runs the script as ``__main__`` with the given argv, environment and
working directory, then exits as an interpreter does (``atexit`` handlers, streams
flushed, the exit status of ``SystemExit``). Its stdout and stderr go to files that the
returned handle reads back. The handle has the parts of :class:`subprocess.Popen` the
tests use.

batchain reads its environment when called, never at import, so a preloaded module sees
the child's environment as a freshly imported one would (``test_preloaded.py`` checks it
through the store's busy timeout).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

__all__ = ["Child", "popen", "run"]

#: imported once by the fork server, before any child
PRELOAD = [
    "batchain",
    "batchain.api",
    "batchain.job",
    "batchain.engine.session",
    "langchain_openai",
    "langchain_anthropic",
]

_lock = threading.Lock()
_context: ForkServerContext | None = None


_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
_folder: str | None = None


def _outputs() -> str:
    """The folder of the children's output files (removed when the tests end)."""
    global _folder
    with _lock:
        if _folder is None:
            _folder = tempfile.mkdtemp(prefix="batchain-children-")
            atexit.register(shutil.rmtree, _folder, True)
        return _folder


def _server() -> ForkServerContext:
    global _context
    with _lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _context = ctx
        return _context


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _main(
    script: str, args: list[str], env: dict[str, str], cwd: str, out: str, err: str, stdin: str
) -> None:
    """The child: the script (or ``-m module``) as ``__main__``, then an interpreter's
    exit."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path, flags in ((0, stdin, os.O_RDONLY), (1, out, _WRITE), (2, err, _WRITE)):
        target = os.open(path, flags)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (multiprocessing gave it /dev/null)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    module = args[0] if script == "-m" else None
    code = 0
    try:
        if module is not None:
            sys.argv = [module, *args[1:]]
            sys.path.insert(0, cwd)  # as ``python -m`` has it
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [script, *args]
            sys.path.insert(0, str(Path(script).resolve().parent))  # as ``python script`` has it
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream: nothing to flush
                stream.flush()
        if code == -signal.SIGINT:
            # as CPython ends on an uncaught KeyboardInterrupt: killed by SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)


class Child:
    """A preloaded child, with the parts of :class:`subprocess.Popen` the tests use."""

    def __init__(
        self, args: list[str], process: BaseProcess, folder: str, text: bool, pipes: tuple[bool, bool]
    ):
        self.args = args
        self._process = process
        self._folder = folder
        self._text = text
        self._pipes = pipes
        assert process.pid is not None  # started
        self.pid = process.pid
        self.stdout: Any = None
        self.stderr: Any = None

    @property
    def returncode(self) -> int | None:
        code = self._process.exitcode
        if code is not None and self.stdout is None and self.stderr is None:
            self._open_outputs()
        return code

    def _open_outputs(self) -> None:
        mode = "r" if self._text else "rb"
        out, err = self._pipes
        if out:
            self.stdout = open(os.path.join(self._folder, "stdout"), mode)  # noqa: SIM115
        if err:
            self.stderr = open(os.path.join(self._folder, "stderr"), mode)  # noqa: SIM115

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self.returncode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def communicate(self, timeout: float | None = None) -> tuple[Any, Any]:
        self.wait(timeout)
        out = self.stdout.read() if self.stdout is not None else None
        err = self.stderr.read() if self.stderr is not None else None
        return out, err

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def popen(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    text: bool = False,
    stdin: str | bytes | None = None,
) -> Child:
    """``subprocess.Popen([sys.executable, *args], ...)`` for a script (``args[0]``, or
    ``-m module``), as a preloaded child. ``stdout``/``stderr``: ``subprocess.PIPE`` to
    read them back; ``stdin``: what the child reads (else nothing: ``/dev/null``)."""
    script, *rest = [str(a) for a in args]
    folder = tempfile.mkdtemp(prefix="child-", dir=_outputs())
    out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
    given = os.devnull
    if stdin is not None:
        given = os.path.join(folder, "stdin")
        Path(given).write_bytes(stdin.encode() if isinstance(stdin, str) else stdin)
    where = str(cwd or os.getcwd())
    process = _server().Process(
        target=_main,
        args=(script, rest, dict(os.environ if env is None else env), where, out, err, given),
        # daemonic: a child a failed test left behind does not hold up the worker's exit
        daemon=True,
    )
    process.start()
    pipes = (stdout == subprocess.PIPE, stderr == subprocess.PIPE)
    return Child([sys.executable, script, *rest], process, folder, text, pipes)


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    text: bool = False,
    input: str | bytes | None = None,
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run([sys.executable, *args], capture_output=True, ...)``, preloaded."""
    child = popen(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text, stdin=input
    )
    try:
        out, err = child.communicate(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise
    return subprocess.CompletedProcess(child.args, child.wait(), out, err)
