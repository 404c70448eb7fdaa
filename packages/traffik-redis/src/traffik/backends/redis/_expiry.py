"""Key lifetimes in Redis's milliseconds: the `PX` that ends a key on time, and the time left from a `PTTL`."""

from __future__ import annotations

# Redis deletes a key once its clock has passed the key's expiry (`now > expires_at`), so a
# key whose PTTL is `p` still exists `p` ms from now and is gone one millisecond later. The
# two helpers below account for it here, as `save_state` and `increment_with_ttl` do in the
# scripts; `test_ttl.py` checks all of them against the server's clock.


def _px(seconds: float) -> int:
    """PX for a key that must be gone `seconds` from now: whole ms (nearest) minus the
    millisecond of expiry, and at least 1 (the shortest life Redis gives: gone 2 ms later)."""
    return max(round(seconds * 1000) - 1, 1)


def _gone_in(pttl: int) -> int | None:
    """Milliseconds until a key is gone, from its PTTL; None when missing (-2) or immortal (-1)."""
    return None if pttl < 0 else pttl + 1
