"""Issue 12's storm, many times: random SIGKILLs and SIGSTOPs longer than the lease, each
followed by two racing resumers, against a three-stage two-provider chain in realtime and
batch mode. Writes bench/results/reliability.json and the figures table in
docs/reliability.md (between its ``storm`` markers).

python bench/reliability.py [--trials 5] [--disruptions 4]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos.storm import Storm, run_storm  # noqa: E402

from batchain.sandbox import Sandbox, SandboxConfig  # noqa: E402

RESULT = ROOT / "bench" / "results" / "reliability.json"
DOC = ROOT / "docs" / "reliability.md"
ITEMS = {"realtime": 600, "batch": 200}
COLUMNS = [
    "mode",
    "runs",
    "kills",
    "stalls",
    "runners",
    "busy",
    "lease lost",
    "items",
    "items with one result",
    "billed",
    "billed twice",
    "on the wire at disruptions",
    "failed runs",
]


def _row(mode: str, storms: list[Storm]) -> list[Any]:
    def total(name: str) -> int:
        return sum(int(getattr(s, name)) for s in storms)

    return [
        mode,
        len(storms),
        total("kills"),
        total("stalls"),
        total("runners"),
        total("busy"),
        total("lease_lost"),
        total("items"),
        total("items_done"),
        total("billed"),
        total("billed_twice"),
        total("in_flight") if mode == "realtime" else "-",
        sum(not s.ok for s in storms),
    ]


def _markdown(rows: list[list[Any]], command: str, date: str) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return f"`{command}` ({date}):\n\n" + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--trials", type=int, default=5, help="storms per mode")
    parser.add_argument("--disruptions", type=int, default=4, help="kills or stalls per storm")
    args = parser.parse_args()
    command = f"python bench/reliability.py --trials {args.trials} --disruptions {args.disruptions}"
    storms: dict[str, list[Storm]] = {"realtime": [], "batch": []}
    with Sandbox(SandboxConfig()) as sb, tempfile.TemporaryDirectory() as tmp:
        for trial in range(args.trials):
            for mode in storms:
                storm = run_storm(
                    sb, Path(tmp), mode=mode, items=ITEMS[mode], disruptions=args.disruptions, seed=trial
                )
                storms[mode].append(storm)
                print(json.dumps({k: v for k, v in storm.as_dict().items() if k != "exits"}), flush=True)
    rows = [_row(mode, runs) for mode, runs in storms.items()]
    date = datetime.date.today().isoformat()
    RESULT.write_text(
        json.dumps(
            {
                "name": "reliability",
                "title": "Reliability storm (issue 12): random kills and stalls, two racing resumers each",
                "command": command,
                "date": date,
                "machine": {"python": platform.python_version()},
                "tables": [{"title": "Totals per mode", "columns": COLUMNS, "rows": rows}],
                "storms": {mode: [s.as_dict() for s in runs] for mode, runs in storms.items()},
            },
            indent=1,
        )
        + "\n"
    )
    text = DOC.read_text()
    block = f"<!-- storm:begin -->\n{_markdown(rows, command, date)}<!-- storm:end -->"
    DOC.write_text(re.sub(r"<!-- storm:begin -->.*?<!-- storm:end -->", block, text, flags=re.S))
    print("wrote", RESULT, "and", DOC)
    return 1 if any(not s.ok for runs in storms.values() for s in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
