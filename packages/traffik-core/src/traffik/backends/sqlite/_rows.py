"""`Rows`: the one table of entries, read and written inside a transaction, capped and swept in small batches.

An entry is `(key, value, expires_at)`: text, and the first millisecond (`now_ms`) at which
the entry is gone, or NULL for never. A row whose time has come is treated as absent and
reused in place; rows nobody reuses are deleted by the sweep. `traffik_meta` keeps the row
count (kept by triggers, so every statement keeps it right), which the cap reads.
"""

from __future__ import annotations

import sqlite3
from typing import Optional

from traffik.exceptions import BackendCapacityError
from traffik.strategies.fixed_window import too_late

__all__ = ["SWEEP_CHUNK", "Row", "Rows", "live", "number", "prefix_range"]

SWEEP_CHUNK = 256
"""Rows one sweep step looks at: a step costs tens of microseconds inside a write."""

_SELECT = "SELECT value, expires_at FROM traffik_entries WHERE key = ?"
_UPDATE = "UPDATE traffik_entries SET value = ?, expires_at = ? WHERE key = ?"
_INSERT = "INSERT INTO traffik_entries (key, value, expires_at) VALUES (?, ?, ?)"
_DELETE = "DELETE FROM traffik_entries WHERE key = ?"
_COUNT = "SELECT value FROM traffik_meta WHERE name = 'rows'"
_CHUNK = (
    "SELECT max(key), count(*) FROM "
    "(SELECT key FROM traffik_entries WHERE key > ? ORDER BY key LIMIT ?)"
)
_SWEEP = "DELETE FROM traffik_entries WHERE key > ? AND key <= ? AND expires_at <= ?"
_SCAN = (
    "SELECT key FROM traffik_entries WHERE key >= ? AND key < ? "
    "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?"
)
_CLEAR = (
    "DELETE FROM traffik_entries WHERE key IN "
    "(SELECT key FROM traffik_entries WHERE key >= ? AND key < ? LIMIT ?)"
)

Row = Optional[tuple[str, Optional[int]]]
"""`(value, expires_at)` as stored (perhaps expired), or None when there is no row."""


def prefix_range(prefix: str) -> tuple[str, str]:
    """Bounds `[low, high)` of the keys that start with `prefix` (not empty): a namespace's
    (`app:` ends before `app;`, so `app:v2`'s escaped `app%3Av2:` is outside), or a bucket's."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def number(value: str) -> int:
    """A counter's value; text that is not a whole number counts as 0."""
    try:
        return int(value)
    except ValueError:
        return 0


def live(row: Row, now: int) -> str | None:
    """The row's value while it lives, else None."""
    if row is None or (row[1] is not None and row[1] <= now):
        return None
    return row[0]


