"""`Turns`: the tasks of one event loop waiting for a busy SQLite file, served in arrival order.

Only the first in line asks the file again, so a process sends one attempt at a time however
many requests wait. It naps first with the loop held (`SPIN_NAPS` naps of `SPIN_NAP`
seconds: a transaction elsewhere lasts tens of microseconds, far less than the millisecond
an event-loop sleep takes at the least), then sleeps on the loop, from `FIRST_DELAY`
doubling to `MAX_DELAY` (jittered, so processes do not retry in step), until its deadline.

When it gets the file, the first in line also does the work of the tasks queued right behind
it, in order, in the same turn (`batch`), and hands each its own outcome through its future:
under contention a process then takes the write lock once for a whole line instead of once
per request, and its waiting tasks skip their naps and sleeps. Only work given as `work`
joins (a transaction's step); a task without (`run`'s plain reads) is done alone, and the
line stops joining at it, so no task's work goes ahead of an earlier one's. A cancelled
task's work is never done; one cancelled after its work was done just drops the outcome.

The line may also be served by the loop itself rather than by a task (`wait(serve=True)`,
for a gathering: tasks of one loop iteration asking for the file together, see `Database`):
a callback scheduled with `call_soon` does the work at the head of the line, `MAX_BATCH` at
a time (a callback each), and hands out the outcomes; meanwhile no task is first in line,
and every newcomer queues behind. When the file is busy, or the head has no work to join
(a read), the callback hands the line over to its first task, which carries on as above
(naps and sleeps first if the file was busy), so nothing overtakes an earlier task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import time
from typing import Any, Callable, Optional, TypeVar, cast

__all__ = [
    "BUSY",
    "FIRST_DELAY",
    "MAX_BATCH",
    "MAX_DELAY",
    "SPIN_NAP",
    "SPIN_NAPS",
    "Outcome",
    "Turns",
]

T = TypeVar("T")

BUSY = object()
"""What an attempt answers when the file is busy (it is then tried again)."""

_TURN = object()
"""What a waiting task's future holds when it becomes the first in line (no outcome yet)."""

_RETRY = object()
"""`_TURN`, after the loop's own attempt for the line (`serve`) found the file busy."""

SPIN_NAP = 0.00005
SPIN_NAPS = 4
FIRST_DELAY = 0.001
MAX_DELAY = 0.008
MAX_BATCH = 16
"""The most work one turn does (the head's and those behind it): a turn holds the event loop
for all of it, tens of microseconds each; the rest of the line goes next, at once."""

Outcome = tuple[Optional[BaseException], Any]
"""One task's share of a batch: its error (or None) and its result."""


class _Waiter:
    """A task in line: the future it waits on, and the work it lets the head do (or None)."""

    __slots__ = ("future", "work")

    def __init__(self, future: asyncio.Future[Any], work: object | None) -> None:
        self.future = future
        self.work = work


