"""Logging that does not flood: one line per kind of event per interval, with a count.

During an outage every decision fails the same way; logging each one would write thousands of
identical lines a second. `QuietLog.log(kind, ...)` writes the first event of a kind, then
counts the others for `interval` seconds and writes the next one with how many it left out
since the line before, and how long ago that line was.

What an event is (its kind) and who met it (its `source`) are apart: a store that fails fails
every throttle on it, so its failures are one kind (the store, the error type), and a line
written after some were left out says from how many sources (throttles) they came. An
object in a kind (a store) is keyed by `object_key`, never by its `id`: an object collected
and a new one given its address would share the kind, and the new one's first events would
be left out.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Hashable
from typing import Any, Callable

__all__ = ["QuietLog", "object_key"]

_KINDS = 1024
"""Kinds remembered at once; past that the oldest are forgotten (and may log again)."""
_SOURCES = 1024
"""Sources told apart per kind between two lines; past that the count says `1024+`."""


def object_key(obj: object) -> Hashable:
    """`obj` in a kind: equal to its own key while it lives, never to the key of an object
    made later (a weak reference, which once dead equals only itself); `id(obj)` for an
    object that takes no weak reference or cannot be hashed."""
    try:
        ref = weakref.ref(obj)
        hash(ref)  # (kept by the reference: it is asked again once `obj` is gone)
    except TypeError:
        return id(obj)
    return ref


class _Seen:
    """A kind's last line: until when the next is held back, and what was left out since."""

    __slots__ = ("left_out", "sources", "until", "written")

    def __init__(self, until: float, written: float) -> None:
        self.until = until
        self.written = written
        self.left_out = 0
        self.sources: set[Hashable] = set()


class QuietLog:
    """Writes to `logger` at most once per `interval` seconds per kind of event; `sources`
    names in the plural who meets the events (`"throttles"`)."""

    __slots__ = ("_clock", "_seen", "interval", "logger", "sources")

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sources: str = "sources",
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.sources = sources
        self._clock = clock
        self._seen: dict[Hashable, _Seen] = {}

    def log(
        self,
        level: int,
        kind: Hashable,
        message: str,
        *args: Any,
        source: Hashable = None,
        exc_info: Any = None,
    ) -> bool:
        """Log `message % args` unless an event of `kind` was logged less than `interval`
        seconds ago (then only count it, and its `source`); returns whether it was written.
        A line written after some were left out ends `(N more like it since the last such
        line, Ss ago)`, and says `from K throttles` (its `sources`) when they came from
        more than one. `exc_info` (as `logging`'s) goes with a line written only: one
        traceback per interval, not one per event."""
        now = self._clock()
        seen = self._seen.get(kind)
        if seen is not None and now < seen.until:
            seen.left_out += 1
            if len(seen.sources) < _SOURCES:
                seen.sources.add(source)
            return False
        if seen is not None and seen.left_out:  # (since the last line, however long ago)
            count = len(seen.sources)
            if count > 1:
                message += " (%d more like it, from %d%s %s, since"
                more = "+" if count >= _SOURCES else ""
                args = (*args, seen.left_out, count, more, self.sources)
            else:
                message += " (%d more like it since"
                args = (*args, seen.left_out)
            message += " the last such line, %ds ago)"
            args = (*args, round(now - seen.written))
        if seen is None and len(self._seen) >= _KINDS:
            del self._seen[next(iter(self._seen))]
        self._seen[kind] = _Seen(now + self.interval, now)
        self.logger.log(level, message, *args, exc_info=exc_info)
        return True
