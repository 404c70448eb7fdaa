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

__all__ = [
    "CACHED_KEYS",
    "MAX_KEY_BYTES",
    "GenerationKeys",
    "KeySpace",
    "readable_prefix",
    "safe_key",
]

MAX_KEY_BYTES = 250
CACHED_KEYS = 16384
"""How many recent key mappings a `GenerationKeys` remembers (it starts over when full): as
many as a throttle remembers keys (`traffik.throttle_keys.KEY_CACHE_SIZE`), so the clients a
throttle knows are not mapped again on each hit."""
_READABLE_PREFIX = 150
_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"#"}


def readable_prefix(text: str) -> str:
    """The readable part in front of `#` of a hashed key made from a text starting with `text`."""
    return "".join(c if c in _SAFE else "_" for c in text[:_READABLE_PREFIX])


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
    readable = readable_prefix(text)
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

    def of(self, generation: int) -> GenerationKeys:
        """The keys of one generation, computed faster and cached (`GenerationKeys`)."""
        return GenerationKeys(self, generation)


def _readable(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text and "#" not in text


class GenerationKeys:
    """`keys(key)` is `space.key(key, generation)`, byte for byte, for one generation.

    It remembers the last `CACHED_KEYS` mappings, and computes a miss from the parts: the
    `ns:<generation>:` head is checked and encoded once, so a readable key costs a few
    string scans and one encode; anything else goes through `safe_key` as before.
    """

    __slots__ = ("_cache", "_heads", "_prefix", "_space", "generation")

    def __init__(self, space: KeySpace, generation: int) -> None:
        self._space = space
        self.generation = generation
        self._prefix = space._prefix
        self._cache: dict[str, bytes] = {}
        heads = []
        for separator in (":", "~"):
            head = f"{self._prefix}{generation}{separator}"
            # a head that is not readable itself makes every key hashed: no shortcut then
            heads.append((head.encode("ascii"), len(head)) if _readable(head) else None)
        self._heads = tuple(heads)

    def __call__(self, key: str) -> bytes:
        mkey = self._cache.get(key)
        if mkey is None:
            mkey = self._map(key)
            cache = self._cache
            if len(cache) >= CACHED_KEYS:
                cache.clear()
            cache[key] = mkey
        return mkey

    def _map(self, key: str) -> bytes:
        prefix = self._prefix
        if key.startswith(prefix):
            rest, head = key[len(prefix) :], self._heads[0]
        else:
            rest, head = key, self._heads[1]
        if head is not None and head[1] + len(rest) <= MAX_KEY_BYTES and _readable(rest):
            return head[0] + rest.encode("ascii")
        return self._space.key(key, self.generation)
