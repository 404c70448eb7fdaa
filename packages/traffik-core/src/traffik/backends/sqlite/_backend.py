"""`SQLiteBackend`: rate-limit state in one SQLite file shared by every worker on a host."""

from __future__ import annotations

import asyncio
import math
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from traffik.backends.base import ThrottleBackend
from traffik.backends.lanes import Lanes
from traffik.backends.sqlite._backend_decisions import SQLiteDecisions, Waiting
from traffik.backends.sqlite._backend_storage import ms
from traffik.backends.sqlite._database import Database
from traffik.backends.sqlite._lock import Holding
from traffik.backends.sqlite._path import database_path
from traffik.backends.sqlite._rewrite import RewritingCursor
from traffik.backends.sqlite._rows import Rows, prefix_range
from traffik.backends.sqlite._schema import create, readable
from traffik.backends.url_options import COMMON_URL_OPTIONS, number, whole
from traffik.exceptions import ConfigurationError

if TYPE_CHECKING:
    import sqlite3

    from traffik.clock import Clock
    from traffik.decision import Decision

__all__ = ["SQLiteBackend", "SQLiteReader"]

_CLEAR_BATCH = 500


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigurationError(f"SQLiteBackend: {name}={value!r} must be a number of seconds > 0")
    return float(value)


class SQLiteBackend(SQLiteDecisions, ThrottleBackend):
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
    `BackendError` naming its path: a `BackendConnectionError` (an outage, which entering the
    backend starts through unless `fail_fast`) when it cannot be opened or written for now
    (its directory missing, read-only, locked), and a bad setting, which fails the start,
    when it is no Traffik store. A file deleted or replaced while in use is noticed within
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
    unreachable_advice = (
        "check the file: its path and directory, that this process may write them and its "
        "-wal and -shm files, the disk's free space, and what holds its lock"
    )
    url_options = MappingProxyType(
        {**COMMON_URL_OPTIONS, "timeout": number, "max_keys": whole, "sweep_interval": number}
    )
    """What a `sqlite:` URL's query may set, for `from_url`
    (`sqlite:////var/lib/app/traffik.db?timeout=2&max_keys=100000`)."""
    _read_only: ClassVar[bool] = False
    """Whether it only reads its file (`SQLiteReader`)."""

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
        sweep_ms = ms(_seconds("sweep_interval", sweep_interval))
        super().__init__(
            connection, namespace=namespace, persistent=persistent, clock=clock, **defaults
        )
        self.path = path
        self.timeout = timeout
        self.max_keys = max_keys
        self._db = Database(path, timeout, RewritingCursor, self._read_only)
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

    # -- lifecycle ---------------------------------------------------------------------

    async def _open(self) -> None:
        await self._db.prepare(readable if self._read_only else create)

    async def _close(self) -> None:
        self._holdings.clear()
        self._db.close()

    async def _ping(self) -> bool:
        return bool(await self._db.run("pinging it", _select_one))

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


class SQLiteReader(SQLiteBackend):
    """A `SQLiteBackend` that only reads its file: `python -m traffik keys` and `inspect`.

    It never creates the file or its tables, nor switches its journal mode, nor leaves -wal
    and -shm files beside a file it may not write (`reading_uri`), and it reads while
    another process holds the write lock. A file without Traffik's tables has no keys; one
    whose tables are another app's, or of another schema version, is refused. A write fails
    as on a read-only file.
    """

    _read_only = True


def _select_one(cursor: sqlite3.Cursor) -> Any:
    return cursor.execute("SELECT 1").fetchone()
