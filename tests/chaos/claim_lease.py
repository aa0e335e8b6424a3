"""Child of the lease race: wait for the start instant, claim the lease, hold it a while."""

import sys
import time

from batchain.store import open_store
from batchain.store.base import lease_owner

store, job_id, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open_store(store) as st:
    while time.time() < start:
        time.sleep(0.001)
    claim = st.acquire_lease(job_id, lease_owner(), 30.0)
    print("won" if claim.epoch is not None else "busy", flush=True)
    time.sleep(1.0)  # alive while the others try: a dead holder's lease is taken over
