"""The hand-written peer: the OpenAI Batch API driven with the official ``openai`` SDK only,
one phase per process. Prints one JSON line. No LangChain is imported.

    submit  --base-url U --n N --state S    build the JSONL, upload, create the batches,
                                            save their ids to S: timed
    collect --base-url U --n N --state S --job-id S
                                            retrieve the batches, download their output
                                            files, map each line back to its input: timed
                                            (run only after the sandbox batch has ended)

It sends what the LangChain clients send for the single-stage chain: the same prompt text
(``STAGE_PROMPTS[0]`` formatted with each input, as ``ChatPromptTemplate`` does), one user
message, model gpt-4o-mini, which is ChatOpenAI's body without its ``stream: false``.
Runs with the project's venv.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Final

from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_common import API_KEY, MODEL, STAGE_PROMPTS, Meter, emit, inputs

# the Batch API's limits on one input file
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT: Final = "/v1/chat/completions"
ENDED = {"completed", "failed", "expired", "cancelled"}


def request_line(custom_id: str, prompt: str) -> bytes:
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line).encode() + b"\n"


def jsonl_files(items: list[dict[str, Any]]) -> list[bytes]:
    """Each input as one batch line (custom_id = its index), cut at the per-file limits."""
    files: list[bytes] = []
    lines: list[bytes] = []
    size = 0
    for i, item in enumerate(items):
        line = request_line(str(i), STAGE_PROMPTS[0].format(**item))
        if lines and (len(lines) == MAX_REQUESTS or size + len(line) > MAX_BYTES):
            files.append(b"".join(lines))
            lines, size = [], 0
        lines.append(line)
        size += len(line)
    if lines:
        files.append(b"".join(lines))
    return files


def submit(client: OpenAI, items: list[dict[str, Any]], state: Path) -> list[str]:
    batch_ids = []
    for k, data in enumerate(jsonl_files(items)):
        upload = client.files.create(file=(f"requests-{k}.jsonl", data), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h")
        batch_ids.append(batch.id)
    state.write_text(json.dumps({"n": len(items), "batch_ids": batch_ids}))
    return batch_ids


def collect(client: OpenAI, state: Path, poll_s: float = 0.05) -> tuple[list[str | None], list[str]]:
    """Every input's reply text (None if its request failed) and each batch's final status."""
    saved = json.loads(state.read_text())
    outputs: list[str | None] = [None] * saved["n"]
    statuses: list[str] = []
    for batch_id in saved["batch_ids"]:
        batch = client.batches.retrieve(batch_id)
        while batch.status not in ENDED:
            time.sleep(poll_s)
            batch = client.batches.retrieve(batch_id)
        statuses.append(batch.status)
        if not batch.output_file_id:
            continue  # every request failed (their lines are in batch.error_file_id)
        for line in client.files.content(batch.output_file_id).text.splitlines():
            result = json.loads(line)
            response = result["response"]
            if response and response["status_code"] == 200:
                outputs[int(result["custom_id"])] = response["body"]["choices"][0]["message"]["content"]
    return outputs, statuses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["submit", "collect"])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--job-id")
    args = ap.parse_args()

    # the client is built before timing, as the other clients build their chain (and its
    # ChatOpenAI's client) before theirs
    client = OpenAI(base_url=args.base_url, api_key=API_KEY, max_retries=0)
    if args.phase == "submit":
        items = inputs(args.n)
        meter = Meter()
        with meter:
            batch_ids = submit(client, items, Path(args.state))
        emit({"phase": "submit", "job_id": args.state, "batch_ids": batch_ids, **meter.as_dict()})
    else:
        meter = Meter()
        with meter:
            outputs, statuses = collect(client, Path(args.job_id or args.state))
        emit(
            {
                "phase": "collect",
                "ok": sum(isinstance(o, str) and bool(o) for o in outputs),
                "n_outputs": len(outputs),
                "status": statuses,
                "sample": outputs[:1],
                **meter.as_dict(),
            }
        )


if __name__ == "__main__":
    main()
