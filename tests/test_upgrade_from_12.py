"""Upgrading a live fleet from traffik 1.2: both versions on one Redis and one Memcached.

traffik 1.2.2 runs in a process of its own (it is also named `traffik`), from the directory
`benchmarks.legacy_run.legacy_path` installs it into, with the same namespace and throttle
uid as the Traffik under test. Periods are a minute, so no window turns during a test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from redis.asyncio import Redis

from traffik import HTTPThrottle
from traffik.backends.memcached import MemcachedBackend
from traffik.backends.memcached._client import Flagged
from traffik.backends.memcached._sliding import window_key
from traffik.backends.memcached._window import WINDOW_FLAG
from traffik.backends.redis import RedisBackend
from traffik.clock import ManualClock
from traffik.rates import Rate
from traffik.strategies import (
    ADVANCED_STRATEGIES,
    BUILTIN_STRATEGIES,
    GCRA,
    FixedWindow,
    LeakyBucket,
    PriorityQueue,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from traffik.testing.servers import env_flag

pytestmark = pytest.mark.anyio

_ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = [FixedWindow, SlidingWindowCounter, SlidingWindowLog, TokenBucket, LeakyBucket, GCRA]

_LEGACY = """
import sys
sys.path.insert(0, sys.argv[1])
import asyncio, json
import httpx
from fastapi import Depends, FastAPI, Request
import traffik
from traffik import HTTPThrottle
import traffik.strategies as strategies

async def main(store, url, namespace, names, hits):
    assert traffik.__version__.startswith("1.2"), traffik.__version__
    if store == "redis":
        from traffik.backends.redis import RedisBackend
        backend = RedisBackend(connection=url, namespace=namespace, persistent=True)
    else:
        from traffik.backends.memcached import MemcachedBackend
        backend = MemcachedBackend(url=url, namespace=namespace, persistent=True)
    await backend.initialize()
    app, codes = FastAPI(), {}
    for name in names:
        throttle = HTTPThrottle(f"api:{name}", rate="3/min", backend=backend,
                                strategy=getattr(strategies, name)())
        @app.get(f"/{name}")
        async def hit(request: Request = Depends(throttle)):
            return {}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for name in names:
            codes[name] = [(await http.get(f"/{name}")).status_code for _ in range(hits)]
    print(json.dumps(codes))

