"""How full the in-memory store may get, and what it does when it is full.

A store is full at `max_keys` keys or, when given, `max_bytes` (keys and states, as sized when
each key is written). Expired keys always go first. Then, by policy:

- `"evict"` (the default): make room by evicting, among 16 keys drawn at random, the one
  that would expire soonest. The price is that an evicted client's state starts over, and
  the key chosen is the one closest to starting over anyway (a window about to close, a
  bucket nearly full again). A flood of new clients mostly evicts its own one-hit keys.
  A key whose client was refused is never evicted until its state is whole again (the
  store notes when, on the refusal): evicting it would give a throttled client a fresh
  budget. When none of up to 64 keys drawn can go, the new key is refused
  (`BackendCapacityError`), as under `"refuse"`.
- `"refuse"`: refuse the new key with `BackendCapacityError` (the throttle's `on_error`
  answers: 429 by default) while every existing key keeps counting. Nobody's state is ever
  reset, but during a flood of new identities every new client is refused.

Neither logs a line per request: the first event is logged, then one line per 10 s with a count.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Collection
from typing import Any, Optional

from traffik.exceptions import BackendCapacityError, ConfigurationError
from traffik.logs import QuietLog

__all__ = ["POLICIES", "Capacity", "entry_size"]

POLICIES = ("evict", "refuse")
_SAMPLE = 16
_DRAWS = 4 * _SAMPLE
"""Keys drawn at most for one eviction (the kept ones, of throttled clients, are skipped)."""
_ENTRY_OVERHEAD = 120
"""Bytes a key's entry costs beyond its key and state (the dict slot, the entry list, ints)."""

_log = QuietLog(logging.getLogger("traffik"))
_serials = itertools.count()
"""One per store, for its log lines' kind: a freed store's `id()` goes to the next one made."""


def entry_size(key: str, value: Any) -> int:
    """The bytes a key and its value are counted as (an estimate, fixed when written)."""
    size = _ENTRY_OVERHEAD + len(key)
    if isinstance(value, list):
        return size + 32 * len(value)
    return size + len(str(value))


class Capacity:
    """The limits of one store and its policy at the cap (module docstring)."""

    __slots__ = ("_sample", "_serial", "max_bytes", "max_keys", "policy")

    def __init__(self, max_keys: int, max_bytes: Optional[int], policy: str) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(
                f"InMemoryBackend(max_keys={max_keys!r}): must be a whole number >= 1"
            )
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1024
        ):
            raise ConfigurationError(
                f"InMemoryBackend(max_bytes={max_bytes!r}): must be None or a whole number of "
                "bytes >= 1024"
            )
        if policy not in POLICIES:
            raise ConfigurationError(
                f"InMemoryBackend(at_capacity={policy!r}): use 'evict' (serve new clients, "
                "evicting the key nearest to expiry) or 'refuse' (keep every key, refuse new ones)"
            )
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.policy = policy
        self._sample: list[str] = []
        self._serial = next(_serials)

    def full(self, keys: int, used: int, adding: int) -> bool:
        return keys >= self.max_keys or (
            self.max_bytes is not None and used + adding > self.max_bytes
        )

    def make_room(
        self,
        store: Any,
        key: str,
        size: int,
        now: int,
        count: int = 1,
        keep: Collection[str] = (),
    ) -> None:
        """Room for `key` (`size` bytes) in `store` (an `InMemoryBackend`), by policy; or for
        `count` new keys of `size` bytes in all, `key` the first, all at once: one decision's
        keys are all written or none is. The keys in `keep` (the decision's own) are never
        evicted."""
        data = store._data
        if not 0 < store._full_sweep_at - now <= 1000:  # (due, or the clock was set back)
            store._full_sweep_at = now + 1000
            store._sweep(now, list(data))
        while self.full(len(data) + count - 1, store._bytes, size):
            victim = None if self.policy == "refuse" or not data else self._victim(data, now, keep)
            if victim is None:
                kept = (
                    "" if self.policy == "refuse" else " (every key drawn is a throttled client's)"
                )
                _log.log(
                    logging.WARNING,
                    (self._serial, "refuse"),
                    "%r is full (%d keys, ~%d bytes)%s; refusing new keys",
                    store,
                    len(data),
                    store._bytes,
                    kept,
                )
                raise BackendCapacityError(
                    f"{store!r} is full ({len(data)} keys, max_keys={self.max_keys}, "
                    f"max_bytes={self.max_bytes}){kept}; refusing new key {key!r}. Raise the "
                    "limits, shorten rate periods, use at_capacity='evict', or use a shared backend"
                )
            store._remove(victim)
            _log.log(
                logging.WARNING,
                (self._serial, "evict"),
                "%r is full (%d keys, ~%d bytes); evicting the keys nearest to expiry",
                store,
                len(data),
                store._bytes,
            )

    def _victim(
        self, data: dict[str, list[Any]], now: int, keep: Collection[str] = ()
    ) -> Optional[str]:
        """Of `_SAMPLE` evictable keys drawn at random (at most `_DRAWS` drawn), the one that
        expires soonest; None when every key drawn is kept (a throttled client's, or one of
        `keep`)."""
        best, best_at, drawn, draws = None, math.inf, 0, 0
        sample = self._sample
        while drawn < _SAMPLE and draws < _DRAWS:
            if not sample:
                sample = self._sample = list(data)
            index = random.randrange(len(sample))
            candidate = sample[index]
            sample[index] = sample[-1]
            sample.pop()
            entry = data.get(candidate)
            if entry is None:
                continue  # gone since the sample was taken
            draws += 1
            if entry[3] > now or candidate in keep:
                continue  # a throttled client's (kept until its state is whole again), or ours
            drawn += 1
            expires = entry[1] if entry[1] is not None else math.inf
            if best is None or expires < best_at:
                best, best_at = candidate, expires
        return best
