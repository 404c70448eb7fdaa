"""The decision step on memcached, lock-free: one state under `cas` or on window counters, concurrent
hits on a key coalesced, or several items in turn, all or nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from traffik.backends.lanes import Lanes
from traffik.backends.memcached._client import Flagged
from traffik.backends.memcached._counters import (
    refund_count,
    uncount,
    unsigned,
    window_count,
    window_hit,
)
from traffik.backends.memcached._gate import Gate, GatedHit, once_begun, opening
from traffik.backends.memcached._item_size import check_fits
from traffik.backends.memcached._node import fetch
from traffik.backends.memcached._sliding import (
    Counted,
    Value,
    count_windows,
    counts_windows,
    refund_windows,
    uncount_window,
    window_key,
    window_state,
    with_windows_ahead,
)
from traffik.backends.memcached._transition import Hit, refund, transition
from traffik.strategies.fixed_window import counter_decision, too_late
from traffik.strategies.state import decode_state
from traffik.strategies.steps import Item, combine, is_counter

if TYPE_CHECKING:
    from traffik.backends.memcached._node import Node
    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy

__all__ = ["MemcachedSteps"]

_CHECKED_PAIRS = 1024
"""How many (strategy, rate) pairs are remembered as validated (it starts over when full)."""

_log = logging.getLogger("traffik")


class _Held(NamedTuple):
    """Units of an item to give back: the item and where its key lives; for a fixed-window
    counter the end of the window they were counted in (`end`), for a sliding window's the
    window counter (`counted`); None when not known, so refunded clamped at a full budget."""

    item: Item
    node: Node
    mkey: bytes
    end: Optional[int] = None
    counted: Optional[bytes] = None


class _Ahead(NamedTuple):
    """The window counters of a key at a period, each read when `with_windows_ahead` asks."""

    node: Node
    mkey: bytes
    period: int

    async def read(self, wid: int) -> Value:
        counter = window_key(self.mkey, wid, self.period)
        return (await fetch([(self.node, counter)], "evaluate_all"))[0]


class MemcachedSteps:
    """`validate`, `evaluate`, `evaluate_all` and `refund_all` of `MemcachedBackend`.

    Concurrent hits on one key are coalesced (`_lanes`): a state's hits into one `gets` and
    one `cas` per round, a sliding window counter's into one `incr` (and one `decr` for the
    units of the hits it refuses).
    """

    now_ms: Callable[[], int]
    max_item_bytes: int
    _checked: set[tuple[Any, Rate]]
    _states: Lanes[Hit, Decision]
    _windows: Lanes[Hit, Counted]
    _full: dict[bytes, int]

    if TYPE_CHECKING:

        async def _locate(self, key: str) -> tuple[Node, bytes]: ...

    def validate(self, strategy: Any, rate: Rate) -> None:
        """Refuse a strategy whose worst-case state at `rate` cannot fit one memcached item of
        `max_item_bytes`, naming the largest limit that fits (`check_fits`)."""
        check_fits(strategy, rate, self.max_item_bytes)

    def _check(self, strategy: Any, rate: Rate) -> None:
        """`validate` on the first use of a (strategy, rate) pair."""
        checked = self._checked
        if (strategy, rate) not in checked:
            self.validate(strategy, rate)
            if len(checked) >= _CHECKED_PAIRS:
                checked.clear()
            checked.add((strategy, rate))

    async def evaluate(
        self, key: str, strategy: StateStrategy, rate: Rate, cost: int, *, commit: bool = True
    ) -> Decision:
        """Decide a hit on `key` (coalesced with the concurrent ones, see `_decide`);
        `commit=False` only reads (one `get`)."""
        if not commit:
            return (await self._read([Item(strategy, key, rate, cost)]))[0]
        self._check(strategy, rate)
        node, mkey = await self._locate(key)
        return (await self._decide(node, mkey, strategy, rate, cost))[0]

    async def _decide(
        self,
        node: Node,
        mkey: bytes,
        strategy: StateStrategy,
        rate: Rate,
        cost: int,
        gate: Optional[Gate] = None,
    ) -> tuple[Decision, Optional[bytes]]:
        """The hit's decision, and the window counter it counted in (None for a state); its
        sending begins the decision of `gate` (`_gate`)."""
        hit: Hit = (
            (strategy, rate, cost) if gate is None else GatedHit((strategy, rate, cost), gate)
        )
        now_ms = self.now_ms
        if counts_windows(strategy, rate):
            full = self._full

            def count(hits: list[Hit]) -> Any:
                return node.run(count_windows(mkey, hits, now_ms, full), "evaluate")

            return await self._windows.decide(mkey, hit, count)

        def decide(hits: list[Hit]) -> Any:
            return transition(node, mkey, hits, now_ms)

        return await self._states.decide(mkey, hit, decide), None

    async def evaluate_all(self, items: Sequence[Item], *, commit: bool = True) -> Decision:
        """Take each item's units in order until one refuses, then give back what was taken
        (a refusing counter's count of the hit too, when there are several items: a refused
        step of several items takes nothing) and only read the items after it; `commit=False`
        only reads (one `get` per node). Several items are one store operation each: once
        begun (its first item's first command sent), they run to their end even if the
        caller is cancelled meanwhile (`finished`), so a cancelled hit is charged on every
        item or on none; a caller cancelled before that (the step waiting for a connection,
        the namespace generation, or a round in flight on its first key) cancels the step,
        which never sends anything (`_gate.once_begun`)."""
        if not commit or any(item.cost > item.strategy.capacity(item.rate) for item in items):
            # (a cost above what an item can ever admit: refused, and charged nowhere, as
            # `settled` answers one rate; counted first, it could pass memcached's 64 bits)
            return combine(await self._read(items), [item.cost for item in items])
        if len(items) == 1:
            return await self._all_or_nothing(items)
        return await once_begun(
            lambda gate: self._all_or_nothing(items, gate), "memcached evaluate_all"
        )

    async def _all_or_nothing(self, items: Sequence[Item], gate: Optional[Gate] = None) -> Decision:
        """The items taken in turn, what they took given back on a refusal or a failure; the
        first item's first command begins the decision of `gate`."""
        parts: list[Decision] = []
        held: list[_Held] = []
        try:
            for item in items:
                decision, taken = await self._take(item, None if parts else gate)
                parts.append(decision)
                if decision.allowed:
                    held.append(taken)
                    continue
                if len(items) > 1 and is_counter(item.strategy):
                    held.append(taken)
                break
        except Exception:
            await self._give_back(held)
            raise
        if parts[-1].allowed:
            return combine(parts)
        rest = self._read(items[len(parts) :], convert=True)
        _, later = await asyncio.gather(self._give_back(held), rest)
        return combine(parts + later, [item.cost for item in items])

    async def refund_all(self, items: Sequence[Item]) -> None:
        """Give each item's cost back, never past a full budget: a state's `refund` under `cas`,
        a counter's count lowered (never below 0) in its window; the items in parallel."""
        located = [await self._locate(item.key) for item in items]
        now = self.now_ms()
        await asyncio.gather(
            *(
                self._return(_Held(item, node, mkey), now)
                for item, (node, mkey) in zip(items, located)
            )
        )

    async def _take(self, item: Item, gate: Optional[Gate] = None) -> tuple[Decision, _Held]:
        """Decide `item` and charge it if admitted; a counter counts the hit either way (the
        units to give back are those it counted). Its first command begins the decision of
        `gate`."""
        node, mkey = await self._locate(item.key)
        if is_counter(item.strategy):
            now = self.now_ms()
            count_hit = window_hit(mkey, item.cost, item.rate.expire / 1000, now)
            count = await node.run(
                count_hit if gate is None else opening(gate, count_hit), "evaluate_all"
            )
            ttl_ms = getattr(count, "ttl_ms", None)
            decision = counter_decision(count - item.cost, ttl_ms, item.rate, item.cost)
            return decision, _Held(item, node, mkey, 0 if ttl_ms is None else now + ttl_ms)
        self._check(item.strategy, item.rate)
        decision, counted = await self._decide(
            node, mkey, item.strategy, item.rate, item.cost, gate
        )
        return decision, _Held(item, node, mkey, counted=counted)

    async def _read(self, items: Sequence[Item], convert: bool = False) -> list[Decision]:
        """Each item's decision from one read of every key (a sliding window's counter, and
        the previous window's where it has none: a second read; and the next window's for
        a refusal whose wait reaches it, `with_windows_ahead`), charging nothing. With
        `convert` (the items after a refusing one), what the other backends write in a
        refused step is written: a refusing item's state converted from another rate's
        (`traffik.strategies.base.Transition`), decided again under `cas`, charging nothing
        (`transition`), its decision that one; and a fixed window that ends too late, cut
        to one period (`fixed_window.too_late`: counting nothing in it, `window_hit` cuts
        it), as its decision tells."""
        located = [await self._locate(item.key) for item in items]
        now = self.now_ms()
        windows = [
            now // item.rate.expire if counts_windows(item.strategy, item.rate) else None
            for item in items
        ]
        reads = [
            (node, mkey if wid is None else window_key(mkey, wid, item.rate.expire))
            for item, (node, mkey), wid in zip(items, located, windows)
        ]
        values = await fetch(reads, "evaluate_all") if reads else []
        opening = [
            (node, window_key(mkey, wid - 1, item.rate.expire))
            for item, (node, mkey), wid, raw in zip(items, located, windows, values)
            if wid is not None and unsigned(raw) is None
        ]
        previous = iter(await fetch(opening, "evaluate_all") if opening else [])
        parts = []
        converted: list[int] = []
        cut: list[int] = []
        for item, (node, mkey), raw, wid in zip(items, located, values, windows):
            if is_counter(item.strategy):
                count, left = window_count(raw, now)
                parts.append(counter_decision(count, left, item.rate, item.cost))
                if convert and too_late(left, item.rate.expire):
                    cut.append(len(parts) - 1)
                continue
            self._check(item.strategy, item.rate)
            if wid is None:
                state = decode_state(raw.value if isinstance(raw, Flagged) else raw)
            else:
                opened = unsigned(raw) is not None
                state = window_state(raw, None if opened else next(previous), wid)
            decision, new_state, _ = item.strategy.transition(state, now, item.rate, item.cost)
            if wid is not None and not decision.allowed:
                ahead = _Ahead(node, mkey, item.rate.expire)
                hit = (item.strategy, item.rate, item.cost)
                decision = await with_windows_ahead(decision, hit, now, ahead.read)
            parts.append(decision)
            if convert and wid is None and new_state is not None and not decision.allowed:
                converted.append(len(parts) - 1)
        if converted or cut:
            hits = [(items[i].strategy, items[i].rate, items[i].cost) for i in converted]
            decided, _ = await asyncio.gather(
                asyncio.gather(
                    *(
                        transition(*located[i], [hit], self.now_ms, charge=False)
                        for i, hit in zip(converted, hits)
                    )
                ),
                asyncio.gather(
                    *(
                        located[i][0].run(
                            window_hit(located[i][1], 0, items[i].rate.expire / 1000, now),
                            "evaluate_all",
                        )
                        for i in cut
                    )
                ),
            )
            for i, (decision,) in zip(converted, decided):
                parts[i] = decision
        return parts

    async def _give_back(self, held: Sequence[_Held]) -> None:
        """Return the units a refused decision took, in parallel; a failure is logged (those
        units then come back as the limit refills), never raised over the decision."""
        if not held:
            return
        now = self.now_ms()
        results = await asyncio.gather(
            *(self._return(units, now) for units in held), return_exceptions=True
        )
        for units, result in zip(held, results):
            if isinstance(result, BaseException):
                _log.warning(
                    "memcached: could not give back %d unit(s) of %r after a refused decision; "
                    "they come back as its limit refills: %r",
                    units.item.cost,
                    units.item.key,
                    result,
                )

    async def _return(self, units: _Held, now: int) -> None:
        item, node, mkey, end, counted = units
        if counted is not None:
            await node.run(uncount_window(counted, item.cost), "evaluate_all")
        elif counts_windows(item.strategy, item.rate):
            await node.run(refund_windows(mkey, item.cost, item.rate, now), "refund_all")
        elif not is_counter(item.strategy):
            await refund(node, mkey, item.strategy, item.rate, item.cost, self.now_ms)
        elif end is None:
            await node.run(refund_count(mkey, item.cost, now), "refund_all")
        elif end == 0 or end > now:  # a closed window holds nothing that still counts
            await node.run(uncount(mkey, item.cost, end), "evaluate_all")
