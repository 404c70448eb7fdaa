"""`SQLiteDecisions`: `SQLiteBackend`'s decisions: made at once on the loop, waited in turn, or evaluated in a transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Callable

from traffik.backends.lanes import Lanes
from traffik.backends.lifecycle import READY
from traffik.backends.sqlite._backend_storage import SQLiteStorage
from traffik.backends.sqlite._decisions import (
    Hit,
    count_hit,
    counter_change,
    decide,
    decide_all,
    decide_in_turn,
    refund_all,
    state_change,
)
from traffik.backends.sqlite._errors import locked
from traffik.backends.sqlite._rewrite import MISSING, Change, RewritingCursor
from traffik.backends.sqlite._rows import Rows
from traffik.backends.sqlite._turns import BUSY
from traffik.strategies.base import settled
from traffik.strategies.steps import IN_PLACE_COUNTER, IN_PLACE_STATE

if TYPE_CHECKING:
    import sqlite3

    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy
    from traffik.strategies.steps import Item

__all__ = ["SQLiteDecisions", "Waiting"]


class SQLiteDecisions(SQLiteStorage):
    """`decide_now`, `decider`, `waited_decider`, `evaluate`, `evaluate_all` and `refund_all`
    of `SQLiteBackend`."""

    _lanes: Lanes[Waiting, Decision | None]
    _steps_own: bool

    # -- the decision steps (`_decisions`) -----------------------------------------------

    def decide_now(
        self, key: str, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Decision | None:
        """One decision of a built-in strategy on its namespaced `key`, with no coroutine,
        run at once on the loop: what `strategy.decide`'s transaction makes (a `FixedWindow`
        counter as `Rows.count` keeps it, or a state transition), as one `UPDATE` of the
        key's row (`RewritingCursor.rewrite`), or, with no row yet, in that transaction.

        The throttle's hot path (see `ThrottleBackend.decide_now`). Returns None when it
        cannot be made at once: the backend is not ready, a test replaced
        `increment_with_ttl` or `evaluate` on this instance, the file is busy (another
        process holds its write lock, or this loop's tasks wait for it), another task
        wrote in this loop iteration, or hits on `key` wait to be decided together
        (`waited_decider`); the caller then awaits the waited decider (or
        `strategy.decide`), which waits its turn behind them, or is decided with the others
        of this iteration in one transaction in the next. Errors are raised as
        `BackendError`.

        Args:
            key: The namespaced key of the client's state.
            strategy: The built-in strategy that decides.
            rate: The rate to apply.
            cost: The units this hit spends.
            kind: `IN_PLACE_COUNTER` (a counter) or `IN_PLACE_STATE` (a state transition).

        Returns:
            The `Decision`, or None when it cannot be made at once.
        """
        decide = self._decider(strategy, rate, cost, kind, "", "")
        return None if decide is None else decide(key)

    def decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Callable[[str], Decision | None] | None:
        """`decide_now` for one strategy, rate and cost, made once for a throttle's hot
        path (see `ThrottleBackend.decider`): what the decision runs is worked out here,
        not per hit.

        Args:
            strategy: The built-in strategy that decides.
            rate: The rate to apply.
            cost: The units each hit spends.
            kind: `IN_PLACE_COUNTER` (a counter) or `IN_PLACE_STATE` (a state transition).

        Returns:
            A callable of a throttle's key (not namespaced) returning the `Decision`, or
            None when it cannot be made at once; None for a kind it does not decide.
        """
        return self._decider(strategy, rate, cost, kind, self._prefix, strategy.suffix)

    def _decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int, prefix: str, suffix: str
    ) -> Callable[[str], Decision | None] | None:
        """`decide_now` on `prefix + key + suffix` for one strategy, rate and cost: the
        row's change and what makes a missing row are made here, once; a hit runs one
        closure, the `UPDATE` and its callbacks."""
        made = self._decision(strategy, rate, cost, kind)
        if made is None:
            return None
        doing, change, missing = made
        steps_own, own, in_flight = self._steps_own, self.__dict__, self._lanes.in_flight()
        now_atomic = self._db.now_atomic

        def decide(key: str) -> Decision | None:
            key = prefix + key + suffix
            if (  # `_direct`, inlined; and hits on the key wait: this one goes behind them
                not steps_own
                or self._status != READY
                or "increment_with_ttl" in own
                or "evaluate" in own
                or key in in_flight
            ):
                return None
            found: Any = now_atomic(doing, _rewritten, key, change, missing)
            return None if found is BUSY else found

        return decide

    def _decision(
        self, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> tuple[str, Change, Missing] | None:
        """What one decision of `kind` is doing, the row's change (`RewritingCursor.rewrite`)
        and the step that decides when there is no row yet (in a transaction, all or
        nothing: it creates the row); None for a kind not decided here."""
        db, step = self._db, self._step
        if kind == IN_PLACE_COUNTER:

            def counted(cursor: sqlite3.Cursor, key: str) -> Decision:
                return db.atomically(cursor, step, count_hit, key, rate, cost)

            return "counting", counter_change(self, rate, cost), counted
        if kind == IN_PLACE_STATE:

            def transit(cursor: sqlite3.Cursor, key: str) -> Decision:
                return db.atomically(cursor, step, decide, key, strategy, rate, cost, True)

            return "deciding", state_change(self, strategy, rate, cost), transit
        return None

    def _direct(self) -> bool:
        """Whether this backend's own steps decide (it is ready, and no test replaced
        `increment_with_ttl` or `evaluate` on this instance)."""
        own = self.__dict__
        return (
            self._steps_own
            and self._status == READY
            and "increment_with_ttl" not in own
            and "evaluate" not in own
        )

    def waited_decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Callable[[str], Awaitable[Decision]] | None:
        """`decide_now`'s transaction for when it cannot be made at once (the file is busy,
        or the request goes with the others of its loop iteration): awaited in turn through
        the same line as `strategy.decide`, without the strategy's checks per hit.

        Hits on one key that arrive while one of them waits for its transaction wait in
        turn, then are decided together in the next one (`decide_in_turn`: one read, each
        hit's transition in arrival order, one write), as if sequential
        (`traffik.backends.lanes`); meanwhile `decide_now` leaves that key's hits to them.
        Each hit still fails `timeout` after it asked, wherever it waits then (behind the
        transaction in flight, or in its own round): a round waits for the file until its
        last hit's time is up, and leaves out (uncharged) the hits whose time is up when it
        gets the file.

        Args:
            strategy: The built-in strategy that decides.
            rate: The rate to apply.
            cost: The units each hit spends.
            kind: `IN_PLACE_COUNTER` (a counter) or `IN_PLACE_STATE` (a state transition).

        Returns:
            A coroutine function of a throttle's key (not namespaced) returning the
            `Decision` (through `strategy.decide` while `decide_now` would not decide), or
            None for a kind it does not decide or a hit decided without the store.
        """
        made = self._decision(strategy, rate, cost, kind)
        if made is None or settled(strategy, rate, cost) is not None:
            return None
        doing, change, missing = made
        prefix, suffix, db = self._prefix, strategy.suffix, self._db
        strategy_decide, lanes = strategy.decide, self._lanes

        async def in_turn(waiting: list[Waiting]) -> list[Decision | None]:
            return await db.write(
                doing, self._step, _decide_in_time, waiting, deadline=waiting[-1][1]
            )

        async def decide_hit(key: str) -> Decision:
            if not self._direct():
                return await strategy_decide(key, rate, self, cost)
            stored = prefix + key + suffix
            deadline = db.deadline()
            queued = lanes.join(stored, ((stored, strategy, rate, cost, kind), deadline), in_turn)
            if queued is not None:  # a hit on this key waits for its transaction: the next
                try:
                    decision = await asyncio.wait_for(queued, db.timeout)
                except asyncio.TimeoutError:
                    decision = None
                if decision is None:  # its time was up before its round got the file
                    raise locked(db.path, db.timeout, doing)
                return decision
            try:
                return await db.write_atomic(doing, _rewritten, stored, change, missing)
            finally:
                lanes.close(stored)

        return decide_hit

    async def evaluate(
        self, key: str, strategy: StateStrategy, rate: Rate, cost: int, *, commit: bool = True
    ) -> Decision:
        """Read, `strategy.transition`, write: one `BEGIN IMMEDIATE` transaction (a plain
        read when not committing).

        Args:
            key: The key of the state (namespaced if it is not already).
            strategy: The strategy whose `transition` decides.
            rate: The rate to apply.
            cost: The units this hit spends.
            commit: Whether to write the new state; False only reads and decides.

        Returns:
            The `Decision`.
        """
        if not self.initialized:
            await self.ensure()
        args = (decide, self._key(key), strategy, rate, cost, commit)
        if commit:
            return await self._db.write("deciding", self._step, *args)
        return await self._db.run("reading a decision", self._step, *args)

    async def evaluate_all(self, items: Sequence[Item], *, commit: bool = True) -> Decision:
        """Every item decided, then charged all or nothing: one `BEGIN IMMEDIATE` transaction.

        Args:
            items: The items (key, strategy, rate, cost) to decide together.
            commit: Whether to charge the items; False only reads and decides.

        Returns:
            The combined `Decision` of every item.
        """
        if not self.initialized:
            await self.ensure()
        args = (decide_all, items, [self._key(item.key) for item in items], commit)
        if commit:
            return await self._db.write("deciding", self._step, *args)
        return await self._db.run("reading a decision", self._step, *args)

    async def refund_all(self, items: Sequence[Item]) -> None:
        """Every item's cost given back (never past a full budget): one transaction.

        Args:
            items: The items (key, strategy, rate, cost) to refund.
        """
        if not self.initialized:
            await self.ensure()
        keys = [self._key(item.key) for item in items]
        await self._db.write("refunding", self._step, refund_all, items, keys)


Waiting = tuple[Hit, float]
"""A throttle hit waiting for its round, and when its time is up (the loop's time)."""


def _decide_in_time(
    rows: Rows, cursor: sqlite3.Cursor, now: int, waiting: list[Waiting]
) -> list[Decision | None]:
    """`decide_in_turn` for the hits whose time is not up yet (None for the others, which
    are neither decided nor charged)."""
    at = asyncio.get_running_loop().time()
    live = [hit for hit, deadline in waiting if deadline > at]
    decided = iter(decide_in_turn(rows, cursor, now, live) if live else ())
    return [next(decided) if deadline > at else None for _, deadline in waiting]


Missing = Callable[["sqlite3.Cursor", str], "Decision"]
"""`missing(cursor, key)`: the decision on a key with no row yet, in a transaction (or a
savepoint of the batch's) that creates it."""


def _rewritten(cursor: RewritingCursor, key: str, change: Change, missing: Missing) -> Decision:
    """A decision as one statement, its row changed by the `UPDATE` that writes it, or, with
    no row yet, `missing` all or nothing: an atomic step (`Database.write_atomic`)."""
    found = cursor.rewrite(key, change)
    return missing(cursor, key) if found is MISSING else found
