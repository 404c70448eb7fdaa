"""`Checkpoints`: the write-ahead log copied back into the file from a thread, off the event loop.

SQLite's automatic checkpoint runs inside whichever commit crosses its threshold, and ends
with an fsync: one decision in a thousand would block its loop for milliseconds. The
connections that decide turn it off (`wal_autocheckpoint = 0`); instead every `every`
commits of this process start a checkpoint on a connection of its own, in the loop's
default executor. It is done in two steps: a passive one copies the log back while
decisions go on (it never waits for, nor blocks, readers and writers), then a truncating
one copies the few commits made meanwhile, holding the write lock for that short copy, and
empties the log file, so that the next commit starts the log over. A passive checkpoint
alone would never let it start over under steady writes: the log would grow without end;
and a log started over without truncating keeps the largest size it ever reached on disk
(tens of megabytes after a burst of new keys).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

__all__ = ["CHECKPOINT_EVERY", "Checkpoints"]

CHECKPOINT_EVERY = 1000
"""Commits of one process between two checkpoints (SQLite's default threshold is 1000 pages)."""

_RESTART_WAIT = 1.0
"""Seconds the truncating step waits for other connections' writes to end (in its thread)."""

logger = logging.getLogger("traffik.backends.sqlite")


class Checkpoints:
    """Counts this process's commits to the file at `path` and checkpoints every `every`."""

    __slots__ = ("_commits", "_running", "every", "path")

    def __init__(self, path: str, every: int = CHECKPOINT_EVERY) -> None:
        self.path = path
        self.every = every
        self._commits = 0
        self._running = False

    def committed(self) -> None:
        """One more commit; starts a checkpoint when `every` have been made since the last."""
        self._commits += 1
        if self._commits >= self.every and not self._running:
            self._commits = 0
            self._start()

    def forked(self) -> None:
        """In a child process just forked: a checkpoint the parent was running is not running
        here (its thread stayed behind), so none is waited for."""
        self._commits = 0
        self._running = False

    def _start(self) -> None:
        self._running = True
        try:
            asyncio.get_running_loop().run_in_executor(None, self._run)
        except RuntimeError:  # no loop, or its executor is shut down: checkpoint here
            self._run()

    def _run(self) -> None:
        """`checkpoint`, then ready for the next: the flag is cleared by the thread itself,
        since the loop may not get to a callback while requests keep it busy."""
        try:
            self.checkpoint()
        finally:
            self._running = False

    def checkpoint(self) -> None:
        """A passive checkpoint then a truncating one, on a connection opened and closed here
        (so no connection outlives the thread, nor crosses a fork); the truncating one waits
        (in this thread, SQLite's busy handler) up to `_RESTART_WAIT` seconds for the
        writers of the moment. A failure is logged: the next one retries."""
        try:
            conn = sqlite3.connect(self.path, timeout=_RESTART_WAIT, isolation_level=None)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            logger.debug("checkpoint of %r failed", self.path, exc_info=True)
