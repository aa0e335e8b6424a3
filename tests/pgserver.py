"""A PostgreSQL server for the tests: ``$BATCHAIN_TEST_PG`` (an admin URL), or one this
process starts from the machine's PostgreSQL binaries (Debian's ``postgresql`` package,
which ``.ci/run`` installs) in a folder of its own, on a free local port, stopped at exit.

Each test gets a schema of its own on it (:func:`fresh_schema_url`): a store's tables live
in the current schema of its URL's connection.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from functools import cache
from pathlib import Path

__all__ = ["NoServer", "count_in", "drop_schema", "fresh_schema_url", "server_url"]


class NoServer(Exception):
    """No PostgreSQL server can be used here (the reason is the message)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise NoServer("no PostgreSQL server binaries (apt-get install postgresql) and no $BATCHAIN_TEST_PG")


def _as_server_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise NoServer("running as root, and there is no 'postgres' user to run the server as") from None
    return ["runuser", "-u", "postgres", "--"]


def _start() -> str:
    bin_dir = _binaries()
    prefix = _as_server_user()
    home = Path(tempfile.mkdtemp(prefix="batchain-pg-"))
    data = home / "data"
    if prefix:
        shutil.chown(home, "postgres")
    port = _free_port()
    try:
        subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
        )
        # durability is not what these tests are about: no fsync, as in a RAM disk
        options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        subprocess.run(
            [
                *prefix,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(home / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as exc:
        raise NoServer(
            f"the PostgreSQL server could not start: {exc.stderr.decode(errors='replace')[-500:]}"
        ) from None

    def stop() -> None:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(home, ignore_errors=True)

    atexit.register(stop)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


@cache
def server_url() -> str:
    """An admin URL of a running server (started on first use); :class:`NoServer` if none."""
    try:
        import psycopg
    except ImportError:
        raise NoServer("psycopg is not installed (pip install 'batchain[postgresql]')") from None
    url = os.environ.get("BATCHAIN_TEST_PG") or _start()
    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.Error as exc:
        raise NoServer(f"PostgreSQL at {url} cannot be reached: {exc}") from None
    return url


def fresh_schema_url() -> str:
    """A URL whose connections use a new, empty schema of the test server."""
    admin = server_url()  # NoServer first, psycopg missing included
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in admin else "?"
    return f"{admin}{sep}options=-csearch_path%3D{schema}"


def drop_schema(url: str) -> None:
    import psycopg

    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def count_in(store: Path | str, sql: str) -> int:
    """``SELECT COUNT(*) ...`` on a store from outside any batchain process: a SQLite file or
    a PostgreSQL URL; 0 while the store (or its tables) does not exist yet."""
    if isinstance(store, str):
        import psycopg

        try:
            with psycopg.connect(store) as pg:
                row = pg.execute(sql).fetchone()
                return int(row[0]) if row else 0
        except psycopg.errors.UndefinedTable:
            return 0
    import sqlite3

    if not store.exists():
        return 0
    con = sqlite3.connect(store, timeout=30)
    try:
        return int(con.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()
