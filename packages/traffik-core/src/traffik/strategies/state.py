"""Strategy state as text: a list of whole numbers, comma-separated.

Backends that store strings (Memcached, third-party backends) keep state this way; it is
readable in a debugger and exact. Anything that does not decode to whole numbers counts as no
state, so a corrupt value (or one written by another version) starts a fresh key.
"""

from __future__ import annotations

from typing import Union

__all__ = ["decode_state", "encode_state"]

_Raw = Union[str, bytes, None]


def encode_state(state: list[int]) -> str:
    return ",".join(map(str, state))


def decode_state(raw: _Raw) -> list[int] | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    try:
        return [int(part) for part in raw.split(",")] if raw else []
    except (TypeError, ValueError):
        return None
