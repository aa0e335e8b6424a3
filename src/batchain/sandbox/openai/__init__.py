"""The OpenAI side of the sandbox: its wire formats and endpoints.

Everything here is OpenAI-shaped (request validation, response and error bodies,
SSE chunks, Files, the Batch object and its JSONL result files); the behaviour it
renders (calls, billing, limits, batch processing) lives in the neutral core one
level up.  Modules: :mod:`.api` (routes), :mod:`.chat`, :mod:`.stream`,
:mod:`.files`, :mod:`.batches`.
"""
