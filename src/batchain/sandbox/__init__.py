"""A local server speaking the OpenAI and Anthropic HTTP APIs, realtime and batch.

The official ``openai`` / ``anthropic`` SDKs and LangChain's ``ChatOpenAI`` /
``ChatAnthropic`` work against it unmodified via ``base_url``.  It answers
deterministically, keeps a billing ledger, enforces rate limits with real 429s and
headers, and injects faults on request.  See :class:`SandboxConfig` for the knobs.

    from batchain.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(latency_ms=50, rpm=1200)) as sb:
        client = OpenAI(base_url=sb.openai_base_url, api_key="sk-test")
        ...
        sb.ledger_summary()
"""

from __future__ import annotations

from batchain.sandbox.config import SandboxConfig
from batchain.sandbox.ledger import Ledger, LedgerEntry
from batchain.sandbox.server import Sandbox, serve

__all__ = ["Ledger", "LedgerEntry", "Sandbox", "SandboxConfig", "serve"]
