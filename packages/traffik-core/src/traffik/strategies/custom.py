"""traffik 1.2's `traffik.strategies.custom`: the strategies beyond the core ones (`GCRA`, for now)."""

from __future__ import annotations

from traffik.strategies.gcra import GCRA, GCRAStrategy

__all__ = ["GCRA", "GCRAStrategy"]
