"""Does the dashboard stay responsive on a large store? (issue 18)

    python bench/bench_dashboard.py                  # 1,000 jobs; a job of 1,000,000 items; 3 runs
    python bench/bench_dashboard.py --big 200000 --jobs 200 --reps 2

Three stores, each served by ``batchain dashboard`` in its own process, as a user starts it:

* floor: one job of 100 items (the page's own cost);
* many: 1,000 finished jobs of 100 items each (100,000 paid calls);
* big: one running batch-mode job of 1,000,000 items, every item answered by a paid call in
  20 provider batches, with a day of recorded progress.

Measured per store (medians of ``--reps`` runs): the JSON the page polls every 2 s (the jobs
list, and the big job's own page), by request latency at the first request and in steady
state; how long until every cost figure is computed (the cost reports walk each job's calls,
off the request path); the time Chromium takes from start to the page drawn (including
plotly.js), and the dashboard's peak RSS. Ratios are against the floor store, in the same run.
The stores are written through the store's own methods, as runs write them (no engine run:
building a million-item job that way takes minutes and measures the engine, not the page).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from harness import fmt, median, save, show

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from batchain.states import ItemStatus, JobStatus, LinkSource  # noqa: E402
from batchain.store import SQLiteStore  # noqa: E402
from batchain.store.records import JobRecord, ProgressSample, Usage  # noqa: E402

CHUNK = 50_000
COST = Decimal("0.0000123")
RESPONSE = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "tech"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 41, "completion_tokens": 1, "total_tokens": 42},
    }
)


def _job(st: SQLiteStore, job_id: str, n: int, status: JobStatus, created: float, batches: int) -> None:
    """A batch-mode job of ``n`` items, each answered by one paid call, in ``batches``
    provider batches; finished if ``status`` is, else with its last batch at the provider."""
    st.create_job(
        JobRecord(
            job_id, status, "batch", created, created + 3600, "chain.py:chain", {"budget": 50.0}, n, True
        )
    )
    per = -(-n // batches)
    for b in range(batches):
        lo, hi = b * per, min(n, (b + 1) * per)
        for start in range(lo, hi, CHUNK):
            end = min(hi, start + CHUNK)
            st.add_items(job_id, [(i, json.dumps({"text": f"headline {i}"})) for i in range(start, end)])
        uid = f"{job_id}-b{b}"
        keys = [f"{job_id}-{i:08d}" for i in range(lo, hi)]
        begin = [(k, "openai", "gpt-4o-mini", "/v1/chat/completions", "") for k in keys]
        st.batch_intent(uid, job_id, "openai", "openai:gpt-4o-mini", keys, {"round": 1}, begin)
        st.batch_submitted(uid, f"batch_{uid}")
        last = b == batches - 1 and status != JobStatus.COMPLETED
        seen = (hi - lo) // 2 if last else hi - lo
        st.batch_seen(uid, "in_progress" if last else "completed", seen, hi - lo)
        if last:
            continue
        usage = Usage(41, 1, requests=1)
        st.calls_succeeded([(k, RESPONSE, usage, "batch", COST) for k in keys])
        st.link_calls([(job_id, k, lo + j, LinkSource.PAID.value) for j, k in enumerate(keys)])
        st.batch_ended(uid)
        st.batch_collected(uid)
        done = [(i, ItemStatus.SUCCEEDED, json.dumps("tech"), None) for i in range(lo, hi)]
        for start in range(0, len(done), CHUNK):
            st.finish_items(job_id, done[start : start + CHUNK])
        st.commit()


def _history(st: SQLiteStore, job_id: str, n: int, created: float, samples: int) -> None:
    for k in range(samples):
        done = n * k // samples
        st.record_progress(job_id, ProgressSample(created + 60 * k, done, 0, n, done, COST * done))
    st.commit()


def build(path: Path, kind: str, big: int, jobs: int) -> str:
    """Write the store; returns the id of the job whose page is measured."""
    now = time.time()
    with SQLiteStore(path) as st:
        if kind == "floor":
            _job(st, "job-floor", 100, JobStatus.COMPLETED, now - 3600, 1)
            _history(st, "job-floor", 100, now - 3600, 10)
            return "job-floor"
        if kind == "many":
            for j in range(jobs):
                job_id = f"job-many-{j:05d}"
                _job(st, job_id, 100, JobStatus.COMPLETED, now - 86400 + j, 1)
                _history(st, job_id, 100, now - 86400 + j, 10)
            return f"job-many-{jobs - 1:05d}"
        _job(st, "job-big", big, JobStatus.RUNNING, now - 86400, 20)
        _history(st, "job-big", big, now - 86400, 1440)
        return "job-big"


def _get(url: str) -> tuple[float, Any]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - started, json.loads(body)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _chromium_s(url: str, drawn: str) -> float:
    """Seconds for Chromium to start, load ``url`` and draw it (``drawn`` is in the DOM then)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return float("nan")
    with tempfile.TemporaryDirectory() as profile:
        started = time.perf_counter()
        out = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=1500",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        took = time.perf_counter() - started
    if drawn not in out.stdout:
        raise RuntimeError(f"the page did not draw: {out.stderr[-1000:]}")
    return took


