"""Running the sandbox: in-process (a daemon thread), as a subprocess, or blocking.

``Sandbox`` is a context manager with the same API in both modes::

    with Sandbox(SandboxConfig(latency_ms=50)) as sb:                 # thread in this process
        client = OpenAI(base_url=sb.openai_base_url, api_key="sk-test")
    with Sandbox(SandboxConfig(), process=True) as sb:                # `python -m batchain.sandbox`
        ...

The server always uses uvicorn (uvloop + httptools when installed), no access log.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import httpx
import uvicorn

from batchain.sandbox.app import create_app
from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.ledger import LedgerEntry
from batchain.sandbox.openai.api import COMPAT_PREFIX
from batchain.sandbox.state import SandboxState

__all__ = ["Sandbox", "serve"]

T = TypeVar("T")

_READY = "READY"


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """A uvicorn server that reports when it is actually accepting requests."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self._on_started is not None and not self.should_exit:
            self._on_started()


def _uvicorn_config(state: SandboxState) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(state),
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        access_log=False,
        log_level="warning",
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=3,
        timeout_keep_alive=30,
    )


def serve(
    config: SandboxConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None] | None = None,
    watch_stdin: bool = False,
) -> None:
    """Serve in the foreground until SIGTERM/SIGINT (used by the CLI and ``__main__``).

    ``on_ready(url)`` is called once the server accepts requests; by default it prints
    ``READY <url>`` on stdout.  With ``watch_stdin`` the server also exits when its stdin
    reaches EOF (so a child never outlives a crashed parent).
    """
    state = SandboxState(config)
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1])
    report = on_ready or (lambda u: print(f"{_READY} {u}", flush=True))
    server = _Server(_uvicorn_config(state), lambda: report(url))
    if watch_stdin:

        def watch() -> None:
            # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader
            # aborts interpreter shutdown ("could not acquire lock for <stdin>").
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            server.should_exit = True

        threading.Thread(target=watch, name="sandbox-stdin-watch", daemon=True).start()
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the
    # handlers that were installed before it; make those no-ops so we exit with 0.
    previous = _quiet_signals()
    try:
        server.run(sockets=[sock])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _quiet_signals() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, lambda *_: None) for signum in (signal.SIGINT, signal.SIGTERM)}


