"""Coalescing: concurrent hits on one key, in one event loop, decided in rounds of one store operation.

A hit on a key with no round in flight runs its own round at once, so a lone (sequential)
hit pays nothing extra. Hits that arrive while a round is in flight queue; when it ends,
they run as the next round, together and in arrival order, in a task of their own (so a
cancelled caller never cuts the round of the others), and each gets its own result. Fifty
concurrent hits on one key thus cost two rounds, not fifty racing ones. A hit cancelled
while queued is left out of its round; one cancelled after its round began was decided (and
charged) as if it completed just before.

A network store's lanes are given its circuits (`traffik.backends.health`). Then a round that
fails on an outage (a `BackendConnectionError`: a timeout, a lost connection, the open
circuit) fails the hits queued behind it at once with the same error, instead of sending
their round to a store that just did not answer: no hit waits for two timeouts. Each such hit
counts as a failure on the circuit that counted the round's, so a hot key opens the circuit as
surely as many keys do. Without circuits (SQLite: a busy file is no outage, and each hit has
a deadline of its own) the hits queued behind a failed round run their own.

Memcached coalesces a state's hits into one `gets`/`cas` and a window's into one `incr`;
Redis a state's hits into one `EVALSHA`; SQLite a key's hits into one read and one write;
Redis and Memcached a throttle's `FixedWindow` hits into one addition to the counter
(`counter_decider`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Hashable, KeysView, Sequence
from typing import TYPE_CHECKING, Callable, Generic, Optional, TypeVar, Union, cast

from traffik.exceptions import BackendConnectionError
from traffik.strategies.fixed_window import counted_decision

if TYPE_CHECKING:
    from traffik.backends.health import StoreCircuit
    from traffik.decision import Decision
    from traffik.rates import Rate

__all__ = ["Count", "Lanes", "Round", "counter_decider"]

H = TypeVar("H")
R = TypeVar("R")

Round = Callable[[list[H]], Awaitable[list[R]]]
"""Decides a batch of hits on one key (in order, on one read of its state), a result each."""


class _Lane(Generic[H, R]):
    """One key's round in flight, in the loop that runs it, and the hits waiting for the next."""

    __slots__ = ("loop", "queue", "run", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, run: Round[H, R]) -> None:
        self.loop = loop
        self.run = run
        self.queue: list[tuple[H, asyncio.Future[R]]] = []
        self.task: Optional[asyncio.Task[None]] = None


_Lone = tuple[asyncio.AbstractEventLoop, Round[H, R]]
"""A key's lone round in flight (its loop, and how it decides a batch): a `_Lane` is made
only when another hit joins it, so a sequential hit costs one small tuple."""


