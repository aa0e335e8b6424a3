"""Child process of the crash tests: run or resume one job until done (or killed)."""

import sys

import batchain

store, job_id, n, action = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ref = sys.argv[5]
inputs = ({"n": i} for i in range(n))
if action == "start":
    batchain.run(ref, inputs, store=store, job_id=job_id, max_concurrency=40, progress=False)
else:
    batchain.Job.open(job_id, store=store).resume(inputs, progress=False)