class Rows:
    """Operations on `traffik_entries` for one backend in one process; every method runs
    inside a transaction its caller holds. At most `max_keys` rows are held: a new key
    beyond that is refused with `BackendCapacityError` while existing ones keep counting.
    A sweep pass over the whole table starts every `sweep_ms` and advances one chunk per
    new row written (and per new row refused at the cap), so no write pays for more than one
    chunk."""

    def __init__(self, max_keys: int, sweep_ms: int, owner: str) -> None:
        self.max_keys = max_keys
        self.sweep_ms = sweep_ms
        self.owner = owner
        self._swept_to: str | None = None
        self._next_sweep = 0

    # -- primitives, for the steps below and `_decisions` --------------------------------

    @staticmethod
    def read(cursor: sqlite3.Cursor, key: str) -> Row:
        row: Row = cursor.execute(_SELECT, (key,)).fetchone()
        return row

    def write(
        self,
        cursor: sqlite3.Cursor,
        key: str,
        value: str,
        expires_at: int | None,
        exists: bool,
        now: int,
    ) -> None:
        """Store `value` under `key`; `exists` says whether a row (live or not) is there."""
        if exists:
            cursor.execute(_UPDATE, (value, expires_at, key))
            return
        full = cursor.execute(_COUNT).fetchone()[0] >= self.max_keys
        if full or self._swept_to is not None or self._sweep_due(now):
            self.sweep_step(cursor, now)
            full = full and cursor.execute(_COUNT).fetchone()[0] >= self.max_keys
        if full:
            raise BackendCapacityError(
                f"{self.owner} holds max_keys={self.max_keys} rows and none of the {SWEEP_CHUNK} "
                f"it just swept had expired; refusing new key {key!r} (every new key sweeps "
                "further). Raise max_keys, shorten rate periods, or spread clients over files"
            )
        cursor.execute(_INSERT, (key, value, expires_at))

    def add(
        self, cursor: sqlite3.Cursor, key: str, amount: int, ttl_ms: int | None, now: int
    ) -> tuple[int, int | None]:
        """Add to a counter; a counter created here (or having no expiry, or one that would
        outlive `ttl_ms` by more than `AHEAD_MS`: `fixed_window.too_late`) lives `ttl_ms`.
        Returns the count and its expiry."""
        row = Rows.read(cursor, key)
        value = live(row, now)
        expires_at = None if ttl_ms is None else now + ttl_ms
        if value is None:
            count = amount
        else:
            count = number(value) + amount
            held = None if row is None else row[1]
            if held is not None and (ttl_ms is None or not too_late(held - now, ttl_ms)):
                expires_at = held
        self.write(cursor, key, str(count), expires_at, row is not None, now)
        return count, expires_at

    def _sweep_due(self, now: int) -> bool:
        """Whether a pass should start: `sweep_ms` went by since the last, or the clock was
        set back since (the pass then starts at once rather than after the jump back)."""
        return not 0 < self._next_sweep - now <= self.sweep_ms

    def sweep_step(self, cursor: sqlite3.Cursor, now: int) -> None:
        """Delete the expired rows among the next `SWEEP_CHUNK` keys of the pass (any namespace)."""
        after = self._swept_to or ""
        last, seen = cursor.execute(_CHUNK, (after, SWEEP_CHUNK)).fetchone()
        if seen:
            cursor.execute(_SWEEP, (after, last, now))
        if seen < SWEEP_CHUNK:
            self._swept_to, self._next_sweep = None, now + self.sweep_ms
        else:
            self._swept_to = last

    @staticmethod
    def clear_batch(cursor: sqlite3.Cursor, low: str, high: str, size: int) -> int:
        """Delete up to `size` rows with keys in `[low, high)`; how many went."""
        return cursor.execute(_CLEAR, (low, high, size)).rowcount

    # -- the storage steps: `(cursor, now, ...)`, `now` read once the transaction began ----

    def get(self, cursor: sqlite3.Cursor, now: int, key: str) -> str | None:
        return live(Rows.read(cursor, key), now)

    def get_many(self, cursor: sqlite3.Cursor, now: int, keys: list[str]) -> list[str | None]:
        return [live(Rows.read(cursor, key), now) for key in keys]

    def scan(
        self, cursor: sqlite3.Cursor, now: int, low: str, high: str, limit: int | None
    ) -> list[str]:
        """The live keys in `[low, high)`, in order, at most `limit` of them."""
        found = cursor.execute(_SCAN, (low, high, now, -1 if limit is None else limit))
        return [key for (key,) in found.fetchall()]

    def ttl(self, cursor: sqlite3.Cursor, now: int, key: str) -> int | None:
        """Milliseconds until `key` is gone; None when missing or immortal."""
        row = Rows.read(cursor, key)
        if row is None or row[1] is None or live(row, now) is None:
            return None
        return row[1] - now

    def set_many(
        self, cursor: sqlite3.Cursor, now: int, items: dict[str, str], ttl_ms: int | None
    ) -> None:
        expires_at = None if ttl_ms is None else now + ttl_ms
        for key, value in items.items():
            self.write(cursor, key, value, expires_at, Rows.read(cursor, key) is not None, now)

    def delete_live(self, cursor: sqlite3.Cursor, now: int, key: str) -> bool:
        """Delete `key`'s row; True when it was live."""
        row = Rows.read(cursor, key)
        if row is None:
            return False
        cursor.execute(_DELETE, (key,))
        return live(row, now) is not None

    def count(
        self, cursor: sqlite3.Cursor, now: int, key: str, amount: int, ttl_ms: int | None
    ) -> tuple[int, int | None]:
        """`add`, answering the count and the milliseconds until the counter is gone."""
        count, expires_at = self.add(cursor, key, amount, ttl_ms, now)
        return count, None if expires_at is None else expires_at - now

    def expire(self, cursor: sqlite3.Cursor, now: int, key: str, ttl_ms: int) -> bool:
        value = live(Rows.read(cursor, key), now)
        if value is None:
            return False
        self.write(cursor, key, value, now + ttl_ms, True, now)
        return True

    def take(self, cursor: sqlite3.Cursor, now: int, key: str, token: str, ttl_ms: int) -> bool:
        """Hold the lock `key` with `token` for `ttl_ms`, unless someone holds it."""
        row = Rows.read(cursor, key)
        if live(row, now) is not None:
            return False
        self.write(cursor, key, token, now + ttl_ms, row is not None, now)
        return True

    def drop(self, cursor: sqlite3.Cursor, now: int, key: str, token: str) -> bool:
        """Release the lock `key` if `token` still holds it."""
        if live(Rows.read(cursor, key), now) != token:
            return False
        cursor.execute(_DELETE, (key,))
        return True
