"""`Turns`: the tasks of one event loop waiting for a busy SQLite file, served in arrival order.

Only the first in line asks the file again, so a process sends one attempt at a time however
many requests wait. It naps first with the loop held (`SPIN_NAPS` naps of `SPIN_NAP`
seconds: a transaction elsewhere lasts tens of microseconds, far less than the millisecond
an event-loop sleep takes at the least), then sleeps on the loop, from `FIRST_DELAY`
doubling to `MAX_DELAY` (jittered, so processes do not retry in step), until its deadline.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Callable, TypeVar

__all__ = ["BUSY", "FIRST_DELAY", "MAX_DELAY", "SPIN_NAP", "SPIN_NAPS", "Turns"]

T = TypeVar("T")

BUSY = object()
"""What an attempt answers when the file is busy (it is then tried again)."""

SPIN_NAP = 0.00005
SPIN_NAPS = 4
FIRST_DELAY = 0.001
MAX_DELAY = 0.008


class Turns:
    """The line of one loop's tasks waiting for the file (see the module)."""

    __slots__ = ("_line",)

    def __init__(self) -> None:
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()

    def __bool__(self) -> bool:
        """True while some task waits: a newcomer queues behind it instead of asking first."""
        return bool(self._line)

    async def wait(
        self,
        attempt: Callable[[], T | object],
        timeout: float,
        expired: Callable[[], BaseException],
        tried: bool,
    ) -> T:
        """`attempt()` again until it answers something other than `BUSY`, in turn; after
        `timeout` seconds in all, `expired()` is raised. `tried` says whether the caller's
        own first attempt already failed (so the head of the line naps before asking)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        line = self._line
        turn = loop.create_future()
        line.append(turn)
        try:
            if line[0] is not turn:
                await turn  # the task ahead hands over once its step is done
                tried = False
            naps, delay = 0, FIRST_DELAY
            while True:
                if tried:
                    now = loop.time()
                    if now >= deadline:
                        raise expired()
                    if naps < SPIN_NAPS:
                        naps += 1
                        time.sleep(SPIN_NAP)
                    else:
                        await asyncio.sleep(
                            min(delay * (0.5 + random.random() / 2), deadline - now)
                        )
                        delay = min(delay * 2, MAX_DELAY)
                result = attempt()
                if result is not BUSY:
                    return result  # type: ignore[return-value]
                tried = True
        finally:
            first = line[0] is turn
            line.remove(turn)
            if first and line and not line[0].done():
                line[0].set_result(None)
