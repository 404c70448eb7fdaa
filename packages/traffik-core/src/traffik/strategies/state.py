"""Strategy state as text: a list of floats written as comma-separated `repr`s.

Backends that store strings (Memcached, third-party backends) keep state this way; it is
readable in a debugger and exact, since `repr(float)` round-trips. Anything that does not
decode to finite numbers counts as no state, so a corrupt value starts a fresh key.
"""

from __future__ import annotations

import math
from typing import Union

__all__ = ["decode_state", "encode_state"]

_Raw = Union[str, bytes, None]


def encode_state(state: list[float]) -> str:
    return ",".join(map(repr, state))


def decode_state(raw: _Raw) -> list[float] | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    try:
        values = [float(part) for part in raw.split(",")] if raw else []
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    return values
