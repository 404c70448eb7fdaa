"""The stores under test: in memory, SQLite, Redis and Memcached, each with its raw round trip and command counter."""

from __future__ import annotations

import importlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Awaitable
from typing import Any, Callable, Optional

from benchmarks import servers
from benchmarks.asgi import Target
from benchmarks.settings import Settings
from benchmarks.timing import CPU_TIME, WALL_TIME, Clock
from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend

__all__ = ["STORES", "MemcachedStore", "MemoryStore", "RedisStore", "SQLiteStore", "Store"]

_MEMCACHED_COMMANDS = (
    # `cas` is counted in cmd_set already (and again in cas_hits/cas_misses/cas_badval);
    # a multi-key get counts one cmd_get per key.
    b"cmd_get",
    b"cmd_set",
    b"cmd_touch",
    b"incr_hits",
    b"incr_misses",
    b"decr_hits",
    b"decr_misses",
    b"delete_hits",
    b"delete_misses",
)


def _backend_class(module: str, name: str) -> Any:
    """The backend class, or `ImportError` saying what is missing."""
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError as exc:
        raise ImportError(f"{module} does not import ({exc})") from exc
    if found is None:
        raise ImportError(f"{module} has no {name} yet")
    return found


class Store:
    """A store the throttles run on. `open()` sets `available` and `detail` (what it is, or
    why it is not available); `round_trip` is the floor's raw round trip (none in memory).
    `clock` times requests: CPU time in memory, wall time where a request waits on a server
    or a file. `url` (once open) reaches the same store from another process (`from_url`);
    `counts_commands` says whether `count_commands` can count a server's commands."""

    name = ""
    raw_name = ""
    clock: Clock = WALL_TIME
    counts_commands = False
    url = ""

    def __init__(self) -> None:
        self.available = False
        self.detail = "not opened"
        self.server: Optional[servers.Server] = None
        self.sequential_cpu: Optional[int] = None
        """The CPU its sequential groups ran on with the server (`servers.one_cpu`), if any."""

    async def open(self) -> None:
        raise NotImplementedError

    def pinned_pid(self, settings: Settings) -> Optional[int]:
        """The server process its sequential groups share a CPU with (`servers.one_cpu`):
        one this run started, unless `settings` spread them (`--spread-cpus`)."""
        if self.server is None or not settings.one_cpu:
            return None
        return self.server.pid

    def backend(self, namespace: str) -> ThrottleBackend:
        raise NotImplementedError

    async def round_trip(self) -> None:
        """The raw round trip, with the same client library the backend uses."""
        raise NotImplementedError(f"{self.name} has no round trip")

    def raw(self) -> Optional[Target]:
        """The raw round trip on its own, as a measured variant (None in memory)."""
        if not self.raw_name:
            return None

        async def one(i: int) -> None:
            await self.round_trip()

        return Target(self.raw_name, one)

    async def count_commands(self, work: Callable[[], Awaitable[Any]]) -> int:
        """How many commands the server received from clients while `work` ran."""
        raise NotImplementedError(f"{self.name} has no server to count commands on")

    async def close(self) -> None:
        if self.server is not None:
            self.server.stop()


class MemoryStore(Store):
    name = "memory"
    clock = CPU_TIME
    url = "memory://"

    async def open(self) -> None:
        self.available, self.detail = True, "InMemoryBackend, in this process"

    def backend(self, namespace: str) -> ThrottleBackend:
        return InMemoryBackend(namespace=namespace)


async def client_commands(stats: Any, raw: Any, work: Callable[[], Awaitable[Any]]) -> int:
    """The commands Redis received from clients while `work` ran: counted with `MONITOR` on
    `stats`, between two `ECHO` markers sent by `raw` (two redis-py clients), leaving out the
    commands that scripts run (`INFO stats` counts those too: an `EVALSHA` doing GET and SET
    is 3)."""
    marker = f"traffik-bench-{os.getpid()}-{id(work)}"
    async with stats.monitor() as monitor:
        await raw.echo(marker)
        await work()
        await raw.echo(marker)
        seen, counted = 0, 0
        while seen < 2:
            command = await monitor.next_command()
            if marker in command["command"]:
                seen += 1
            elif seen == 1 and command["client_type"] != "lua":
                counted += 1
    return counted


