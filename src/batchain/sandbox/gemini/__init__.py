"""The Gemini (Google Developer API) side of the sandbox: its wire formats and endpoints.

Everything here is Gemini-shaped (``GenerateContentRequest`` parsing, responses,
``google.rpc.Status`` errors, SSE chunks, batch Operations, resumable file uploads);
the behaviour it renders (calls, billing, limits, batch processing) lives in the
neutral core one level up.  Modules: :mod:`.api` (routes), :mod:`.request`,
:mod:`.schema`, :mod:`.generate`, :mod:`.stream`, :mod:`.batches`, :mod:`.files`.
"""
