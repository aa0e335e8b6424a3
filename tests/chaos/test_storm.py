"""Random SIGKILLs and SIGSTOPs longer than the lease, each followed by two racing
resumers, against a three-stage two-provider chain (issue 12's acceptance storm). More
trials, and the figures in docs/reliability.md: ``python bench/reliability.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchain.sandbox import Sandbox
from tests.chaos.storm import run_storm

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize(("mode", "seed"), [("realtime", 1), ("batch", 2)])
def test_a_storm_of_kills_and_stalls_with_racing_resumers(
    sandbox: Sandbox, tmp_path: Path, mode: str, seed: int
) -> None:
    storm = run_storm(
        sandbox, tmp_path, mode=mode, items=300 if mode == "realtime" else 120, disruptions=3, seed=seed
    )
    assert storm.ok, storm.as_dict()
    assert storm.kills + storm.stalls >= 1, storm.as_dict()