class Lanes(Generic[H, R]):
    """The keys with a round in flight; `decide` runs a hit alone or in the next round.

    `join` and `close` are `decide` in two halves, for a caller that runs a lone hit its own
    way (with no coroutine or list of its own): `join` answers None when the key is idle (the
    caller then runs its hit and calls `close` once it is done, with the error it failed on
    if it did), else the future of the hit's result in the next round.

    `circuits` are the store's: with them, the hits queued behind a round that failed on an
    outage get its error at once (module docstring)."""

    __slots__ = ("_circuits", "_lanes")

    def __init__(self, circuits: Sequence[StoreCircuit] = ()) -> None:
        self._lanes: dict[Hashable, Union[_Lane[H, R], _Lone[H, R]]] = {}
        self._circuits = tuple(circuits)

    def __len__(self) -> int:
        return len(self._lanes)

    def __contains__(self, key: Hashable) -> bool:
        """Whether `key` has a round in flight (in any loop)."""
        return key in self._lanes

    def in_flight(self) -> KeysView[Hashable]:
        """The keys with a round in flight, as a live view: `key in lanes.in_flight()`,
        taken once, answers as `key in lanes` does, without a call of its own (a hot
        path's check)."""
        return self._lanes.keys()

    async def decide(self, key: Hashable, hit: H, run: Round[H, R]) -> R:
        """`hit`'s result: from a round of its own when `key` is idle, else from the round
        that follows the one in flight (run by `run` of the hit that opened the lane)."""
        queued = self.join(key, hit, run)
        if queued is not None:
            return await queued
        try:
            result = (await run([hit]))[0]
        except BaseException as exc:
            self.close(key, exc)
            raise
        self.close(key)
        return result

    def join(self, key: Hashable, hit: H, run: Round[H, R]) -> Optional[asyncio.Future[R]]:
        """None when `key` is idle in this loop: the lane is opened for the caller's own
        round (then `close(key)`); else the future of `hit`'s result in the next round."""
        loop = asyncio.get_running_loop()
        lanes = self._lanes
        lane = lanes.get(key)
        if lane is not None:
            if isinstance(lane, _Lane):
                owner = lane.loop
            else:  # a lone round: the hits that join it need a lane
                owner, opened_by = lane
                if owner is loop:
                    lane = lanes[key] = _Lane(loop, opened_by)
            if owner is loop:
                future: asyncio.Future[R] = loop.create_future()
                cast("_Lane[H, R]", lane).queue.append((hit, future))
                return future
            if not owner.is_closed():
                return None  # another loop's round: left to it, and this hit goes alone
        # idle (or the lane of a loop closed with its round in flight, replaced)
        lanes[key] = (loop, run)
        return None

    def close(self, key: Hashable, failure: Optional[BaseException] = None) -> None:
        """The caller's own round is over: the hits queued meanwhile run as the next, or
        get `failure` at once when it is an outage the store's circuits see (module
        docstring). (A hit that went alone beside another loop's round finds that loop's
        lane: nothing to do.)"""
        lane = self._lanes.get(key)
        if lane is None:
            return
        if not isinstance(lane, _Lane):  # nobody joined
            if lane[0] is asyncio.get_running_loop():
                del self._lanes[key]
        elif lane.loop is asyncio.get_running_loop():
            self._next(key, lane, failure)

    def _next(
        self, key: Hashable, lane: _Lane[H, R], failure: Optional[BaseException] = None
    ) -> None:
        """Start the round of the hits queued on `lane` (those still waiting), fail them
        with `failure` (an outage, when the store has circuits), or close the lane."""
        queued = [(hit, future) for hit, future in lane.queue if not future.done()]
        lane.queue = []
        if queued and self._circuits and isinstance(failure, BackendConnectionError):
            for _, future in queued:
                future.set_exception(failure)
            for circuit in self._circuits:
                circuit.waited(failure, len(queued))
            queued = []
        if queued:
            lane.task = lane.loop.create_task(self._round(key, lane, queued))
        elif self._lanes.get(key) is lane:
            del self._lanes[key]

    async def _round(
        self, key: Hashable, lane: _Lane[H, R], queued: list[tuple[H, asyncio.Future[R]]]
    ) -> None:
        failure: Optional[Exception] = None
        try:
            results = await lane.run([hit for hit, _ in queued])
        except asyncio.CancelledError:
            for _, future in queued:
                future.cancel()
            raise
        except Exception as exc:
            failure = exc
            for _, future in queued:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(queued, results):
                if not future.done():
                    future.set_result(result)
        finally:
            self._next(key, lane, failure)


Count = Callable[[str, int], Awaitable[tuple[int, Optional[float]]]]
"""Adds an amount to a window counter (by its stored key) in one store operation: the count
it reached, and the milliseconds until its window closes (None: unknown)."""


def counter_decider(
    count: Count,
    rate: Rate,
    cost: int,
    most: Optional[int] = None,
    circuits: Sequence[StoreCircuit] = (),
) -> Callable[[str], Awaitable[Decision]]:
    """`FixedWindow`'s decision for hits of `cost` on a counter's stored key, coalesced: a hit
    on an idle counter adds its cost alone; the hits that arrive while one is in flight add
    all their costs in the next `count`, each decided with the count it would have reached
    alone (the total less the costs of the hits after it), in arrival order. A round adds at
    most `most` (None: no bound); a larger one counts its hits one by one. `circuits` are the
    store's (see `Lanes`)."""
    lanes: Lanes[str, Decision] = Lanes(circuits)

    async def together(counters: list[str]) -> list[Decision]:
        """The hits on one counter (`counters`: it, once per hit), added up in one `count`."""
        hits = len(counters)
        if most is not None and hits * cost > most:
            decisions = []
            for counter in counters:
                total, ttl_ms = await count(counter, cost)
                decisions.append(counted_decision(total, ttl_ms, rate))
            return decisions
        total, ttl_ms = await count(counters[0], hits * cost)
        return [counted_decision(total - (hits - 1 - i) * cost, ttl_ms, rate) for i in range(hits)]

    async def decide(counter: str) -> Decision:
        queued = lanes.join(counter, counter, together)
        if queued is not None:  # a hit on this counter is in flight: the next round
            return await queued
        try:
            total, ttl_ms = await count(counter, cost)
        except BaseException as exc:
            lanes.close(counter, exc)
            raise
        lanes.close(counter)
        return counted_decision(total, ttl_ms, rate)

    return decide
