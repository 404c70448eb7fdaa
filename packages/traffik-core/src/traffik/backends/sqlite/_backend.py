"""`SQLiteBackend`: rate-limit state in one SQLite file shared by every worker on a host."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from traffik.backends.base import ThrottleBackend, WindowCount
from traffik.backends.lanes import Lanes
from traffik.backends.lifecycle import READY
from traffik.backends.sqlite._database import Database
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
from traffik.backends.sqlite._lock import DEFAULT_LOCK_TTL, Holding, SQLiteLock
from traffik.backends.sqlite._path import database_path
from traffik.backends.sqlite._rewrite import MISSING, Change, RewritingCursor
from traffik.backends.sqlite._rows import Rows, prefix_range
from traffik.backends.sqlite._schema import create
from traffik.backends.sqlite._turns import BUSY
from traffik.backends.url_options import COMMON_URL_OPTIONS, number, whole
from traffik.exceptions import ConfigurationError
from traffik.strategies.base import settled
from traffik.strategies.steps import IN_PLACE_COUNTER, IN_PLACE_STATE

if TYPE_CHECKING:
    import sqlite3

    from traffik.clock import Clock
    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy
    from traffik.strategies.steps import Item

__all__ = ["SQLiteBackend"]

T = TypeVar("T")

_CLEAR_BATCH = 500


def _ms(seconds: float) -> int:
    """Whole milliseconds for a time to live in seconds: rounded to the nearest, at least 1."""
    return max(round(seconds * 1000), 1)


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigurationError(f"SQLiteBackend: {name}={value!r} must be a number of seconds > 0")
    return float(value)


class SQLiteBackend(ThrottleBackend):
    """Rate-limit state in a SQLite file: one host, many worker processes, no server.

    `connection` is a path or a URL: `sqlite:////var/lib/app/traffik.db` (four slashes: an
    absolute path), `sqlite:///traffik.db` (three: relative to the working directory), as
    SQLAlchemy writes them, or `sqlite:///:memory:` (a private database for this process,
    kept until `close()`). The file is created if missing, in write-ahead-log mode with
    `synchronous=NORMAL` (a power cut may lose the last few decisions, never the file). Keep
    it on a local disk: write-ahead logging needs memory shared by the processes (no NFS).

    Every worker that opens the same file shares its counters: `uvicorn --workers N`,
    gunicorn, or several apps on one host. So the backend is persistent by default
    (`persistent=True`, like the network backends): one worker shutting down must not reset
    the others' counters, and the state survives a restart of the app. Pass
    `persistent=False` to have `backend.lifespan` clear the namespace on shutdown.

    Every built-in strategy decides in one `BEGIN IMMEDIATE` transaction (read, transition,
    write, commit), atomic across processes and threads; so do several rates decided as one
    (`evaluate_all`), refunds and `increment_with_ttl`. A throttle's decision made at once on
    a row that exists is one `UPDATE` that runs the transition as it rewrites the row
    (`RewritingCursor`): as atomic, with the same outcome, in one statement instead of four.
    Time is this host's clock (or `clock=`), which every worker on the host shares. Each step
    runs on the event loop and takes tens of microseconds. Writes that tasks of one loop ask
    for in the same loop iteration share a transaction: the first is made at once, the others
    in the next iteration, in their order, each in a savepoint (16 at most per transaction),
    so each one's outcome is the one it would get one after another. While another process
    holds the write lock the task waits without blocking the loop, for at most `timeout`
    seconds from when it asked (also when it waits behind other hits on its key), then fails
    with `BackendConnectionError` (and the throttle's `on_error` decides).
    Connections are opened per process and per event loop, never carried across a fork.

    At most `max_keys` rows are kept in the file: a new key beyond that is refused with
    `BackendCapacityError` while existing counters keep counting. Expired rows are deleted a
    chunk at a time as new keys are written, a pass every `sweep_interval` seconds. `clear()`
    and `reset()` delete this namespace's rows only. A corrupt, unreadable or locked file is a
    `BackendError` naming its path. A file deleted or replaced while in use is noticed within
    a second by each event loop's connection, which opens the path again (creating the file
    and its tables): workers never count in two files for longer than that. A removed
    directory fails each step with an error naming the path until it is back.

    Args:
        connection: The database: a path (a string or an `os.PathLike`) or a `sqlite://`
            URL, as above (no query string: `from_url` reads the settings in
            `url_options` from one).
        namespace: The prefix of every key this backend writes (a non-empty string).
        persistent: Whether the namespace survives the end of a backend context
            (`backend.lifespan`); False clears it on exit.
        timeout: Seconds a step waits for another process's write lock before it fails with
            `BackendConnectionError` (> 0).
        max_keys: The most rows kept in the file (a whole number >= 1); a new key beyond
            that is refused with `BackendCapacityError`.
        sweep_interval: Seconds between two passes that delete expired rows (> 0).
        clock: The backend's time source (seconds); None for the system clock.
        **defaults: Defaults for the throttles on this backend that set none
            (`BackendDefaults`): `identifier`, `handle_throttled`, `on_error`, `lock_ttl`,
            `lock_blocking`, `lock_blocking_timeout`, `shadow`, `cache_refusals`; and
            `fail_fast` (`ThrottleBackend`: whether entering the backend raises when the
            store cannot be reached).

    Raises:
        ConfigurationError: When `connection` names no database (or has a query string),
            or `max_keys`, `timeout`, `sweep_interval`, `namespace` or a default is
            invalid.
        TypeError: When a keyword in `defaults` is unknown.
    """

    default_namespace = "sqlite"
    caches_refusals = True
    url_options = MappingProxyType(
        {**COMMON_URL_OPTIONS, "timeout": number, "max_keys": whole, "sweep_interval": number}
    )
    """What a `sqlite:` URL's query may set, for `from_url`
    (`sqlite:////var/lib/app/traffik.db?timeout=2&max_keys=100000`)."""

    def __init__(
        self,
        connection: Any,
        *,
        namespace: str = "sqlite",
        persistent: bool = True,
        timeout: float = 1.0,
        max_keys: int = 1_000_000,
        sweep_interval: float = 10.0,
        clock: Clock | None = None,
        **defaults: Any,
    ) -> None:
        path = database_path(connection)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(
                f"SQLiteBackend(max_keys={max_keys!r}): must be a whole number >= 1"
            )
        timeout = _seconds("timeout", timeout)
        sweep_ms = _ms(_seconds("sweep_interval", sweep_interval))
        super().__init__(
            connection, namespace=namespace, persistent=persistent, clock=clock, **defaults
        )
        self.path = path
        self.timeout = timeout
        self.max_keys = max_keys
        self._db = Database(path, timeout, RewritingCursor)
        self._rows = Rows(max_keys, sweep_ms, repr(self))
        self._holdings: dict[str, Holding] = {}
        self._lanes: Lanes[Waiting, Decision | None] = Lanes()
        """The keys with a throttle's round in flight (`waited_decider`)."""
        cls = type(self)
        self._steps_own = (
            cls.evaluate is SQLiteBackend.evaluate
            and cls.increment_with_ttl is SQLiteBackend.increment_with_ttl
        )
        """Whether `decide_now` makes the steps a subclass could have replaced."""

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r}, namespace={self.namespace!r})"

    def _key(self, key: str) -> str:
        """`key` inside this namespace, so `clear()` finds every row the backend wrote."""
        return key if key.startswith(self._prefix) else self._prefix + key

    # -- lifecycle ---------------------------------------------------------------------

    async def _open(self) -> None:
        await self._db.prepare(create)

    async def _close(self) -> None:
        self._holdings.clear()
        self._db.close()

    async def _ping(self) -> bool:
        return bool(await self._db.run("pinging it", _select_one))

    # -- storage: each operation one step of `Rows` (`_step`) ----------------------------

    def _step(self, cursor: sqlite3.Cursor, step: Callable[..., T], *args: Any) -> T:
        """`step(rows, cursor, now, *args)`, `now` read once the transaction began."""
        return step(self._rows, cursor, self.now_ms(), *args)

    async def get(self, key: str) -> str | None:
        """Read a key's value.

        Args:
            key: The key (namespaced if it is not already).

        Returns:
            The value, or None when the key is missing or expired.
        """
        if not self.initialized:
            await self.ensure()
        return await self._db.run("reading a key", self._step, Rows.get, self._key(key))

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        """Store `value` under `key`, replacing any value and expiry.

        Args:
            key: The key (namespaced if it is not already).
            value: The value, stored as a string.
            expire: Seconds until the key expires (at least 1 ms), or None for no expiry.
        """
        if not self.initialized:
            await self.ensure()
        items = {self._key(key): str(value)}
        ttl_ms = None if expire is None else _ms(expire)
        await self._db.write("writing a key", self._step, Rows.set_many, items, ttl_ms)

    async def delete(self, key: str) -> bool:
        """Delete a key.

        Args:
            key: The key (namespaced if it is not already).

        Returns:
            True when a live key was deleted.
        """
        if not self.initialized:
            await self.ensure()
        return await self._db.write("deleting a key", self._step, Rows.delete_live, self._key(key))

    async def increment(self, key: str, amount: int = 1) -> int:
        """Add `amount` to a counter, in one transaction; a missing key starts from 0.

        Args:
            key: The key (namespaced if it is not already).
            amount: What to add (negative to subtract).

        Returns:
            The counter's new value.
        """
        if not self.initialized:
            await self.ensure()
        count, _ = await self._db.write(
            "counting", self._step, Rows.count, self._key(key), amount, None
        )
        return count

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        """Add `amount`; a key created by this call lives `ttl` seconds. One transaction.

        Args:
            key: The key (namespaced if it is not already).
            amount: What to add.
            ttl: Seconds a key created here lives (at least 1 ms).

        Returns:
            The counter's new value, a `WindowCount` that also carries the milliseconds
            until the key is gone (`ttl_ms`).
        """
        if not self.initialized:
            await self.ensure()
        return await self._db.write(
            "counting", self._step, _window_count, self._key(key), amount, _ms(ttl)
        )

    async def expire(self, key: str, seconds: float) -> bool:
        """Set a live key to expire after `seconds`.

        Args:
            key: The key (namespaced if it is not already).
            seconds: Seconds from now until the key expires (at least 1 ms).

        Returns:
            True when the key exists.
        """
        if not self.initialized:
            await self.ensure()
        return await self._db.write(
            "setting an expiry", self._step, Rows.expire, self._key(key), _ms(seconds)
        )

    async def ttl(self, key: str) -> float | None:
        """Milliseconds until `key` is gone (it exists for `ttl - 1` more ms).

        Args:
            key: The key (namespaced if it is not already).

        Returns:
            The milliseconds left, or None when the key is missing or immortal.
        """
        if not self.initialized:
            await self.ensure()
        return await self._db.run("reading an expiry", self._step, Rows.ttl, self._key(key))

    async def multi_get(self, *keys: str) -> list[str | None]:
        """Read several keys in one read.

        Args:
            *keys: The keys (each namespaced if it is not already).

        Returns:
            Each key's value, or None, in the order given.
        """
        if not keys:
            return []
        if not self.initialized:
            await self.ensure()
        names = [self._key(k) for k in keys]
        return await self._db.run("reading keys", self._step, Rows.get_many, names)

    async def multi_set(self, items: Mapping[str, str], expire: float | None = None) -> None:
        """Store several values in one transaction.

        Args:
            items: The keys and their values (stored as strings).
            expire: Seconds until each key expires, or None for no expiry.
        """
        if not items:
            return
        if not self.initialized:
            await self.ensure()
        pairs = {self._key(key): str(value) for key, value in items.items()}
        ttl_ms = None if expire is None else _ms(expire)
        await self._db.write("writing keys", self._step, Rows.set_many, pairs, ttl_ms)

    async def scan(self, prefix: str, limit: int | None = None) -> list[str]:
        """The live keys of this namespace that start with `prefix`, in order, at most `limit`.

        Args:
            prefix: The key prefix (namespaced if it is not already).
            limit: The most keys to return, or None for all.

        Returns:
            The matching keys, in order.
        """
        if not self.initialized:
            await self.ensure()
        low, high = prefix_range(self._key(prefix))
        return await self._db.run("listing keys", self._step, Rows.scan, low, high, limit)

    async def clear(self) -> None:
        """Delete this namespace's rows, a batch per transaction (others write in between)."""
        if not self.initialized:
            await self.ensure()
        low, high = prefix_range(self._prefix)
        while (
            await self._db.write(
                "clearing its namespace", Rows.clear_batch, low, high, _CLEAR_BATCH
            )
            == _CLEAR_BATCH
        ):
            await asyncio.sleep(0)

    # -- locks -------------------------------------------------------------------------

    def get_lock(self, name: str, ttl: float | None = None, reentrant: bool = False) -> SQLiteLock:
        """A lock held in the database file, shared by every process that opens it.

        Args:
            name: The lock's name (namespaced if it is not already).
            ttl: Seconds after which a held lock expires; None for the default (5 seconds).
            reentrant: Whether the holder may acquire it again.

        Returns:
            The lock.
        """
        return SQLiteLock(
            self, self._key(name), DEFAULT_LOCK_TTL if ttl is None else ttl, reentrant
        )

    async def _take_lock(self, name: str, token: str, ttl: float) -> bool:
        if not self.initialized:
            await self.ensure()
        return await self._db.write("taking a lock", self._step, Rows.take, name, token, _ms(ttl))

    async def _drop_lock(self, name: str, token: str) -> bool:
        if not self.initialized:
            await self.ensure()
        return await self._db.write("releasing a lock", self._step, Rows.drop, name, token)

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


def _window_count(
    rows: Rows, cursor: sqlite3.Cursor, now: int, key: str, amount: int, ttl_ms: int
) -> WindowCount:
    """`Rows.count` as `increment_with_ttl` answers it, saying when it counted (`at`: what
    `FixedWindow` makes its decision's, for refunds)."""
    count = WindowCount(*rows.count(cursor, now, key, amount, ttl_ms))
    count.at = now  # type: ignore[attr-defined]
    return count


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


def _select_one(cursor: sqlite3.Cursor) -> Any:
    return cursor.execute("SELECT 1").fetchone()
