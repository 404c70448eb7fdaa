"""When a decision of several store operations begins: as its first command is sent.

A decision over several items (`evaluate_all`: a throttle's rates, throttles combined) takes
one store operation per item, so once begun it runs to its end even if its caller is
cancelled meanwhile (`finished`): it is never left charged on some items only. Before it
began it has taken nothing, and a cancellation then stops it: it never runs (docs/
errors-and-answers.md, "When the client goes away"). Its `Gate` tells the two apart. The
decision is pending until the first command of its first item is about to be sent, begun
from then on; a caller cancelled while it is pending (waiting for a connection, for the
namespace generation, in the queue of a round on its key, or not yet started) abandons it,
and the decision is cancelled where it waits, having sent nothing.

The first item's hit carries the gate (`GatedHit`) into the round of hits that decides it,
which may be another caller's (`traffik.backends.lanes`): the round, once it has its
connection, begins the decisions of the hits it sends and leaves out those abandoned
(`sending`), in the same step of the event loop as its first command. A caller is therefore
either too late (the command is sent: the decision runs to its end) or in time (its hit is
never sent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from traffik.backends.store_locks import _started, finished
from traffik.decision import Decision

if TYPE_CHECKING:
    from aiomcache.pool import Connection

    from traffik.backends.memcached._client import NodeClient
    from traffik.backends.memcached._node import Operation
    from traffik.backends.memcached._transition import Hit
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy

__all__ = ["UNSENT", "Gate", "GatedHit", "aligned", "once_begun", "opening", "sending"]

T = TypeVar("T")
R = TypeVar("R")

_PENDING, _BEGUN, _ABANDONED = 0, 1, 2
UNSENT = Decision(False, 0, None, 0, 0)
"""The decision answered for a hit left out of its round (`aligned`): nobody reads it."""


class Gate:
    """Whether a decision has begun (its first command sent) or was abandoned (its caller
    cancelled before): pending until one of them, which then holds."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = _PENDING

    def begin(self) -> bool:
        """Begin the decision, unless it was abandoned: whether it has begun."""
        if self._state == _PENDING:
            self._state = _BEGUN
        return self._state == _BEGUN

    def abandon(self) -> bool:
        """Abandon the decision, unless it has begun: whether it is abandoned."""
        if self._state == _PENDING:
            self._state = _ABANDONED
        return self._state == _ABANDONED

    @property
    def abandoned(self) -> bool:
        return self._state == _ABANDONED


class GatedHit(tuple["StateStrategy", "Rate", int]):
    """A hit (`Hit`: strategy, rate, cost) whose sending begins a decision (its `gate`)."""

    gate: Gate

    def __new__(cls, hit: Hit, gate: Gate) -> GatedHit:
        made = super().__new__(cls, hit)
        made.gate = gate
        return made


def sending(hits: list[Hit]) -> list[Hit]:
    """The hits of a round that has its connection, to send now: the decision of each gated
    hit begins, and the hits of abandoned decisions are left out (`hits` itself when none
    is). Call it right before the round's first command, with no wait in between."""
    for hit in hits:
        if type(hit) is GatedHit and not hit.gate.begin():
            return [h for h in hits if type(h) is not GatedHit or h.gate.begin()]
    return hits


def aligned(hits: list[Hit], sent: list[Hit], results: list[R], unsent: R) -> list[R]:
    """`results` (one per hit `sent`) as one per hit of `hits`: `unsent` for a hit left out
    (its caller is gone: nobody reads it)."""
    if sent is hits:
        return results
    found = iter(results)
    return [unsent if type(hit) is GatedHit and hit.gate.abandoned else next(found) for hit in hits]


def opening(gate: Gate, operation: Operation[T]) -> Operation[T]:
    """`operation`, which begins the decision of `gate` as it is run (it has its connection),
    or is cancelled without sending anything when the decision was abandoned."""

    async def run(client: NodeClient, conn: Connection) -> T:
        if not gate.begin():
            raise asyncio.CancelledError()
        return await operation(client, conn)

    return run


async def once_begun(step: Callable[[Gate], Coroutine[Any, Any, T]], name: str) -> T:
    """`step(gate)`, run to its end once it began even if the caller is cancelled meanwhile
    (`finished`, which logs its failure with `name`); a caller cancelled while it is still
    pending cancels it too, where it waits: it never sends anything."""
    gate = Gate()
    task = _started(step(gate))  # (begun at once where the loop can: as `finished` begins one)
    try:
        return await finished(task, name)
    except asyncio.CancelledError:
        if gate.abandon():
            task.cancel()
        raise