class RedisStore(Store):
    """`RedisBackend`; the floor is redis-py's `EVALSHA` of `return 1`; counts from `MONITOR`."""

    name = "redis"
    raw_name = "raw EVALSHA"
    counts_commands = True

    async def open(self) -> None:
        self._class = _backend_class("traffik.backends.redis", "RedisBackend")
        from redis.asyncio import Redis

        self.server = servers.start("redis")
        self._stats = Redis.from_url(self.server.url)
        self._raw = Redis.from_url(self.server.url)
        self._sha = await self._raw.script_load("return 1")
        version = (await self._stats.info("server"))["redis_version"]
        self.url = self.server.url
        self.available, self.detail = True, f"Redis {version}: {self.server.describe()}"

    def backend(self, namespace: str) -> ThrottleBackend:
        assert self.server is not None
        backend: ThrottleBackend = self._class.from_url(self.server.url, namespace=namespace)
        return backend

    async def round_trip(self) -> None:
        await self._raw.evalsha(self._sha, 1, "traffik-bench:raw")

    async def count_commands(self, work: Callable[[], Awaitable[Any]]) -> int:
        return await client_commands(self._stats, self._raw, work)

    async def close(self) -> None:
        for client in (getattr(self, "_stats", None), getattr(self, "_raw", None)):
            if client is not None:
                await client.aclose()
        await super().close()


GENERATION_REFRESH = 60.0
"""Seconds the benchmark's Memcached backends cache the namespace generation."""


class MemcachedStore(Store):
    """`MemcachedBackend`; the floor is aiomcache's `incr`; counts from `stats`."""

    name = "memcached"
    raw_name = "raw incr"
    counts_commands = True

    async def open(self) -> None:
        self._class = _backend_class("traffik.backends.memcached", "MemcachedBackend")
        import aiomcache

        self.server = servers.start("memcached")
        self._stats = aiomcache.Client(self.server.host, self.server.port)
        pool = getattr(self._class.from_url(self.server.url), "pool_size", None)
        size = pool if isinstance(pool, int) else 2  # the backend's pool, else aiomcache's default
        self._raw = aiomcache.Client(self.server.host, self.server.port, pool_size=size)
        await self._raw.set(b"traffik-bench:raw", b"0")
        version = (await self._stats.version()).decode()
        self.url = self.server.url
        pool_note = f", raw client pool_size={size} like the backend's" if pool == size else ""
        self.available = True
        self.detail = f"Memcached {version}: {self.server.describe()}{pool_note}"

    def backend(self, namespace: str) -> ThrottleBackend:
        assert self.server is not None
        # The namespace is never cleared here, so the generation is re-read once a minute,
        # not once a second: a counting round of the full run lasts over a second, and that
        # one `get` per refresh belongs to no decision.
        backend: ThrottleBackend = self._class.from_url(
            self.server.url, namespace=namespace, generation_refresh=GENERATION_REFRESH
        )
        return backend

    async def round_trip(self) -> None:
        await self._raw.incr(b"traffik-bench:raw")

    async def count_commands(self, work: Callable[[], Awaitable[Any]]) -> int:
        """Counted from `stats` before and after (reading `stats` counts nothing)."""
        before = await self._commands()
        await work()
        return await self._commands() - before

    async def _commands(self) -> int:
        stats = await self._stats.stats()
        return sum(int(stats.get(name) or 0) for name in _MEMCACHED_COMMANDS)

    async def close(self) -> None:
        for client in (getattr(self, "_stats", None), getattr(self, "_raw", None)):
            if client is not None:
                await client.close()
        await super().close()


class SQLiteStore(Store):
    """`SQLiteBackend` on a new file in a temporary directory; the floor is one raw write
    transaction (`BEGIN IMMEDIATE`, an `UPDATE`, `COMMIT`) on a connection of its own."""

    name = "sqlite"
    raw_name = "raw transaction"

    async def open(self) -> None:
        self._class = _backend_class("traffik.backends.sqlite", "SQLiteBackend")
        self._dir = tempfile.mkdtemp(prefix="traffik-bench-")
        self.path = os.path.join(self._dir, "traffik.db")
        self.url = f"sqlite:///{self.path}"
        self._raw = sqlite3.connect(self.path, isolation_level=None)
        self._raw.execute("PRAGMA journal_mode = WAL")
        self._raw.execute("PRAGMA synchronous = NORMAL")
        self._raw.execute("CREATE TABLE bench_raw (n INTEGER NOT NULL)")
        self._raw.execute("INSERT INTO bench_raw VALUES (0)")
        self.available = True
        self.detail = (
            f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL), a new file in {self._dir}"
        )

    def backend(self, namespace: str) -> ThrottleBackend:
        backend: ThrottleBackend = self._class(self.url, namespace=namespace)
        return backend

    async def round_trip(self) -> None:
        raw = self._raw
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("UPDATE bench_raw SET n = n + 1")
        raw.execute("COMMIT")

    async def close(self) -> None:
        raw = getattr(self, "_raw", None)
        if raw is not None:
            raw.close()
        if getattr(self, "_dir", None):
            shutil.rmtree(self._dir, ignore_errors=True)
        await super().close()


STORES: dict[str, type[Store]] = {
    "memory": MemoryStore,
    "sqlite": SQLiteStore,
    "redis": RedisStore,
    "memcached": MemcachedStore,
}
