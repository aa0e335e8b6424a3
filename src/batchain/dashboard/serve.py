"""Serve the dashboard over a store (a file, a PostgreSQL database) until interrupted."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

from batchain.dashboard.app import create_app
from batchain.store import Store, is_postgres_url, open_store

__all__ = ["serve"]


def _read_only(store: str | Path) -> tuple[Store, Store]:
    """The store, read-only, twice: for the page, and on a connection of its own for the
    cost reports (long reads that must not hold up the page's)."""
    where = store if is_postgres_url(store) else Path(store).expanduser().resolve()
    return open_store(where, read_only=True), open_store(where, read_only=True, own_connection=True)


def serve(
    store: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8800,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard of ``store`` (opened read-only: the page changes nothing) at
    ``host:port`` (port 0: a free one) until Ctrl-C; ``on_ready`` gets its URL."""
    st, reports = _read_only(store)
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog until the server takes them
        bound = sock.getsockname()[1]
        name = f"[{host}]" if ":" in host else host
        # on loopback, only requests addressed to a loopback name are answered: a page
        # elsewhere that rebinds its own name to 127.0.0.1 still sends that name. On another
        # address the user chose to show the jobs to that network, by whatever name it has
        # there (starlette's host check cannot read an IPv6 Host: [::1] goes unchecked)
        hosts = None if host in ("127.0.0.1", "localhost") else ["*"]
        app = create_app(st, report_store=reports, hosts=hosts)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        if on_ready is not None:
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else name
            on_ready(f"http://{shown}:{bound}/")
        server.run(sockets=[sock])
    finally:
        reports.close()
        st.close()
