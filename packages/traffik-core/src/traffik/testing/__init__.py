"""Testing helpers for applications that use Traffik; needs nothing beyond traffik-core."""

from __future__ import annotations

from traffik.clock import ManualClock

__all__ = ["ManualClock"]
