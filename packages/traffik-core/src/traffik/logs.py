"""Logging that does not flood: one line per kind of event per interval, with a count.

During an outage every decision fails the same way; logging each one would write thousands of
identical lines a second. `QuietLog.log(kind, ...)` writes the first event of a kind, then
counts the others for `interval` seconds and writes the next one with how many it left out
since the line before, and how long ago that line was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from typing import Any, Callable

__all__ = ["QuietLog"]

_KINDS = 1024
"""Kinds remembered at once; past that the oldest are forgotten (and may log again)."""


class QuietLog:
    """Writes to `logger` at most once per `interval` seconds per kind of event."""

    __slots__ = ("_clock", "_seen", "interval", "logger")

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._seen: dict[Hashable, list[float]] = {}

    def log(self, level: int, kind: Hashable, message: str, *args: Any) -> bool:
        """Log `message % args` unless an event of `kind` was logged less than `interval`
        seconds ago (then only count it); returns whether it was written. A line written
        after some were left out ends `(N more like it since the last such line, Ss ago)`."""
        now = self._clock()
        seen = self._seen.get(kind)
        if seen is not None and now < seen[0]:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:  # (left out since the last line, however long ago)
            message += " (%d more like it since the last such line, %ds ago)"
            args = (*args, int(seen[1]), round(now - seen[2]))
        if seen is None and len(self._seen) >= _KINDS:
            del self._seen[next(iter(self._seen))]
        self._seen[kind] = [now + self.interval, 0, now]
        self.logger.log(level, message, *args)
        return True
