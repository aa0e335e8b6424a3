"""Shared fixtures: a sandbox provider over real HTTP and a fresh store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never talk to real providers and never see real keys.
for _var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
    os.environ.pop(_var, None)
os.environ.setdefault("BATCHAIN_STORE", "/nonexistent-use-the-store-fixture")

TEST_KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"
