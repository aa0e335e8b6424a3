"""batchain in batch mode, one phase per process. Prints one JSON line.

    submit  --base-url U --n N --store S    batchain.submit(chain, inputs): timed
    collect --base-url U --n N --store S --job-id J
                                            Job.open(J).wait() + job.outputs(): timed
                                            (run only after the sandbox batch has ended)
    cost    --base-url U --n N --store S --mode realtime|batch
                                            the 3-stage chain with batchain.run, untimed

Runs with the project's venv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_chains import Meter, emit, inputs, single_stage, three_stage

POLL = {"poll_min": 0.05, "poll_max": 0.5}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["submit", "collect", "cost"])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--job-id")
    ap.add_argument("--mode", choices=["realtime", "batch"], default="batch")
    args = ap.parse_args()

    # everything the timed sections use is imported here, before them, as the langasync
    # client does (batchain.__init__ loads its modules on first use)
    from batchain import Job, run, submit

    if args.phase == "submit":
        chain, items = single_stage(args.base_url), inputs(args.n)
        meter = Meter()
        with meter:
            job = submit(chain, items, store=args.store, **POLL)
        emit(
            {
                "phase": "submit",
                "job_id": job.id,
                "status": job.status.value,
                "n_items": job.record.n_items,
                "inputs_complete": job.record.inputs_complete,
                "stats": job.stats,
                **meter.as_dict(),
            }
        )
    elif args.phase == "collect":
        chain = single_stage(args.base_url)
        meter = Meter()
        with meter:
            job = Job.open(args.job_id, store=args.store, chain=chain)
            job.wait()
            outputs = job.outputs()
        ok = sum(isinstance(o, str) and bool(o) for o in outputs)
        emit(
            {
                "phase": "collect",
                "ok": ok,
                "n_outputs": len(outputs),
                "status": job.status.value,
                "counts": job.counts,
                "stats": job.stats,
                "sample": outputs[:1],
                **meter.as_dict(),
            }
        )
    else:
        chain, items = three_stage(args.base_url), inputs(args.n)
        meter = Meter()
        with meter:
            job = run(chain, items, mode=args.mode, store=args.store, progress=False, **POLL)
            outputs = job.outputs()
        ok = sum(isinstance(o, str) and bool(o) for o in outputs)
        emit(
            {
                "phase": "cost",
                "mode": args.mode,
                "ok": ok,
                "distinct": len(set(outputs)),
                "counts": job.counts,
                "stats": job.stats,
                "sample": outputs[:1],
                **meter.as_dict(),
            }
        )


if __name__ == "__main__":
    main()