class Sandbox:
    """A sandbox server with a Python control API; see the module docstring."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        process: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
    ) -> None:
        self._initial = config or SandboxConfig()
        self._process_mode = process
        self._host = host
        self._port = port
        self._startup_timeout = startup_timeout
        self._url: str | None = None
        # in-process mode
        self._state: SandboxState | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # subprocess mode
        self._proc: subprocess.Popen[bytes] | None = None
        self._http: httpx.Client | None = None

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Sandbox:
        if self._url is not None:
            return self
        if self._process_mode:
            self._start_process()
        else:
            self._start_thread()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = self._thread = None
        if self._proc is not None:
            _terminate(self._proc)
            self._proc = None
        if self._http is not None:
            self._http.close()
            self._http = None
        self._url = None

    def _start_thread(self) -> None:
        state = SandboxState(self._initial)
        sock = _bind(self._host, self._port)
        started = threading.Event()
        server = _Server(_uvicorn_config(state), started.set)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # surfaced to the starting thread
                failure.append(exc)
                started.set()

        thread = threading.Thread(target=run, name="batchain-sandbox", daemon=True)
        thread.start()
        if not started.wait(self._startup_timeout) or failure:
            server.should_exit = True
            raise RuntimeError(f"sandbox failed to start: {failure[:1]}")
        self._state, self._server, self._thread = state, server, thread
        self._url = _url(self._host, sock.getsockname()[1])

    def _start_process(self) -> None:
        command = [
            sys.executable,
            "-m",
            "batchain.sandbox",
            "--host",
            self._host,
            "--port",
            str(self._port),
            "--config-json",
            json.dumps(self._initial.to_dict()),
            "--watch-stdin",
        ]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._proc = proc
        assert proc.stdout is not None
        deadline = time.monotonic() + self._startup_timeout
        line = b""
        # selectors, not select.select: a host process with 1024+ open files
        # gets descriptors that select() refuses.
        with selectors.DefaultSelector() as watch:
            watch.register(proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if not watch.select(max(remaining, 0)):
                    self.stop()
                    raise RuntimeError("sandbox subprocess did not become ready in time")
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    code = proc.wait(timeout=5)
                    self._proc = None
                    raise RuntimeError(f"sandbox subprocess exited with code {code} before READY")
                line += chunk
        text = line.decode().strip()
        if not text.startswith(_READY + " "):
            self.stop()
            raise RuntimeError(f"unexpected sandbox output: {text!r}")
        self._url = text.split(" ", 1)[1]
        self._http = httpx.Client(base_url=self._url, timeout=60)

    # -- addresses ------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("sandbox is not running")
        return self._url

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def compat_base_url(self) -> str:
        """An OpenAI-compatible endpoint with chat completions only, no Batch API (as
        Gemini's ``/v1beta/openai/``)."""
        return self.url + COMPAT_PREFIX

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def gemini_base_url(self) -> str:
        """The server root, which google-genai takes as ``HttpOptions(base_url=...)`` (it adds
        ``/v1`` or ``/v1beta`` itself)."""
        return self.url

    @property
    def pid(self) -> int | None:
        """The server subprocess id (process mode), else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def state(self) -> SandboxState:
        """The live state (in-process mode only; mutate it through the loop)."""
        if self._state is None:
            raise RuntimeError("state is only available for a running in-process sandbox")
        return self._state

    # -- control --------------------------------------------------------------------

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's event loop thread (state is loop-owned)."""
        state = self.state
        loop = state.loop
        if loop is None:
            raise RuntimeError("sandbox loop is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=60)

    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        if self._http is None:
            raise RuntimeError("sandbox is not running")
        response = self._http.request(method, "/_sandbox" + path, json=payload)
        if response.status_code >= 400:
            raise ValueError(response.json().get("error", response.text))
        return response.json()

    def ledger(self) -> list[LedgerEntry]:
        if self._process_mode:
            return [LedgerEntry.from_dict(e) for e in self._admin("GET", "/ledger")]

        def read() -> list[LedgerEntry]:
            self.state.advance()
            return self.state.ledger.entries()

        return self._on_loop(read)

    def ledger_summary(self) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
        """``summary[provider][model][tier]`` -> requests / token counters / rate_limited."""
        if self._process_mode:
            result: dict[str, dict[str, dict[str, dict[str, int]]]] = self._admin("GET", "/ledger/summary")
            return result

        def read() -> dict[str, dict[str, dict[str, dict[str, int]]]]:
            self.state.advance()
            return self.state.ledger.summary()

        return self._on_loop(read)

    def duplicates(self) -> dict[str, int]:
        if self._process_mode:
            result: dict[str, int] = self._admin("GET", "/duplicates")
            return result

        def read() -> dict[str, int]:
            self.state.advance()
            return self.state.ledger.duplicates()

        return self._on_loop(read)

    @property
    def config(self) -> SandboxConfig:
        if self._process_mode:
            return SandboxConfig.from_dict(self._admin("GET", "/config"))
        return self.state.config

    def configure(self, **knobs: Any) -> SandboxConfig:
        """Change knobs at runtime (merged into the current config)."""
        if self._process_mode:
            return SandboxConfig.from_dict(self._admin("POST", "/config", knobs))
        return self._on_loop(lambda: self.state.configure(knobs))

    def reset(self) -> None:
        """Clear ledger, batches, files, limiter state and caches (knobs are kept)."""
        if self._process_mode:
            self._admin("POST", "/reset")
        else:
            self._on_loop(self.state.reset)

    def forget_batches(self, *batch_ids: str) -> list[str]:
        """Make the sandbox forget batches (all of them when no id is given), like a provider
        that no longer knows them: retrieving or cancelling one answers 404, and its items
        not yet run never run. The ledger is kept. Returns the ids forgotten."""
        wanted = set(batch_ids) if batch_ids else None
        if self._process_mode:
            result: list[str] = self._admin(
                "POST", "/forget", {"batch_ids": sorted(wanted) if wanted else None}
            )["forgotten"]
            return result
        return self._on_loop(lambda: self.state.forget_batches(wanted))


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()
