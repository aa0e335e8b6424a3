"""The dashboard as a user sees it: served by ``batchain dashboard`` over a store holding jobs
in every state, loaded in a real headless Chromium; asserted from the DOM the page's scripts
built and from screenshots."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import batchain
from batchain.sandbox import Sandbox, SandboxConfig
from batchain.store import SQLiteStore
from tests.dashboard.browser import CHROMIUM, Element, Page, render
from tests.dashboard.conftest import HOSTILE, LEAKED_KEY, Dashboard, Jobs, chain_for, start_dashboard

Image = pytest.importorskip("PIL.Image", reason="Pillow (a dev dependency) reads the screenshots")

if CHROMIUM is None and os.environ.get("BATCHAIN_CI"):  # CI installs it: its absence is a failure
    raise RuntimeError("no Chromium on this machine: .ci/run should have installed Debian's chromium package")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs Debian's chromium package)"
)


def _cells(row: Element) -> list[str]:
    return [td.text.strip() for td in row.find_all("td")]


def _store_counts(jobs: Jobs) -> dict[str, tuple[str, dict[str, int]]]:
    with SQLiteStore(jobs.path, read_only=True) as st:
        out = {}
        for rec in st.list_jobs(None):
            raw = st.item_counts(rec.id)
            out[rec.id] = (rec.status.value, raw)
        return out


def test_the_jobs_page_shows_every_job_with_its_state_counts_cost_and_finish(
    jobs: Jobs, dashboard: Dashboard
) -> None:
    page = Page(render(dashboard.url))
    rows = {r.attrs["data-job"]: r for r in page.root.find_all("tr", cls="job")}
    stored = _store_counts(jobs)
    assert set(rows) == set(stored) and len(stored) == 7
    for job_id, (status, raw) in stored.items():
        cells = _cells(rows[job_id])
        assert cells[0] == job_id and cells[1] == status
        assert cells[4] == f"{raw.get('failed', 0):,}" and cells[5] == f"{raw.get('pending', 0):,}"
        total = sum(raw.values())
        assert cells[3] == f"{total - raw.get('pending', 0):,} / {total:,} done"
    # the batch job: paid against its budget, and what batch pricing saved
    batch = _cells(rows[jobs.ids["completed batch"]])
    assert batch[2] == "batch" and batch[6].startswith("$") and batch[6].endswith(" of $1.00")
    assert batch[7].startswith("$") and batch[7] != "$0"
    assert _cells(rows[jobs.ids["completed realtime"]])[7] == "$0"
    # finished jobs say when; the running job, when it should end (from its pace)
    assert _cells(rows[jobs.ids["completed batch"]])[9].startswith("20")
    assert _cells(rows[jobs.ids["running"]])[9].startswith("ETA 20")
    totals = page.root.by_id("totals").text
    assert "7" in totals and "completed" in totals and "running" in totals


def test_a_job_page_draws_its_progress_batches_costs_and_results(jobs: Jobs, dashboard: Dashboard) -> None:
    job_id = jobs.ids["completed batch"]
    page = Page(render(f"{dashboard.url}#/job/{job_id}", size=(1400, 1800)))
    assert page.root.by_id("job-id").text == job_id
    assert page.root.by_id("job-status").text == "completed"
    assert page.root.by_id("view-job").attrs.get("hidden") is None
    cards = {
        c.attrs["data-card"]: c.find_all("div", cls="value")[0].text
        for c in page.root.find_all("div", cls="card")
    }
    assert cards["items done"] == "30 / 30" and cards["failed"] == "0" and cards["pending"] == "0"
    assert cards["cost"].startswith("$") and cards["cost"].endswith(" of $1.00")
    # plotly drew each chart: an SVG with the traces' lines
    for chart in ("chart-items", "chart-calls", "chart-cost"):
        node = page.root.by_id(chart)
        assert node.find_all("svg", cls="main-svg"), chart
        assert node.find_all("path", cls="js-line"), chart
    with SQLiteStore(jobs.path, read_only=True) as st:
        batches = st.job_batches(job_id)
    rows = page.root.by_id("batches").find_all("tr")
    assert len(rows) == len(batches) >= 1
    assert {r.attrs["data-batch"] for r in rows} == {b.id for b in batches}
    assert all(_cells(r)[3] == "collected" for r in rows)
    (line,) = page.root.by_id("lines").find_all("tr")
    cells = _cells(line)
    assert cells[:4] == ["openai", "gpt-4o-mini", "batch", "30"]
    assert page.root.by_id("no-errors").attrs.get("hidden") is None
    assert page.root.by_id("dl-csv").attrs["href"] == f"/api/jobs/{job_id}/results.csv"


def test_a_job_page_lists_its_commonest_errors_with_example_items(jobs: Jobs, dashboard: Dashboard) -> None:
    page = Page(render(f"{dashboard.url}#/job/{jobs.ids['completed realtime']}"))
    (row,) = page.root.by_id("errors").find_all("tr")
    count, message, examples = _cells(row)
    assert count == "3" and examples == "#20, #21, #22"
    # the hostile input named in the message is shown as text, as written
    assert "missing variables" in message and "<img src=x" in message


def test_no_stored_string_becomes_html_or_script(jobs: Jobs, dashboard: Dashboard) -> None:
    for url in (
        dashboard.url,
        f"{dashboard.url}#/job/{jobs.ids['paused']}",
        f"{dashboard.url}#/job/{jobs.ids['completed realtime']}",
    ):
        page = Page(render(url))
        assert not page.root.find_all("img")
        scripts = [s.attrs.get("src") for s in page.root.find_all("script")]
        assert scripts == ["/static/plotly.min.js", "/static/dashboard.js"]
        (title,) = page.root.find_all("title")
        assert "pwned" not in title.text
    paused = Page(render(f"{dashboard.url}#/job/{jobs.ids['paused']}"))
    assert paused.root.by_id("job-note").text == "stopped: " + HOSTILE
    assert HOSTILE in paused.root.by_id("job-sub").text


def test_the_page_never_shows_a_key(jobs: Jobs, dashboard: Dashboard) -> None:
    dom = render(f"{dashboard.url}#/job/{jobs.ids['running']}")
    page = Page(dom)
    (row,) = page.root.by_id("errors").find_all("tr")
    assert "***" in _cells(row)[1]
    assert LEAKED_KEY not in dom and LEAKED_KEY[:20] not in dom
    for path in ("/api/jobs", f"/api/jobs/{jobs.ids['running']}"):
        assert LEAKED_KEY[:20].encode() not in dashboard.get(path)[1]


def _near(pixel: tuple[int, ...], color: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel[:3], color, strict=True))


def _count(image: Any, color: tuple[int, int, int], box: tuple[int, int, int, int] | None = None) -> int:
    part = image.convert("RGB").crop(box) if box else image.convert("RGB")
    return sum(n for n, px in part.getcolors(1 << 24) or [] if _near(px, color))


def test_screenshots_show_the_jobs_and_a_drawn_chart(
    jobs: Jobs, dashboard: Dashboard, tmp_path: Path
) -> None:
    listing = tmp_path / "jobs.png"
    render(dashboard.url, screenshot=listing, size=(1400, 900))
    image = Image.open(listing)
    assert image.size == (1400, 900)
    green, blue = (0x1A, 0x7F, 0x37), (0x09, 0x69, 0xDA)
    assert _count(image, green) > 2000  # progress bars and "completed" badges
    assert _count(image, blue) > 200  # the "running" badge and the job links
    job_page = tmp_path / "job.png"
    render(f"{dashboard.url}#/job/{jobs.ids['running']}", screenshot=job_page, size=(1400, 1400))
    image = Image.open(job_page)
    # the cost chart's purple line and the budget's dashed red one, below the cards
    purple = (0x82, 0x50, 0xDF)
    assert _count(image, purple, (0, 250, 1400, 1400)) > 150
    blank = Image.new("RGB", (1400, 1150), (255, 255, 255))
    assert _count(blank, purple) == 0


def test_an_unknown_job_says_so(dashboard: Dashboard) -> None:
    page = Page(render(f"{dashboard.url}#/job/job-nope"))
    assert page.root.by_id("view-missing").attrs.get("hidden") is None
    assert "no job 'job-nope'" in page.root.by_id("missing-text").text


def test_the_page_follows_a_job_while_it_runs(tmp_path: Path) -> None:
    """A real run writes the store while the dashboard reads it: the page shows it running,
    then done, its chart drawn from the samples the run recorded."""
    store = tmp_path / "live.sqlite"
    # answers slow enough (60 calls, 2 at a time, 0.5 s each: 15 s) that the job still runs
    # while the browser loads the page, whatever the machine's load; then fast to the end
    with Sandbox(SandboxConfig(latency_ms=500)) as sb:
        chain = chain_for(sb)
        batchain.run(chain, [{"text": "first"}], store=store, progress=False, job_id="job-first")
        dash = start_dashboard(store)
        runner = threading.Thread(
            target=batchain.run,
            args=(chain, [{"text": f"live {i}"} for i in range(60)]),
            kwargs={"store": store, "progress": False, "max_concurrency": 2, "job_id": "job-live"},
        )
        try:
            runner.start()
            deadline = time.monotonic() + 30
            while dash.json("/api/jobs")["jobs"][0]["id"] != "job-live" and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # a few answers in
            page = Page(render(dash.url))
            cells = _cells(page.root.find_all("tr", data_job="job-live")[0])
            assert cells[1] == "running" and 0 < int(cells[5]) < 60  # pending
            sb.configure(latency_ms=0)
            runner.join(timeout=60)
            page = Page(render(f"{dash.url}#/job/job-live"))
            assert page.root.by_id("job-status").text == "completed"
            assert page.root.by_id("chart-items").find_all("path", cls="js-line")
            assert len(dash.json("/api/jobs/job-live")["history"]) >= 3  # a sample every 2 s, and the last
            assert len(sb.ledger()) == 1 + 60 and not sb.duplicates()
        finally:
            runner.join(timeout=60)
            dash.process.terminate()
            dash.process.wait(timeout=10)
