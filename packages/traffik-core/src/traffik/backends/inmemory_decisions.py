"""`InMemoryDecisions`: `InMemoryBackend`'s decision steps, each read-decide-write made in place."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from time import time_ns
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik.backends.capacity import entry_size
from traffik.backends.inmemory_steps import (
    Counted,
    Step,
    counted_step,
    in_place_step,
    transition_step,
    whole_number,
)
from traffik.backends.inmemory_store import InMemoryStore
from traffik.backends.lifecycle import READY
from traffik.backends.steps import LockedSteps
from traffik.clock import system_ms
from traffik.decision import Decision
from traffik.strategies.state import decode_state
from traffik.strategies.steps import (
    IN_PLACE_COUNTER,
    IN_PLACE_STATE,
    combine,
    counts_refused,
    is_counter,
    rate_suffix,
)

if TYPE_CHECKING:
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy
    from traffik.strategies.steps import Item

__all__ = ["PRIMITIVES", "InMemoryDecisions"]

Row = tuple[str, Optional[Step], Optional[Counted], "Rate", int]
"""One item of `_joint`: its store key, the step of its state strategy or the decision of its
window counter (`_steps_of`), its rate and its cost."""

_STORED_KEYS = 16384
"""Store keys a decider remembers (`_decider`) before forgetting them all."""
_STEPS_KEPT = 256
"""Steps a backend keeps for `evaluate_all` (`_step_of`) before forgetting them all."""

PRIMITIVES = ("get", "set", "increment", "increment_with_ttl", "ttl", "expire")
"""The storage operations the generic steps (`traffik.backends.steps.LockedSteps`) are made of."""


class InMemoryDecisions(InMemoryStore):
    """`decider`, `decide_now`, `evaluate`, `evaluate_all` and `refund_all` of `InMemoryBackend`:
    each runs without an `await` between its reads and its writes, so it is atomic on the
    event loop."""

    _steps: dict[tuple[int, int, int], tuple[Any, Any, tuple[Optional[Step], Optional[Counted]]]]

    _in_place = True
    """Whether the steps made in place decide (`decider`, `decider_all`, `items_decider`):
    False for a subclass replacing a storage operation (`PRIMITIVES`), `evaluate` or
    `evaluate_all`, which they would bypass (`InMemoryBackend.__init_subclass__`)."""
    _generic = False
    """Whether `evaluate`, `evaluate_all` and `refund_all` are the generic steps
    (`LockedSteps`): for a subclass replacing a storage operation, so that they go through
    it."""

    # -- the decision step ---------------------------------------------------------------
    # Each runs without an await between its reads and its writes: atomic on the event loop.

    def _state(self, entry: list[Any] | None) -> list[int] | None:
        if entry is None:
            return None
        state = entry[0]
        return state if isinstance(state, list) else decode_state(state)

    def _save(
        self, key: str, entry: list[Any] | None, state: list[int], ttl_ms: int, now: int
    ) -> list[Any]:
        if entry is None:
            entry = [state, now + ttl_ms]
            self._insert(key, entry, now)
        else:
            entry[0], entry[1] = state, now + ttl_ms
        return entry

    def decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Optional[Callable[[str], Optional[Decision]]]:
        """Decisions of a built-in strategy at one rate and cost, made in place: the
        throttle's hot path.

        The same step as `strategy.decide` (`traffik.backends.inmemory_steps`), without a
        coroutine. A decision is None when it cannot be made here: the backend is not ready,
        or a test replaced `increment_with_ttl` or `evaluate` on this instance
        (`unittest.mock.patch.object`); the caller then awaits `strategy.decide`, which goes
        through them. The rate and cost were checked when the throttle was built (a limited
        rate, a cost the strategy can admit).

        Args:
            strategy: The built-in strategy that decides.
            rate: The rate to apply.
            cost: The units each hit spends.
            kind: How to decide in place (`traffik.strategies.steps.in_place_kind`).

        Returns:
            A callable of a throttle's key (not namespaced) returning the `Decision` or None,
            or None when `kind` cannot be decided in place.
        """
        if not self._in_place:
            return None
        return self._decider(strategy, rate, cost, kind, self._prefix, strategy.suffix)

    def decide_now(
        self, key: str, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Optional[Decision]:
        """One decision made in place on the namespaced `key`, as `decider` makes them.

        Args:
            key: The namespaced key of the client's state.
            strategy: The built-in strategy that decides.
            rate: The rate to apply.
            cost: The units this hit spends.
            kind: How to decide in place (`traffik.strategies.steps.in_place_kind`).

        Returns:
            The `Decision`, or None when it cannot be made here.
        """
        decide = self._decider(strategy, rate, cost, kind, "", "") if self._in_place else None
        return None if decide is None else decide(key)

    def _decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int, prefix: str, suffix: str
    ) -> Optional[Callable[[str], Optional[Decision]]]:
        step = in_place_step(strategy, rate, cost, kind)
        if step is None:
            return None
        own, data = self.__dict__, self._data
        take, give_back = self._mutex.acquire, self._mutex.release  # (`with` costs twice)
        stored_keys: dict[str, str] = {}  # a throttle's keys are few and come again

        def decide(key: str) -> Optional[Decision]:
            if self._status != READY or "increment_with_ttl" in own or "evaluate" in own:
                return None
            now_ms = self.now_ms
            now = time_ns() // 1_000_000 if now_ms is system_ms else now_ms()
            stored = stored_keys.get(key)
            if stored is None:
                if len(stored_keys) >= _STORED_KEYS:
                    stored_keys.clear()
                stored = stored_keys[key] = prefix + key + suffix
            take()
            try:
                entry = data.get(stored)
                if entry is not None:
                    expires = entry[1]
                    if expires is None or expires > now:
                        decision = step(entry, now)
                        if not decision.allowed:
                            entry[3] = now + decision.reset_ms
                        return decision
                    self._remove(stored)
                entry = [None, None]
                decision = step(entry, now)
                if entry[0] is not None:
                    self._insert(stored, entry, now)
                    if not decision.allowed:
                        entry[3] = now + decision.reset_ms
                return decision
            finally:
                give_back()

        return decide

    def decider_all(
        self, strategy: Any, rates: Sequence[Rate], cost: int, kind: int
    ) -> Optional[Callable[[str], Optional[Decision]]]:
        """Decisions of a built-in strategy at several rates, all or nothing, made in place:
        the hot path of a throttle with several rates (`"10/s;1000/day"`).

        The same decisions, states, expiries and refusal marks as `evaluate_all` on the
        throttle's items (`traffik.strategies.steps.items`), without a coroutine: a state
        strategy's step for each rate (`traffik.backends.inmemory_steps`) decides on a copy
        of its entry, written back only when every rate admits (or when it refuses, having
        converted another rate's state: `_joint`); a window counter is decided
        on its count as `evaluate_all` decides it (`counted_step`), and added to then. None when
        a decision cannot be made here, as `decider` answers it (or a test replaced
        `evaluate_all`).

        Args:
            strategy: The built-in strategy that decides.
            rates: The rates to apply, in the throttle's order.
            cost: The units each hit spends.
            kind: How to decide in place (`traffik.strategies.steps.in_place_kind`).

        Returns:
            A callable of a throttle's key (not namespaced) returning the combined
            `Decision` (its `parts` one per rate) or None, or None when `kind` cannot be
            decided in place.
        """
        if (kind != IN_PLACE_COUNTER and kind != IN_PLACE_STATE) or not self._in_place:
            return None
        steps = [self._steps_of(strategy, rate, cost) for rate in rates]
        head = self._prefix
        tails = [strategy.suffix + rate_suffix(index) for index in range(len(rates))]
        joint_now = self._joint_now
        stored_keys: dict[str, list[Row]] = {}

        def decide(key: str) -> Optional[Decision]:
            rows = stored_keys.get(key)
            if rows is None:
                if len(stored_keys) >= _STORED_KEYS:
                    stored_keys.clear()
                rows = stored_keys[key] = [
                    (head + key + tail, step, counted, rate, cost)
                    for tail, (step, counted), rate in zip(tails, steps, rates)
                ]
            return joint_now(rows)

        return decide

    def _joint_now(self, rows: Sequence[Row]) -> Optional[Decision]:
        """`_joint` committing, now, under the store's lock; None when the decision cannot be
        made at once (the backend is not ready, or a test replaced `evaluate_all` on this
        instance)."""
        if self._status != READY or "evaluate_all" in self.__dict__:
            return None
        now_ms = self.now_ms
        now = time_ns() // 1_000_000 if now_ms is system_ms else now_ms()
        mutex = self._mutex
        mutex.acquire()  # (`with` costs twice)
        try:
            return self._joint(rows, now, True)
        finally:
            mutex.release()

    def _steps_of(
        self, strategy: Any, rate: Rate, cost: int
    ) -> tuple[Optional[Step], Optional[Counted]]:
        """How `_joint` decides a built-in strategy at `rate` for hits of `cost`, made once
        per strategy, rate and cost objects: a window counter on its count (`counted_step`),
        or a state strategy's step on an entry (`in_place_step`; its own `transition` for a
        cost beyond its capacity, which the steps are not made for)."""
        seen = (id(strategy), id(rate), cost)
        found = self._steps.get(seen)
        if found is not None and found[0] is strategy and found[1] is rate:
            return found[2]
        made: tuple[Optional[Step], Optional[Counted]]
        if is_counter(strategy):
            made = None, counted_step(rate, cost)
        elif cost <= strategy.capacity(rate):
            made = in_place_step(strategy, rate, cost, IN_PLACE_STATE), None
        else:
            made = transition_step(strategy, rate, cost), None
        if len(self._steps) >= _STEPS_KEPT:
            self._steps.clear()
        self._steps[seen] = (strategy, rate, made)
        return made

    def _joint(self, rows: Sequence[Row], now: int, commit: bool) -> Decision:
        """Rows (a store key, the step of its state strategy or the decision of its window
        counter, its rate and cost: `_steps_of`) decided together at `now`, charged all or
        nothing: each state on a copy of its entry, written back only when every row admits;
        each counter on its count (`counted_step`), added to then. With `commit`, a refusal
        charges nothing (but a lone counter, which counts a cost it could admit), writes
        what each refusing row converted from another rate's state (its trial differs from
        its entry: `traffik.strategies.base.Transition`) and marks each existing entry
        refused until that rate is whole again; without, nothing is written."""
        data = self._data
        parts: list[Decision] = []
        trials: list[tuple[str, Optional[list[Any]], Optional[list[Any]], Rate, int]] = []
        allowed = True
        new = False  # (a row with no entry: `_room_for` makes room for every such row first)
        for name, step, counted, rate, cost in rows:
            trial: Optional[list[Any]] = None
            entry = data.get(name)
            if entry is None:
                new = True
            elif entry[1] is not None and entry[1] <= now:
                self._remove(name)
                entry = None
                new = True
            if counted is not None:
                part = counted(entry, now, commit)
            elif step is not None:
                if entry is None:
                    trial = [None, None]
                else:
                    state = entry[0]
                    trial = [state[:] if type(state) is list else state, entry[1]]
                part = step(trial, now)
            allowed = allowed and part.allowed
            parts.append(part)
            trials.append((name, entry, trial, rate, cost))
        decision = combine(parts, None if allowed else [row[4] for row in rows])
        if commit:
            if allowed:
                if new and len(trials) > 1:
                    self._room_for(trials, now)
                for name, entry, trial, rate, cost in trials:
                    if trial is None:
                        self._add(name, cost, rate.expire, now)
                    elif entry is not None:
                        entry[0], entry[1] = trial[0], trial[1]
                    elif trial[0] is not None:
                        self._insert(name, trial, now)
            else:
                if len(trials) == 1:  # (as `charged` answers it)
                    name, _, trial, rate, cost = trials[0]
                    if counts_refused(trial is None, rate, cost):
                        self._add(name, cost, rate.expire, now)
                for part, (_, entry, trial, _, _) in zip(parts, trials):
                    if entry is not None:
                        if not part.allowed and trial is not None and trial[0] != entry[0]:
                            entry[0], entry[1] = trial[0], trial[1]  # converted (`Transition`)
                        entry[3] = now + part.reset_ms
        decision.at = now
        return decision

    def _room_for(
        self,
        trials: Sequence[tuple[str, Optional[list[Any]], Optional[list[Any]], Rate, int]],
        now: int,
    ) -> None:
        """Room for the keys `_joint`'s admitting decision adds (`trials`: each row's store
        key, existing entry, trial state, rate and cost), made before any is written: when
        the store cannot take them all (`BackendCapacityError`), nothing is written. Room is
        never made by evicting one of the decision's own keys."""
        names: list[str] = []
        size = 0
        for name, entry, trial, _, cost in trials:
            if entry is None and (trial is None or trial[0] is not None):
                names.append(name)
                size += entry_size(name, cost if trial is None else trial[0])
        if not names:
            return
        capacity = self.capacity
        if capacity.full(len(self._data) + len(names) - 1, self._bytes, size):
            keep = {trial[0] for trial in trials}
            capacity.make_room(self, names[0], size, now, len(names), keep)

    async def evaluate(
        self, key: str, strategy: StateStrategy, rate: Rate, cost: int, *, commit: bool = True
    ) -> Decision:
        """The whole read-decide-write of one state, in one synchronous step.

        Args:
            key: The namespaced key of the state.
            strategy: The strategy whose `transition` decides.
            rate: The rate to apply.
            cost: The units this hit spends.
            commit: Whether to save the new state; False only decides.

        Returns:
            The `Decision`.
        """
        if self._generic:
            return await LockedSteps.evaluate(self, key, strategy, rate, cost, commit=commit)
        if self._status != READY:
            await self.ensure()
        with self._mutex:
            now = self.now_ms()
            entry = self._live(key, now)
            decision, new_state, ttl_ms = strategy.transition(self._state(entry), now, rate, cost)
            if commit and new_state is not None:
                entry = self._save(key, entry, new_state, ttl_ms, now)
                decision.at = now
            if commit and not decision.allowed and entry is not None:
                entry[3] = now + decision.reset_ms
            return decision

    async def evaluate_all(self, items: Sequence[Item], *, commit: bool = True) -> Decision:
        """Every item decided, then charged all or nothing, in one synchronous step.

        Args:
            items: The items (key, strategy, rate, cost) to decide together.
            commit: Whether to charge the items; False only decides.

        Returns:
            The combined `Decision` of every item.
        """
        if self._generic:
            return await LockedSteps.evaluate_all(self, items, commit=commit)
        if self._status != READY:
            await self.ensure()
        with self._mutex:
            return self._joint(self._rows(items), self.now_ms(), commit)

    def items_decider(self, items: Sequence[Item]) -> Optional[Callable[[], Optional[Decision]]]:
        """`evaluate_all` (committing) on fixed items, without a coroutine: their rows made
        once. It answers None when the decision cannot be made at once, as `decider` does
        (or a test replaced `evaluate_all` on this instance).

        Args:
            items: The items (key, strategy, rate, cost) to decide together.

        Returns:
            A callable returning the combined `Decision` or None.
        """
        return partial(self._joint_now, self._rows(items)) if self._in_place else None

    def _rows(self, items: Sequence[Item]) -> list[Row]:
        """`_joint`'s rows for `items` (`_steps_of`)."""
        return [
            (item.key, *self._steps_of(item.strategy, item.rate, item.cost), item.rate, item.cost)
            for item in items
        ]

    async def refund_all(self, items: Sequence[Item]) -> None:
        """Every item's cost given back (never past a full budget), in one synchronous step.

        Args:
            items: The items (key, strategy, rate, cost) to refund; a missing key is skipped.
        """
        if self._generic:
            return await LockedSteps.refund_all(self, items)
        if self._status != READY:
            await self.ensure()
        with self._mutex:
            now = self.now_ms()
            for item in items:
                entry = self._live(item.key, now)
                if entry is None:
                    continue
                if is_counter(item.strategy):
                    entry[0] = max(whole_number(entry[0]) - item.cost, 0)
                    continue
                state = self._state(entry)
                if state is not None:
                    new_state, ttl_ms = item.strategy.refund(state, now, item.rate, item.cost)
                    self._save(item.key, entry, new_state, ttl_ms, now)