asyncio.run(main(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5].split(","), int(sys.argv[6])))
"""


@pytest.fixture(scope="module")
def legacy() -> Path:
    sys.path.insert(0, str(_ROOT))
    try:
        from benchmarks.legacy_run import legacy_path
    finally:
        sys.path.remove(str(_ROOT))
    place, why = legacy_path()
    if place is None:
        if env_flag("CI"):  # (CI runs these: pip reaches PyPI there)
            pytest.fail(f"traffik 1.2 is not available: {why}")
        pytest.skip(f"traffik 1.2 is not available: {why}")
    return place


def run_legacy(place: Path, store: str, url: str, namespace: str, hits: int) -> dict[str, Any]:
    """traffik 1.2's answers, per strategy, to `hits` requests on `/<strategy>` (throttle
    `api:<strategy>`, 3/min, in `namespace`)."""
    names = ",".join(cls.__name__ for cls in STRATEGIES)
    done = subprocess.run(
        [sys.executable, "-c", _LEGACY, str(place), store, url, namespace, names, str(hits)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def run_ours(backend: Any, hits: int) -> dict[str, list[int]]:
    """Traffik's answers to the same requests as `run_legacy`'s, same throttle uids."""
    app, codes = FastAPI(), {}
    for cls in STRATEGIES:
        throttle = HTTPThrottle(
            f"api:{cls.__name__}", rate="3/min", backend=backend, strategy=cls(), headers=None
        )

        @app.get(f"/{cls.__name__}")
        async def hit(request: Request = Depends(throttle)) -> dict[str, Any]:
            return {}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for cls in STRATEGIES:
            name = cls.__name__
            codes[name] = [(await http.get(f"/{name}")).status_code for _ in range(hits)]
    return codes


def each(codes: list[int]) -> dict[str, list[int]]:
    return {cls.__name__: codes for cls in STRATEGIES}


@pytest.mark.parametrize("store", ["redis", "memcached"])
async def test_both_versions_decide_on_one_store_each_on_its_own_keys(
    legacy: Path, store: str, redis_url: str, memcached_url: str
) -> None:
    url = redis_url if store == "redis" else memcached_url
    namespace = f"upgrade-{store}"
    backend: Any
    if store == "redis":
        backend = RedisBackend(redis_url, namespace=namespace)
    else:
        backend = MemcachedBackend(url=memcached_url, namespace=namespace)
    async with backend:
        await backend.reset()
        old = run_legacy(legacy, store, url, namespace, 2)
        new = await run_ours(backend, 4)
        old_again = run_legacy(legacy, store, url, namespace, 2)
        await backend.reset()
    # 1.2's smooth GCRA admits one request in 20 s; every other 1.2 strategy admits 3.
    assert old == {**each([200, 200]), "GCRA": [200, 429]}
    # Traffik reads none of 1.2's state: a client has each version's budget (the guide says so)
    assert new == each([200, 200, 200, 429])
    # and 1.2 reads none of Traffik's: it goes on from its own count, without an error.
    assert old_again == {**each([200, 429]), "GCRA": [429, 429]}


async def test_reset_clears_what_traffik12_left_in_the_namespace(
    legacy: Path, redis_url: str
) -> None:
    raw = Redis.from_url(redis_url, decode_responses=True)
    await raw.set("upgrade-other:kept", "1")
    async with RedisBackend(redis_url, namespace="upgrade-left") as backend:
        run_legacy(legacy, "redis", redis_url, "upgrade-left", 4)
        await run_ours(backend, 1)
        left = [key async for key in raw.scan_iter("upgrade-left:*")]
        immortal = [key for key in left if await raw.pttl(key) == -1]
        assert immortal and all(key.endswith(":fence") for key in immortal)  # 1.2's lock fences
        await backend.reset()
        assert [key async for key in raw.scan_iter("upgrade-left:*")] == []
        assert await raw.get("upgrade-other:kept") == "1"
        assert await run_ours(backend, 4) == each([200, 200, 200, 429])
    await raw.delete("upgrade-other:kept")
    await raw.aclose()


FOREIGN = ["hash", "not a number", "\x00\xff{json}"]
"""What another writer may have left at a key: a value of another Redis type, and strings
that no strategy wrote."""


async def _plant(raw: Redis, key: str, foreign: str) -> None:
    await raw.delete(key)
    if foreign == "hash":
        await raw.hset(key, "tokens", "1")
    else:
        await raw.set(key, foreign)


@pytest.mark.parametrize("foreign", FOREIGN)
@pytest.mark.parametrize("cls", [*STRATEGIES, PriorityQueue], ids=lambda cls: cls.__name__)
async def test_a_foreign_value_at_a_key_is_no_state(redis_url: str, cls: Any, foreign: str) -> None:
    """Decided as a fresh key, never an error (on_error's answer for the client as long as
    the value stays) and never a value that admits without limit."""
    rate, strategy = Rate.parse("3/min"), cls()
    raw = Redis.from_url(redis_url, decode_responses=True)
    async with RedisBackend(redis_url, namespace="upgrade-foreign") as backend:
        key = backend.get_key(f"client:{foreign}") + strategy.suffix
        await _plant(raw, key, foreign)
        waits = [await strategy(f"client:{foreign}", rate, backend, 1) for _ in range(4)]
        assert [wait == 0 for wait in waits] == [True, True, True, False]
        await _plant(raw, key, foreign)
        stat = await strategy.get_stat(f"client:{foreign}", rate, backend)
        assert (stat.hits_remaining, stat.wait_ms) == (3, 0)
        await backend.reset()
    await raw.aclose()


@pytest.mark.parametrize("foreign", FOREIGN)
async def test_a_throttle_decides_over_a_foreign_value(redis_url: str, foreign: str) -> None:
    raw = Redis.from_url(redis_url, decode_responses=True)
    async with RedisBackend(redis_url, namespace="upgrade-throttle") as backend:
        await backend.reset()
        assert (await run_ours(backend, 1)) == each([200])
        for key in [key async for key in raw.scan_iter("upgrade-throttle:*")]:
            await _plant(raw, key, foreign)
        assert await run_ours(backend, 4) == each([200, 200, 200, 429])
        await backend.reset()
    await raw.aclose()


EVERY_STRATEGY = [*BUILTIN_STRATEGIES, *ADVANCED_STRATEGIES]
MEMCACHED_FOREIGN = [(b"not a number", 0), (b"\x00\xff{json}", 0), (b"abc", WINDOW_FLAG)]
"""What another program may have left at a memcached key: text no strategy wrote, and its
flags (1 is those of a window counter)."""


async def _plant_memcached(
    backend: MemcachedBackend, key: str, foreign: tuple[bytes, int], strategy: Any, now_ms: int
) -> None:
    """`foreign` at the key of `strategy`'s state, and at the window counters of a
    `SlidingWindowCounter` (`<key>#w<window>/<period>`, where its state is) open at `now_ms`."""
    node, mkey = await backend._locate(key)
    keys = [mkey]
    if isinstance(strategy, SlidingWindowCounter):
        period = Rate.parse("3/min").expire
        keys += [window_key(mkey, now_ms // period - n, period) for n in (0, 1)]

    async def plant(client: Any, conn: Any) -> None:
        for each_key in keys:
            assert await client.store_on(conn, b"set", each_key, Flagged(*foreign), 0)

    await node.run(plant, "plant")


@pytest.mark.parametrize("foreign", MEMCACHED_FOREIGN, ids=lambda value: repr(value))
@pytest.mark.parametrize("cls", EVERY_STRATEGY, ids=lambda cls: cls.__name__)
async def test_a_foreign_value_at_a_memcached_key_is_no_state(
    memcached_url: str, cls: Any, foreign: tuple[bytes, int]
) -> None:
    """As on Redis: decided as a fresh key, never an error (on_error's answer as long as the
    value stays), and the next admitted hit replaces the value."""
    rate, strategy, clock = Rate.parse("3/min"), cls(), ManualClock(1_700_000_040.0)
    async with MemcachedBackend(memcached_url, namespace="foreign", clock=clock) as backend:
        fresh = [await strategy("fresh", rate, backend, 1) for _ in range(8)]
        fresh_stat = await strategy.get_stat("unseen", rate, backend)
        assert 0 in fresh and fresh[-1] > 0  # (TimeOfDay's hour may raise the limit)
        key = backend.get_key("client") + strategy.suffix
        await _plant_memcached(backend, key, foreign, strategy, clock.ms())
        assert [await strategy("client", rate, backend, 1) for _ in range(8)] == fresh
        await _plant_memcached(backend, key, foreign, strategy, clock.ms())
        stat = await strategy.get_stat("client", rate, backend)
        assert (stat.hits_remaining, stat.wait_ms) == (fresh_stat.hits_remaining, 0)
        await backend.reset()


@pytest.mark.parametrize("cls", EVERY_STRATEGY, ids=lambda cls: cls.__name__)
async def test_hits_racing_over_a_foreign_memcached_value_replace_it_once(
    memcached_url: str, cls: Any
) -> None:
    """Twelve instances (their own connections, nothing coalesced between them) hit a key
    holding a foreign value at once: one of them replaces it, the others count on top, so as
    many are admitted as on a fresh key, not one per hit that met the foreign value."""
    rate, strategy, clock = Rate.parse("3/min"), cls(), ManualClock(1_700_000_040.0)
    backends = [
        MemcachedBackend(memcached_url, namespace="foreign-race", clock=clock) for _ in range(12)
    ]
    for backend in backends:
        await backend.initialize()
    try:
        first = backends[0]
        await first.reset()
        for backend in backends:
            await backend.get("warm")  # every instance reads the new generation, connects
        fresh = [await strategy("fresh", rate, first, 1) for _ in backends]
        key = first.get_key("client") + strategy.suffix
        await _plant_memcached(first, key, MEMCACHED_FOREIGN[0], strategy, clock.ms())
        waits = await asyncio.gather(*(strategy("client", rate, b, 1) for b in backends))
        admitted = sum(wait == 0 for wait in fresh)
        assert 0 < admitted < len(backends)
        assert sum(wait == 0 for wait in waits) == admitted
        await first.reset()
    finally:
        for backend in backends:
            await backend.close()


async def test_a_throttle_decides_over_foreign_memcached_values(memcached_url: str) -> None:
    clock = ManualClock(1_700_000_040.0)
    async with MemcachedBackend(
        memcached_url, namespace="foreign-throttle", clock=clock
    ) as backend:
        await backend.reset()
        assert (await run_ours(backend, 1)) == each([200])
        keys = await backend.scan(backend.get_key(""))
        assert len(keys) == len(STRATEGIES)
        for key in keys:
            (strategy,) = [cls() for cls in STRATEGIES if key.endswith(cls.suffix)]
            await _plant_memcached(backend, key, (b"text", 0), strategy, clock.ms())
        assert await run_ours(backend, 4) == each([200, 200, 200, 429])
        await backend.reset()
