"""`WindowCount`: a counter value that also carries the milliseconds until its key is gone."""

from __future__ import annotations

__all__ = ["WindowCount", "window_count"]


class WindowCount(int):
    """A counter value that also carries the milliseconds until its key is gone.

    Backends return it from `increment_with_ttl` when they learn the TTL in the same step,
    so `FixedWindow` can answer an exact wait without a second call. `ttl_ms` counts to the
    first millisecond at which the key no longer exists (a fresh window), like `ttl()`.
    """

    ttl_ms: float | None

    def __new__(cls, value: int, ttl_ms: float | None) -> WindowCount:
        self = int.__new__(cls, value)
        self.ttl_ms = ttl_ms
        return self


def window_count(value: int, ttl_ms: float | None) -> WindowCount:
    """`WindowCount(value, ttl_ms)` without the Python-level `__new__` (for hot paths)."""
    count = int.__new__(WindowCount, value)
    count.ttl_ms = ttl_ms
    return count
