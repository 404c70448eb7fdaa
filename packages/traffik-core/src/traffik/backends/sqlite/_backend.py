"""`SQLiteBackend`: rate-limit state in one SQLite file shared by every worker on a host."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from traffik.backends.base import ThrottleBackend, WindowCount
from traffik.backends.sqlite._database import Database
from traffik.backends.sqlite._decisions import decide, decide_all, refund_all
from traffik.backends.sqlite._lock import DEFAULT_LOCK_TTL, Holding, SQLiteLock
from traffik.backends.sqlite._path import database_path
from traffik.backends.sqlite._rows import SCHEMA, Rows, prefix_range
from traffik.exceptions import ConfigurationError

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
    (`evaluate_all`), refunds and `increment_with_ttl`.
    Time is this host's clock (or `clock=`), which every worker on the host shares. Each step
    runs on the event loop and takes tens of microseconds; while another process holds the
    write lock the task waits without blocking the loop, for at most `timeout` seconds, then
    fails with `BackendConnectionError` (and the throttle's `on_error` decides). Connections
    are opened per process and per event loop, never carried across a fork.

    At most `max_keys` rows are kept in the file: a new key beyond that is refused with
    `BackendCapacityError` while existing counters keep counting. Expired rows are deleted a
    chunk at a time as new keys are written, a pass every `sweep_interval` seconds. `clear()`
    and `reset()` delete this namespace's rows only. A corrupt, unreadable or locked file is a
    `BackendError` naming its path.
    """

    default_namespace = "sqlite"
    caches_refusals = True

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
        self._db = Database(path, timeout)
        self._rows = Rows(max_keys, sweep_ms, repr(self))
        self._holdings: dict[str, Holding] = {}

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r}, namespace={self.namespace!r})"

    def _key(self, key: str) -> str:
        """`key` inside this namespace, so `clear()` finds every row the backend wrote."""
        return key if key.startswith(self._prefix) else self._prefix + key

    # -- lifecycle ---------------------------------------------------------------------

    async def _open(self) -> None:
        await self._db.prepare(SCHEMA)

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
        if not self.initialized:
            await self.ensure()
        return await self._db.run("reading a key", self._step, Rows.get, self._key(key))

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        if not self.initialized:
            await self.ensure()
        items = {self._key(key): str(value)}
        ttl_ms = None if expire is None else _ms(expire)
        await self._db.write("writing a key", self._step, Rows.set_many, items, ttl_ms)

    async def delete(self, key: str) -> bool:
        if not self.initialized:
            await self.ensure()
        return await self._db.write("deleting a key", self._step, Rows.delete_live, self._key(key))

    async def increment(self, key: str, amount: int = 1) -> int:
        if not self.initialized:
            await self.ensure()
        count, _ = await self._db.write(
            "counting", self._step, Rows.count, self._key(key), amount, None
        )
        return count

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        """Add `amount`; a key created by this call lives `ttl` seconds. One transaction."""
        if not self.initialized:
            await self.ensure()
        return WindowCount(
            *await self._db.write(
                "counting", self._step, Rows.count, self._key(key), amount, _ms(ttl)
            )
        )

    async def expire(self, key: str, seconds: float) -> bool:
        if not self.initialized:
            await self.ensure()
        return await self._db.write(
            "setting an expiry", self._step, Rows.expire, self._key(key), _ms(seconds)
        )

    async def ttl(self, key: str) -> float | None:
        if not self.initialized:
            await self.ensure()
        return await self._db.run("reading an expiry", self._step, Rows.ttl, self._key(key))

    async def multi_get(self, *keys: str) -> list[str | None]:
        if not keys:
            return []
        if not self.initialized:
            await self.ensure()
        names = [self._key(k) for k in keys]
        return await self._db.run("reading keys", self._step, Rows.get_many, names)

    async def multi_set(self, items: Mapping[str, str], expire: float | None = None) -> None:
        if not items:
            return
        if not self.initialized:
            await self.ensure()
        pairs = {self._key(key): str(value) for key, value in items.items()}
        ttl_ms = None if expire is None else _ms(expire)
        await self._db.write("writing keys", self._step, Rows.set_many, pairs, ttl_ms)

    async def scan(self, prefix: str, limit: int | None = None) -> list[str]:
        """The live keys of this namespace that start with `prefix`, in order, at most `limit`."""
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

    async def evaluate(
        self, key: str, strategy: StateStrategy, rate: Rate, cost: int, *, commit: bool = True
    ) -> Decision:
        """Read, `strategy.transition`, write: one `BEGIN IMMEDIATE` transaction (a plain
        read when not committing)."""
        if not self.initialized:
            await self.ensure()
        args = (decide, self._key(key), strategy, rate, cost, commit)
        if commit:
            return await self._db.write("deciding", self._step, *args)
        return await self._db.run("reading a decision", self._step, *args)

    async def evaluate_all(self, items: Sequence[Item], *, commit: bool = True) -> Decision:
        """Every item decided, then charged all or nothing: one `BEGIN IMMEDIATE` transaction."""
        if not self.initialized:
            await self.ensure()
        args = (decide_all, items, [self._key(item.key) for item in items], commit)
        if commit:
            return await self._db.write("deciding", self._step, *args)
        return await self._db.run("reading a decision", self._step, *args)

    async def refund_all(self, items: Sequence[Item]) -> None:
        """Every item's cost given back (never past a full budget): one transaction."""
        if not self.initialized:
            await self.ensure()
        keys = [self._key(item.key) for item in items]
        await self._db.write("refunding", self._step, refund_all, items, keys)


def _select_one(cursor: sqlite3.Cursor) -> Any:
    return cursor.execute("SELECT 1").fetchone()
