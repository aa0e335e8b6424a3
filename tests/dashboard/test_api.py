"""The dashboard's HTTP side: its JSON, downloads, refusals and headers, over the real CLI's
server; and what it reads of a store (never writing to it)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import batchain
from batchain.dashboard import DashboardUnavailable, plotly_js
from batchain.dashboard.views import _MAX_POINTS, _points
from batchain.store.records import ProgressSample
from tests.dashboard.conftest import Dashboard, Jobs, start_dashboard


def test_results_download_as_jsonl_and_csv_row_for_row(jobs: Jobs, dashboard: Dashboard) -> None:
    job_id = jobs.ids["completed realtime"]
    results = list(batchain.Job.open(job_id, store=jobs.path).iter_results())
    status, body, headers = dashboard.get(f"/api/jobs/{job_id}/results.jsonl")
    assert status == 200 and headers["content-disposition"] == f'attachment; filename="{job_id}.jsonl"'
    rows = [json.loads(line) for line in body.decode().splitlines()]
    assert [r["index"] for r in rows] == [r.index for r in results] and len(rows) == 23
    assert [r["output"] for r in rows] == [r.output for r in results]
    assert [r["status"] for r in rows].count("failed") == 3
    status, body, _ = dashboard.get(f"/api/jobs/{job_id}/results.csv")
    table = list(csv.DictReader(io.StringIO(body.decode())))
    assert status == 200 and [int(r["index"]) for r in table] == [r.index for r in results]
    assert dashboard.get(f"/api/jobs/{job_id}/results.xml")[0] == 404
    assert dashboard.get("/api/jobs/job-nope/results.csv")[0] == 404


def test_api_reports_counts_eta_and_history(jobs: Jobs, dashboard: Dashboard) -> None:
    data = dashboard.json(f"/api/jobs/{jobs.ids['running']}")
    job = data["job"]
    assert job["counts"] == {"pending": 57, "succeeded": 40, "failed": 3, "cancelled": 0, "total": 100}
    # the pace of the last ten minutes' samples (about 43 items in 600 s): the 57 left
    # take about 800 s more
    recent = [p for p in data["history"] if p[0] > data["now"] - 600]
    pace = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
    assert len(recent) >= 10 and 0.06 < pace < 0.08
    assert job["eta"] == pytest.approx(recent[-1][0] + 57 / pace, abs=5)
    assert len(data["history"]) == 11 and data["history"][-1][1:5] == [43, 3, 100, 40]
    assert job["budget"] == 2.5 and job["finished_at"] is None
    done = dashboard.json(f"/api/jobs/{jobs.ids['completed batch']}")
    assert done["job"]["eta"] is None and done["job"]["finished_at"] is not None
    assert done["report"]["calls"] == {"paid": 30}
    assert dashboard.get("/api/jobs/job-nope")[0] == 404
    assert dashboard.get("/api/jobs?limit=x")[0] == 400


def test_refuses_other_hosts_and_says_what_the_page_may_load(dashboard: Dashboard) -> None:
    # a page elsewhere that rebinds its name to 127.0.0.1 still sends its own Host
    assert dashboard.get("/api/jobs", host="attacker.example")[0] == 400
    for path in ("/", "/api/jobs"):
        status, _, headers = dashboard.get(path)
        assert status == 200
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    status, body, headers = dashboard.get("/static/plotly.min.js")
    assert status == 200 and body == plotly_js().read_bytes() and "max-age" in headers["cache-control"]
    assert dashboard.get("/static/../app.py")[0] == 404
    assert dashboard.url.startswith("http://127.0.0.1:")  # loopback unless told otherwise


def test_the_dashboard_never_writes_to_the_store(jobs: Jobs) -> None:
    before = hashlib.sha256(jobs.path.read_bytes()).hexdigest()
    dash = start_dashboard(jobs.path)
    try:
        for job_id in jobs.ids.values():
            dash.json(f"/api/jobs/{job_id}")
        dash.json("/api/jobs")
    finally:
        dash.process.terminate()
        dash.process.wait(timeout=10)
    assert hashlib.sha256(jobs.path.read_bytes()).hexdigest() == before


def test_without_plotly_it_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "plotly" else real(name, *a)
    )
    with pytest.raises(DashboardUnavailable, match=r"pip install 'batchain\[dashboard\]'"):
        plotly_js()


def test_a_missing_store_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "batchain.cli", "dashboard", "--store", str(tmp_path / "none.sqlite")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no job store at" in done.stderr


def test_a_long_history_is_thinned_for_the_charts_keeping_its_last_sample() -> None:
    samples = [ProgressSample(float(t), t, 0, 5000, t, None) for t in range(4321)]
    points = _points(samples)
    assert len(points) <= _MAX_POINTS + 1 and points[0][0] == 0.0 and points[-1][0] == 4320.0
    assert [p[0] for p in points] == sorted(p[0] for p in points)