def measure(path: Path, job_id: str, requests: int) -> dict[str, Any]:
    script = Path(sys.executable).with_name("batchain")
    proc = subprocess.Popen(
        [str(script), "dashboard", "--store", str(path), "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        found = re.search(r"at (http://\S+/)", proc.stderr.readline())
        assert found, "the dashboard did not start"
        url = found.group(1)
        started = time.perf_counter()
        first_list, data = _get(url + "api/jobs")
        first_job, _ = _get(f"{url}api/jobs/{job_id}")
        lists, pages = [], []
        while True:  # poll as the page does, until every cost figure is there
            took, data = _get(url + "api/jobs")
            lists.append(took)
            took, page = _get(f"{url}api/jobs/{job_id}")
            pages.append(took)
            if all(j["cost_state"] != "computing" for j in data["jobs"]) and page["report"] is not None:
                break
            time.sleep(0.2)
        costs_s = time.perf_counter() - started
        for _ in range(requests):  # steady state
            lists.append(_get(url + "api/jobs")[0])
            pages.append(_get(f"{url}api/jobs/{job_id}")[0])
        browser = {
            "list": median([_chromium_s(url, f'data-job="{job_id}"') for _ in range(2)]),
            "job": median([_chromium_s(f"{url}#/job/{job_id}", "main-svg") for _ in range(2)]),
        }
        steady_l, steady_p = lists[-requests:], pages[-requests:]
        return {
            "jobs": len(data["jobs"]),
            "first_list_ms": 1000 * first_list,
            "first_job_ms": 1000 * first_job,
            "list_ms": 1000 * median(steady_l),
            "list_max_ms": 1000 * max(lists),
            "job_ms": 1000 * median(steady_p),
            "job_max_ms": 1000 * max(pages),
            "costs_ready_s": costs_s,
            "browser_list_s": browser["list"],
            "browser_job_s": browser["job"],
            "rss_mb": _rss_mb(proc.pid),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", type=int, default=1_000_000, help="items of the big job")
    ap.add_argument("--jobs", type=int, default=1000, help="jobs of the many-jobs store")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20, help="steady-state requests per run")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        stores: dict[str, tuple[Path, str, float]] = {}
        for kind in ("floor", "many", "big"):
            path = work / f"{kind}.sqlite"
            t0 = time.perf_counter()
            job_id = build(path, kind, args.big, args.jobs)
            size = path.stat().st_size / 1e6
            stores[kind] = (path, job_id, size)
            print(f"{kind}: built in {time.perf_counter() - t0:.0f} s, {size:.0f} MB", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in stores}
        for rep in range(args.reps):
            for kind in stores if rep % 2 == 0 else reversed(list(stores)):
                path, job_id, _ = stores[kind]
                r = measure(path, job_id, args.requests)
                runs[kind].append(r)
                print(kind, {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: {f: median([r[f] for r in rs]) for f in rs[0]} for k, rs in runs.items()}
    floor = med["floor"]
    labels = {
        "floor": "1 job of 100 items",
        "many": f"{args.jobs:,} jobs of 100 items",
        "big": f"1 running job of {args.big:,} items",
    }
    rows = []
    for kind, m in med.items():
        rows.append(
            [
                labels[kind],
                fmt(stores[kind][2], 0),
                f"{fmt(m['list_ms'], 1)} ({fmt(m['list_ms'] / floor['list_ms'], 1)}x)",
                f"{fmt(m['job_ms'], 1)} ({fmt(m['job_ms'] / floor['job_ms'], 1)}x)",
                fmt(max(m["list_max_ms"], m["job_max_ms"]), 0),
                fmt(m["costs_ready_s"], 1),
                f"{fmt(m['browser_list_s'], 2)} ({fmt(m['browser_list_s'] / floor['browser_list_s'], 2)}x)",
                f"{fmt(m['browser_job_s'], 2)} ({fmt(m['browser_job_s'] / floor['browser_job_s'], 2)}x)",
                fmt(m["rss_mb"], 0),
            ]
        )
    tables = [
        {
            "title": f"The dashboard on large stores (medians of {args.reps} runs; ratios against "
            "the floor store)",
            "columns": [
                "store",
                "store MB",
                "jobs list JSON ms",
                "job page JSON ms",
                "slowest request ms",
                "all costs shown after s",
                "Chromium: jobs page drawn s",
                "Chromium: job page drawn s",
                "dashboard peak RSS MB",
            ],
            "rows": rows,
        }
    ]
    notes = [
        "JSON ms: median request latency in steady state, as the page polls every 2 s; the slowest "
        "request includes the first ones, while the cost reports are being computed.",
        "Costs are computed by a background thread (a running job's again at most every "
        "max(5 s, 20 x its last cost)), so no request waits for them; until then the page says so.",
        "Chromium: wall time of a headless Chromium from start to the page drawn (its own start, "
        "about 1 s, and plotly.js included).",
    ]
    cmd = f"python bench/bench_dashboard.py --big {args.big} --jobs {args.jobs} --reps {args.reps}"
    path = save("dashboard", "The dashboard on large stores (issue 18)", cmd, tables, notes, raw=runs)
    show(tables, path)


if __name__ == "__main__":
    main()
