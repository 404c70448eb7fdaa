"""Times to live: whole seconds that never cut a key short, and Unix times beyond 30 days."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.backends.memcached._expiry import (
    EXPIRED,
    LATEST,
    NEVER,
    RELATIVE_LIMIT,
    exptime,
)
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow

DAY = 86_400


def test_exptime_rounds_up_and_adds_a_second() -> None:
    assert exptime(None) == NEVER
    assert exptime(0.2) == 2
    assert exptime(1) == 2
    assert exptime(1.0000000001) == 2
    assert exptime(1.5) == 3
    assert exptime(60) == 61
    assert exptime(RELATIVE_LIMIT - 1) == RELATIVE_LIMIT


def test_exptime_beyond_30_days_is_a_unix_time() -> None:
    assert exptime(RELATIVE_LIMIT, lambda: 1_700_000_000.5) == 1_700_000_000 + RELATIVE_LIMIT + 1
    assert exptime(40 * DAY, lambda: 1_700_000_000.0) == 1_700_000_000 + 40 * DAY + 1


def test_exptime_past_january_2038_is_the_latest_memcached_accepts() -> None:
    # memcached reads exptime as a signed 32-bit number: 2**31 + 5 would be a time in 1901.
    assert LATEST == 2**31 - 1
    assert exptime(4100 * DAY, lambda: 1_796_000_000.0) == LATEST
    assert exptime(10**12, lambda: 1_700_000_000.0) == LATEST
    assert exptime(LATEST - 1_700_000_001, lambda: 1_700_000_000.0) == LATEST


def test_exptime_of_no_time_expires_at_once() -> None:
    assert exptime(0) == EXPIRED
    assert exptime(-5) == EXPIRED
    assert EXPIRED > RELATIVE_LIMIT  # read as a Unix time in 1970


@pytest.fixture
async def backend(memcached_url: str) -> AsyncIterator[MemcachedBackend]:
    backend = MemcachedBackend(memcached_url, namespace=f"expiry-{time.time_ns()}")
    yield backend
    await backend.reset()
    await backend.close()


@pytest.mark.memcached
@pytest.mark.anyio
async def test_keys_with_ttls_over_30_days_are_kept(backend: MemcachedBackend) -> None:
    await backend.set("month", "v", expire=31 * DAY)
    await backend.multi_set({"year": "w"}, expire=365 * DAY)
    assert await backend.increment_with_ttl("window", 1, ttl=45 * DAY) == 1
    assert await backend.get("month") == "v"
    assert await backend.get("year") == "w"
    assert await backend.increment_with_ttl("window", 1, ttl=45 * DAY) == 2
    assert await backend.expire("month", 60 * DAY)
    assert await backend.get("month") == "v"


@pytest.mark.memcached
@pytest.mark.anyio
@pytest.mark.parametrize(
    "strategy", BUILTIN_STRATEGIES, ids=[cls.__name__ for cls in BUILTIN_STRATEGIES]
)
async def test_a_40_day_rate_still_throttles(backend: MemcachedBackend, strategy: type) -> None:
    rate = Rate.parse("1/40d")
    assert (await strategy().decide("long", rate, backend, 1)).allowed
    second = await strategy().decide("long", rate, backend, 1)
    assert not second.allowed
    assert second.wait_ms > 30 * DAY * 1000


@pytest.mark.memcached
@pytest.mark.anyio
@pytest.mark.parametrize(
    "strategy", BUILTIN_STRATEGIES, ids=[cls.__name__ for cls in BUILTIN_STRATEGIES]
)
async def test_a_window_past_january_2038_still_throttles(
    backend: MemcachedBackend, strategy: type
) -> None:
    # now + ttl passes 2**31 (19 January 2038), the last second memcached can keep an item to.
    days = (2**31 - int(time.time())) // DAY + 100
    rate = Rate.parse(f"2/{days}d")
    for _ in range(2):
        assert (await strategy().decide("y2038", rate, backend, 1)).allowed
    for _ in range(2):
        assert not (await strategy().decide("y2038", rate, backend, 1)).allowed
    assert await backend.increment_with_ttl("counter", 1, ttl=days * DAY) == 1
    assert await backend.increment_with_ttl("counter", 1, ttl=days * DAY) == 2
    await backend.set("kept", "v", expire=days * DAY)
    assert await backend.get("kept") == "v"
    assert await backend.expire("kept", days * DAY)
    assert await backend.get("kept") == "v"


@pytest.mark.memcached
@pytest.mark.anyio
async def test_fixed_window_of_40_days_reports_its_time_left(backend: MemcachedBackend) -> None:
    rate = Rate.parse("2/40d")
    for _ in range(2):
        assert (await FixedWindow().decide("w", rate, backend, 1)).allowed
    rejected = await FixedWindow().decide("w", rate, backend, 1)
    assert 40 * DAY * 1000 - 5_000 < rejected.wait_ms <= 40 * DAY * 1000


@pytest.mark.memcached
@pytest.mark.anyio
async def test_a_short_ttl_is_never_cut_short(backend: MemcachedBackend) -> None:
    await backend.set("brief", "v", expire=1)
    await backend.set("gone", "v", expire=0)
    assert await backend.get("gone") is None
    # exptime 2 (ceil(1) + 1) lives between 1 and 3 seconds on memcached's ticking clock:
    # just before its one-second TTL it must still be there.
    await asyncio.sleep(0.9)
    assert await backend.get("brief") == "v", "expired before its ttl"
    # memcached's clock ticks once a second and an item is rounded up to whole seconds plus one,
    # so allow the server a further tick before calling the item immortal.
    await asyncio.sleep(3.2)
    assert await backend.get("brief") is None, "outlived ttl + 3 s"
