"""Benchmark the batchain sandbox provider.

Measures, with the sandbox in its own process (``Sandbox(process=True)``) and this
process as the client:

* realtime throughput at zero latency: the official ``AsyncOpenAI`` client, a fixed
  concurrency, several thousand ``/v1/chat/completions`` requests; median of 3 runs;
* a 50,000-request OpenAI batch: upload + validate + process + download;
* a 50,000-request Anthropic message batch: create + process + download results.

Writes ``bench/results/sandbox.json`` and prints a short table.

    python bench/bench_sandbox.py            # full run
    python bench/bench_sandbox.py --quick    # a short smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import openai

from batchain.sandbox import Sandbox, SandboxConfig

RESULTS = Path(__file__).parent / "results" / "sandbox.json"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
HEADLINE = (
    "Classify the headline into one of: tech, business, entertainment, sports, other. "
    "Answer with the label only.\n\nHeadline: {}"
)


async def _realtime_run(base_url: str, requests: int, concurrency: int) -> dict[str, Any]:
    """One load run with the official AsyncOpenAI client; wall-clock stamps included."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    counter = iter(range(requests))
    latencies: list[float] = []

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await client.chat.completions.create(
                model=OPENAI_MODEL,
                messages=[{"role": "user", "content": HEADLINE.format(f"Item {i} ships today")}],
            )
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the pool
    counter = iter(range(requests))
    latencies.clear()
    cpu0, wall0 = time.process_time(), time.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall1, cpu1 = time.time(), time.process_time()
    await client.close()
    latencies.sort()
    return {
        "requests": requests,
        "start": wall0,
        "end": wall1,
        "client_cpu_s": cpu1 - cpu0,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
    }


def _client_worker(base_url: str, requests: int, concurrency: int) -> None:
    """A load-generating process: one JSON result line per ``go`` line on stdin."""
    for line in sys.stdin:
        if line.strip() != "go":
            break
        result = asyncio.run(_realtime_run(base_url, requests, concurrency))
        print(json.dumps(result), flush=True)


def _server_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_realtime(sb: Sandbox, requests: int, concurrency: int, runs: int, clients: int) -> dict[str, Any]:
    """Median of ``runs`` runs; ``clients`` client processes share the concurrency."""
    per_client = requests // clients
    command = [
        sys.executable,
        __file__,
        "--client-worker",
        sb.openai_base_url,
        str(per_client),
        str(max(1, concurrency // clients)),
    ]
    workers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(clients)
    ]
    results: list[dict[str, Any]] = []
    try:
        for _ in range(runs):
            sb.reset()
            cpu0 = _server_cpu(sb.pid)
            for proc in workers:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            parts = [json.loads(proc.stdout.readline()) for proc in workers if proc.stdout]
            server_cpu = _server_cpu(sb.pid) - cpu0
            total = per_client * clients
            elapsed = max(p["end"] for p in parts) - min(p["start"] for p in parts)
            billed = len(sb.ledger())
            # the warm-up requests are billed too
            assert billed >= total, f"ledger has {billed} entries, expected >= {total}"
            results.append(
                {
                    "requests": total,
                    "seconds": round(elapsed, 3),
                    "rps": round(total / elapsed, 1),
                    "p50_ms": round(statistics.median(p["p50_ms"] for p in parts), 2),
                    "p99_ms": round(max(p["p99_ms"] for p in parts), 2),
                    "client_cpu_ms_per_request": round(
                        sum(p["client_cpu_s"] for p in parts) / total * 1000, 3
                    ),
                    "server_cpu_ms_per_request": round(server_cpu / billed * 1000, 3),
                }
            )
    finally:
        for proc in workers:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=30)
    server_ms = statistics.median(r["server_cpu_ms_per_request"] for r in results)
    return {
        "concurrency": concurrency,
        "client_processes": clients,
        "runs": results,
        "median_rps": statistics.median(r["rps"] for r in results),
        "server_cpu_ms_per_request": server_ms,
        # what one server core could sustain if the clients were free
        "server_capacity_rps_per_core": round(1000 / server_ms) if server_ms else None,
    }


