"""Memcached keys: the namespace and its generation in front, and any text made into a valid key.

Memcached keys are at most 250 bytes with no whitespace or control characters. A key
made only of printable ASCII (no space, no `#`) that fits is used as it is, so keys stay
readable in `memcached-tool` and logs. Anything else (spaces, newlines, `\\r\\n` protocol
injection attempts, non-ASCII text, long keys) becomes a readable prefix with the unsafe
characters replaced by `_`, then `#` and the SHA-256 of the whole text. Readable keys never
contain `#`, so a hashed key cannot equal a readable one, and distinct texts get distinct
hashes (short of a SHA-256 collision).
"""

from __future__ import annotations

import hashlib

__all__ = ["MAX_KEY_BYTES", "KeySpace", "safe_key"]

MAX_KEY_BYTES = 250
_READABLE_PREFIX = 150
_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"#"}


def safe_key(text: str) -> bytes:
    """`text` as a valid memcached key (see the module docstring)."""
    if (
        len(text) <= MAX_KEY_BYTES
        and text.isascii()
        and text.isprintable()
        and " " not in text
        and "#" not in text
    ):
        return text.encode("ascii")
    readable = "".join(c if c in _SAFE else "_" for c in text[:_READABLE_PREFIX])
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{readable}#{digest}".encode("ascii")


class KeySpace:
    """Maps a backend's keys into memcached keys of one namespace generation.

    `ns:<key>` (a key from `get_key`) becomes `ns:<generation>:<key>`; any other key `k`
    becomes `ns:<generation>~k`. The generation is a run of digits ended by `:` or `~`, so
    different keys or generations never give the same text. The generation counter itself
    lives in `ns:__gen__`.
    """

    __slots__ = ("_prefix", "generation_key", "namespace")

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._prefix = namespace + ":"
        self.generation_key = safe_key(f"{namespace}:__gen__")

    def key(self, key: str, generation: int) -> bytes:
        prefix = self._prefix
        if key.startswith(prefix):
            return safe_key(f"{prefix}{generation}:{key[len(prefix) :]}")
        return safe_key(f"{prefix}{generation}~{key}")