class Turns:
    """The line of one loop's tasks waiting for the file (see the module)."""

    __slots__ = ("_line", "_served")

    def __init__(self) -> None:
        self._line: collections.deque[_Waiter] = collections.deque()
        self._served = False
        """Whether a callback will serve the line (`serve`): no task is first in line."""

    def __bool__(self) -> bool:
        """True while some task waits: a newcomer queues behind it instead of asking first."""
        return bool(self._line)

    async def wait(
        self,
        attempt: Callable[[], T | object],
        deadline: float,
        expired: Callable[[], BaseException],
        tried: bool,
        work: object | None = None,
        batch: Callable[[list[Any]], list[Outcome] | object] | None = None,
        serve: bool = False,
    ) -> T:
        """`attempt()` again until it answers something other than `BUSY`, in turn; at
        `deadline` (the loop's time), `expired()` is raised. `tried` says whether the
        caller's own first attempt already failed (so the head of the line naps before
        asking).

        With `work` and `batch`, the task's work may instead be done by the head of the
        line: `batch(works)` does its own and those of the tasks behind it in one go and
        answers their outcomes in order (or `BUSY`, having done none). With `serve` too
        (the line is empty: the caller checked), the loop serves the line from a callback
        in the next iteration, this task's work first (see the module)."""
        loop = asyncio.get_running_loop()
        line = self._line
        me = _Waiter(loop.create_future(), work if batch is not None else None)
        line.append(me)
        if serve and batch is not None and line[0] is me and not self._served:
            self._served = True
            loop.call_soon(self._serve, batch)
        try:
            if line[0] is not me or self._served:
                outcome = await me.future  # the head hands over, or did the work for us
                if outcome is not _TURN and outcome is not _RETRY:
                    return outcome
                tried = outcome is _RETRY
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
                behind = self._behind() if me.work is not None else None
                if behind and batch is not None:
                    outcomes = batch([me.work, *(waiter.work for waiter in behind)])
                    if outcomes is not BUSY:
                        return self._deliver(behind, outcomes)  # type: ignore[arg-type]
                else:
                    result = attempt()
                    if result is not BUSY:
                        return result  # type: ignore[return-value]
                tried = True
        finally:
            if line and line[0] is me:
                line.popleft()
                if line and not self._served and not line[0].future.done():
                    line[0].future.set_result(_TURN)
            else:
                with contextlib.suppress(ValueError):  # served: the head took it out of line
                    line.remove(me)
            if me.future.done() and not me.future.cancelled():
                me.future.exception()  # an outcome a cancelled task dropped is no error

    def _serve(self, batch: Callable[[list[Any]], list[Outcome] | object]) -> None:
        """The loop's turn for the line (a callback): the work of the tasks at its head, up
        to `MAX_BATCH`, done by `batch` in one go, each task handed its outcome; then again
        in the next iteration while work is waiting, else the line goes to its first task
        (told the file was busy, if it was)."""
        line = self._line
        turn = _TURN
        try:
            joining: list[_Waiter] = []
            for waiter in line:
                if waiter.work is None or len(joining) == MAX_BATCH:
                    break
                if not waiter.future.done():  # else cancelled: its work is never done
                    joining.append(waiter)
            if not joining:
                return
            try:
                outcomes = batch([waiter.work for waiter in joining])
            except Exception as exc:  # nothing was done: the first gets it, as its own try
                outcomes = [(exc, None)]
                joining = joining[:1]
            if outcomes is BUSY:
                turn = _RETRY
                return
            last = joining[-1]
            while line and line.popleft() is not last:
                pass
            _hand_out(joining, cast("list[Outcome]", outcomes))
            head = next((w for w in line if not w.future.done()), None)
            if head is not None and head.work is not None:
                asyncio.get_running_loop().call_soon(self._serve, batch)
                turn = None  # still served
        finally:
            if turn is not None:
                self._served = False
                if line and not line[0].future.done():
                    line[0].future.set_result(turn)

    def _behind(self) -> list[_Waiter]:
        """The tasks right behind the head whose work can join its own, in order (up to the
        first that has none, and `MAX_BATCH` in all); cancelled ones are skipped."""
        joining: list[_Waiter] = []
        for waiter in itertools.islice(self._line, 1, None):
            if waiter.work is None or len(joining) == MAX_BATCH - 1:
                break
            if not waiter.future.done():
                joining.append(waiter)
        return joining

    def _deliver(self, behind: list[_Waiter], outcomes: list[Outcome]) -> Any:
        """Hand each task behind its outcome and take them (and the cancelled ones among
        them) out of line; the head's own outcome is returned, or its error raised."""
        line = self._line
        head, last = line.popleft(), behind[-1]
        while line and line.popleft() is not last:
            pass
        line.appendleft(head)
        _hand_out(behind, outcomes[1:])
        error, result = outcomes[0]
        if error is not None:
            raise error
        return result


def _hand_out(waiters: list[_Waiter], outcomes: list[Outcome]) -> None:
    """Each waiter its outcome (its error or its result), in order; one cancelled while its
    work was being done drops its own."""
    for waiter, (error, result) in zip(waiters, outcomes):
        if waiter.future.done():
            continue
        if error is None:
            waiter.future.set_result(result)
        else:
            waiter.future.set_exception(error)
