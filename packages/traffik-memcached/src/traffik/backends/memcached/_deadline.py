"""`deadline(seconds)`: cancel the current task's block after `seconds`, raising `TimeoutError`.

Unlike `asyncio.wait_for` it runs the block in the calling task (no extra task and event
loop turns per command). It is `asyncio.timeout` on Python 3.11+, and a small equivalent
before that (where a cancellation arriving in the same instant as the deadline may be
reported as the timeout).
"""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType
from typing import Any, Optional

__all__ = ["deadline"]


class _Deadline:
    __slots__ = ("_delay", "_expired", "_handle", "_task")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._expired = False
        self._handle: Optional[asyncio.TimerHandle] = None
        self._task: Optional[asyncio.Task[Any]] = None

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        self._handle = asyncio.get_running_loop().call_later(self._delay, self._expire)

    def _expire(self) -> None:
        if self._task is not None and not self._task.done():
            self._expired = True
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._expired and exc_type is asyncio.CancelledError:
            raise asyncio.TimeoutError from exc


if sys.version_info >= (3, 11):
    deadline = asyncio.timeout
else:
    deadline = _Deadline
