"""batchain: run LangChain chains over large datasets, realtime or through provider Batch APIs."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
