"""The engine: runs a job's items, admits their model calls (replayed, shared, parked or
sent), flushes rounds of parked calls as provider batches, and drives the realtime lanes.

Nothing here is public API; :mod:`batchain` re-exports what users need."""
