"""Named crash points for the crash tests.

``BATCHAIN_FAILPOINT=<name>`` makes the process SIGKILL itself when it reaches that point,
so tests can kill it exactly between two steps (say, after a provider batch was created but
before its id was recorded). Unset, a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["failpoint"]


def failpoint(name: str, detail: str = "") -> None:
    """Die here if ``BATCHAIN_FAILPOINT`` is ``name`` or ``name:detail``."""
    wanted = os.environ.get("BATCHAIN_FAILPOINT")
    if wanted and (wanted == name or wanted == f"{name}:{detail}"):
        os.kill(os.getpid(), signal.SIGKILL)
