"""A local server speaking the OpenAI, Anthropic and Gemini HTTP APIs, realtime and batch.

The official ``openai`` / ``anthropic`` / ``google-genai`` SDKs and LangChain's
``ChatOpenAI`` / ``ChatAnthropic`` / ``ChatGoogleGenerativeAI`` work against it
unmodified via their base URL (``HttpOptions(base_url=sb.gemini_base_url)``;
``ChatGoogleGenerativeAI(base_url=sb.gemini_base_url)``).  It answers
deterministically, keeps a billing ledger, enforces rate limits with real 429s and
headers, and injects faults on request::

    from batchain.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(latency_ms=50, rpm=1200)) as sb:     # or process=True
        client = OpenAI(base_url=sb.openai_base_url, api_key="sk-test")
        claude = Anthropic(base_url=sb.anthropic_base_url, api_key="sk-test")
        ...
        sb.ledger()            # [LedgerEntry, ...]  one per billed (successful) request
        sb.ledger_summary()    # summary[provider][model][tier] -> counters (+ rate_limited)
        sb.duplicates()        # {request_hash: count} billed more than once
        sb.configure(error_rate=0.1)
        sb.forget_batches()    # it no longer knows its batches (404), ledger kept
        sb.reset()

Served endpoints:

* OpenAI: ``POST /v1/chat/completions`` (JSON or SSE), Files (upload, list, retrieve,
  content, delete), Batches (create, list, retrieve, cancel) for
  ``/v1/chat/completions``; flex processing (``service_tier: "flex"``, see
  :mod:`~batchain.sandbox.flex`).
* Anthropic: ``POST /v1/messages`` (JSON or SSE), Message Batches (create, list,
  retrieve, cancel, delete, results).
* Gemini (``v1`` and ``v1beta``): ``models/{model}:generateContent`` and
  ``:streamGenerateContent`` (SSE), ``:batchGenerateContent`` (inline or file input;
  batches get, list, cancel, delete), Files (resumable upload, get, list, delete,
  download of batch results).
* Admin (no auth): ``/_sandbox/health``, ``/_sandbox/ledger``,
  ``/_sandbox/ledger/summary``, ``/_sandbox/duplicates``, ``/_sandbox/config``
  (GET, POST merges), ``/_sandbox/reset``, ``/_sandbox/forget``.

Where the rules live: knobs and per-request ``x-sandbox-*`` headers in
:mod:`~batchain.sandbox.config`; token counting in :mod:`~batchain.sandbox.tokenizer`;
replies in :mod:`~batchain.sandbox.responder`; ``[[fail:N]]`` / ``[[latency:MS]]`` /
``[[flaky:N]]`` prompt directives in :mod:`~batchain.sandbox.directives`; billing and
the request hash in :mod:`~batchain.sandbox.ledger`; rate limiting in
:mod:`~batchain.sandbox.limits`; batch states in :mod:`~batchain.sandbox.lifecycle`;
batch processing in :mod:`~batchain.sandbox.batches`.  Each provider's wire formats
and endpoints are in the :mod:`~batchain.sandbox.openai`,
:mod:`~batchain.sandbox.anthropic` and :mod:`~batchain.sandbox.gemini` subpackages;
everything else is provider-neutral.

Auth: any non-empty key is accepted (OpenAI ``Authorization: Bearer``; Anthropic
``x-api-key`` or ``Authorization: Bearer``); keys starting with ``invalid`` get a 401
(Gemini, ``x-goog-api-key`` or ``?key=``: Google's 400 ``API_KEY_INVALID``, and 403
``PERMISSION_DENIED`` without a key).
"""

from __future__ import annotations

from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.ledger import Ledger, LedgerEntry
from batchain.sandbox.server import Sandbox, serve

__all__ = ["Ledger", "LedgerEntry", "Sandbox", "SandboxConfig", "serve"]