def _wait(check: Any, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("batch did not finish")
        time.sleep(0.05)


def bench_openai_batch(sb: Sandbox, count: int) -> dict[str, Any]:
    lines = [
        json.dumps(
            {
                "custom_id": f"item-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": OPENAI_MODEL,
                    "messages": [{"role": "user", "content": HEADLINE.format(f"Story {i}")}],
                },
            }
        )
        for i in range(count)
    ]
    data = ("\n".join(lines) + "\n").encode()
    client = openai.OpenAI(base_url=sb.openai_base_url, api_key="sk-bench", timeout=600)
    t0 = time.perf_counter()
    file_id = client.files.create(file=("bench.jsonl", io.BytesIO(data)), purpose="batch").id
    t_upload = time.perf_counter()
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    state: dict[str, Any] = {}

    def done() -> bool:
        state["batch"] = client.batches.retrieve(batch.id)
        return state["batch"].status in ("completed", "failed", "expired", "cancelled")

    _wait(done)
    t_done = time.perf_counter()
    final = state["batch"]
    output = client.files.content(final.output_file_id).read()
    t_download = time.perf_counter()
    client.close()
    assert final.status == "completed", final.status
    assert output.count(b"\n") == count
    return {
        "requests": count,
        "file_mb": round(len(data) / 1e6, 2),
        "upload_s": round(t_upload - t0, 3),
        "create_to_completed_s": round(t_done - t_upload, 3),
        "download_s": round(t_download - t_done, 3),
        "total_s": round(t_download - t0, 3),
    }


def bench_anthropic_batch(sb: Sandbox, count: int) -> dict[str, Any]:
    requests = [
        {
            "custom_id": f"item-{i}",
            "params": {
                "model": ANTHROPIC_MODEL,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": HEADLINE.format(f"Story {i}")}],
            },
        }
        for i in range(count)
    ]
    client = anthropic.Anthropic(base_url=sb.anthropic_base_url, api_key="sk-bench", timeout=600)
    t0 = time.perf_counter()
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    t_create = time.perf_counter()
    _wait(lambda: client.messages.batches.retrieve(batch.id).processing_status == "ended")
    t_done = time.perf_counter()
    results = sum(1 for _ in client.messages.batches.results(batch.id))
    t_download = time.perf_counter()
    client.close()
    assert results == count
    return {
        "requests": count,
        "create_s": round(t_create - t0, 3),
        "create_to_ended_s": round(t_done - t_create, 3),
        "results_s": round(t_download - t_done, 3),
        "total_s": round(t_download - t0, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--concurrency", type=int, default=64, help="total, over all clients")
    parser.add_argument(
        "--clients",
        type=int,
        default=2,
        help="client processes (the SDK costs ~1.3 ms CPU per request, more than the server)",
    )
    parser.add_argument("--client-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_worker:
        url, count, concurrency = args.client_worker
        _client_worker(url, int(count), int(concurrency))
        return
    requests = 1000 if args.quick else 6000
    runs = 1 if args.quick else 3
    batch_size = 5000 if args.quick else 50_000
    config = SandboxConfig(batch_validating_s=0.0, batch_processing_s=0.5, batch_finalizing_s=0.0)
    with Sandbox(config, process=True) as sb:
        realtime = bench_realtime(sb, requests, args.concurrency, runs, args.clients)
        sb.reset()
        openai_batch = bench_openai_batch(sb, batch_size)
        sb.reset()
        anthropic_batch = bench_anthropic_batch(sb, batch_size)
    result = {
        "benchmark": "sandbox",
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "median_rps": realtime["median_rps"],
        "realtime": realtime,
        "openai_batch": openai_batch,
        "anthropic_batch": anthropic_batch,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'metric':<42} {'value':>12}")
    print("-" * 55)
    label = f"realtime median req/s (c={args.concurrency}, {args.clients} clients)"
    print(f"{label:<42} {realtime['median_rps']:>12}")
    for run in realtime["runs"]:
        row = f"{run['rps']} {run['p50_ms']} {run['p99_ms']}"
        print(f"{'  run: req/s, p50 ms, p99 ms':<42} {row:>12}")
    print(f"{'server CPU ms per request':<42} {realtime['server_cpu_ms_per_request']:>12}")
    print(f"{'server capacity req/s per core':<42} {realtime['server_capacity_rps_per_core']:>12}")
    print(f"{'openai batch ' + str(batch_size) + ': upload s':<42} {openai_batch['upload_s']:>12}")
    print(f"{'openai batch: create -> completed s':<42} {openai_batch['create_to_completed_s']:>12}")
    print(f"{'openai batch: total s (incl. download)':<42} {openai_batch['total_s']:>12}")
    print(f"{'anthropic batch ' + str(batch_size) + ': create s':<42} {anthropic_batch['create_s']:>12}")
    print(f"{'anthropic batch: create -> ended s':<42} {anthropic_batch['create_to_ended_s']:>12}")
    print(f"{'anthropic batch: total s (incl. results)':<42} {anthropic_batch['total_s']:>12}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
