"""`Checkpoints`: the write-ahead log copied back into the file from a thread, off the event loop.

SQLite's automatic checkpoint runs inside whichever commit crosses its threshold, and ends
with an fsync: one decision in a thousand would block its loop for milliseconds. The
connections that decide turn it off (`wal_autocheckpoint = 0`); instead every `every`
commits of this process start one passive checkpoint (it never waits for, nor blocks,
readers and writers) on a connection of its own, in the loop's default executor. The log
stays bounded: each process checkpoints after its own `every` commits, and SQLite
checkpoints when the last connection to the file closes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

__all__ = ["CHECKPOINT_EVERY", "Checkpoints"]

CHECKPOINT_EVERY = 1000
"""Commits of one process between two checkpoints (SQLite's default threshold is 1000 pages)."""

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

    def _start(self) -> None:
        self._running = True
        try:
            done = asyncio.get_running_loop().run_in_executor(None, self.checkpoint)
        except RuntimeError:  # no loop, or its executor is shut down: checkpoint here
            try:
                self.checkpoint()
            finally:
                self._running = False
            return
        done.add_done_callback(self._finished)

    def _finished(self, done: asyncio.Future[None]) -> None:
        self._running = False
        if not done.cancelled() and done.exception() is not None:
            logger.debug("checkpoint of %r failed", self.path, exc_info=done.exception())

    def checkpoint(self) -> None:
        """One passive checkpoint, on a connection opened and closed here (so no connection
        outlives the thread, nor crosses a fork). A failure is logged: the next one retries."""
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            logger.debug("checkpoint of %r failed", self.path, exc_info=True)
