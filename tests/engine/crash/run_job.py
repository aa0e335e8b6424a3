"""Child process of the crash tests: run or resume one job until done (or killed)."""

import os
import sys
import time

import batchain

store, job_id, n, action, ref = sys.argv[1:6]
mode = sys.argv[6] if len(sys.argv) > 6 else "realtime"
inputs = ({"n": i} for i in range(int(n)))
if action == "start":
    batchain.run(
        ref,
        inputs,
        store=store,
        job_id=job_id,
        max_concurrency=int(os.environ.get("CRASH_MAX_CONCURRENCY") or 40),
        progress=False,
        mode=mode,
        poll_min=0.05,
        poll_max=0.2,
    )
elif action == "cancel":
    batchain.Job.open(job_id, store=store).cancel()
else:
    start_at = float(os.environ.get("CHAOS_START_AT") or 0)  # racers start at one instant
    while time.time() < start_at:
        time.sleep(0.0005)
    batchain.Job.open(job_id, store=store).resume(inputs, progress=False)
