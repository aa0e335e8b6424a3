"""Shared fixtures: a sandbox provider over real HTTP and a fresh store per test."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never talk to real providers and never see real keys.
for _var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
    os.environ.pop(_var, None)
os.environ.setdefault("BATCHAIN_STORE", "/nonexistent-use-the-store-fixture")

# A test run started in the background of a non-interactive shell (`cmd &`) inherits SIGINT
# ignored, and so would every child process that the Ctrl-C tests interrupt: they would run
# to the end instead of pausing. A handler here is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TEST_KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store's URL: an empty schema of the test server of its own. Skips, with
    the reason, where no server can be started (under CI, fails instead)."""
    from tests.pgserver import NoServer, drop_schema, fresh_schema_url

    try:
        url = fresh_schema_url()
    except NoServer as exc:
        if os.environ.get("BATCHAIN_CI"):
            pytest.fail(f"CI must test the PostgreSQL store: {exc}")
        pytest.skip(str(exc))
    yield url
    drop_schema(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's store lives, once per backend: a SQLite file, a PostgreSQL schema."""
    if request.param == "sqlite":
        return tmp_path / "store.sqlite"
    url: str = request.getfixturevalue("pg_url")
    return url
