"""The Anthropic side of the sandbox: its wire formats and endpoints.

Everything here is Anthropic-shaped (Messages validation, response and error
bodies, SSE events, the Message Batch object and its results JSONL); the behaviour
it renders (calls, billing, limits, batch processing) lives in the neutral core one
level up.  Modules: :mod:`.api` (routes), :mod:`.messages`, :mod:`.stream`,
:mod:`.batches`.
"""
