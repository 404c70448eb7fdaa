"""Locks in memcached: exclusive across backend instances, always with a time to live, released only by their holder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from traffik.backends.memcached import DEFAULT_LOCK_TTL, MemcachedBackend
from traffik.exceptions import LockAcquisitionError, LockReleaseError

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]


@pytest.fixture
async def pair(memcached_url: str) -> AsyncIterator[tuple[MemcachedBackend, MemcachedBackend]]:
    namespace = f"locks-{time.time_ns()}"
    one = MemcachedBackend(memcached_url, namespace=namespace)
    other = MemcachedBackend(memcached_url, namespace=namespace)  # as if in another process
    yield one, other
    await one.reset()
    await one.close()
    await other.close()


async def test_instances_exclude_each_other(
    pair: tuple[MemcachedBackend, MemcachedBackend],
) -> None:
    one, other = pair
    async with one.lock("job", ttl=5):
        with pytest.raises(LockAcquisitionError):
            async with other.lock("job", ttl=5, blocking=False):
                pass
    async with other.lock("job", ttl=5, blocking=False):
        pass


async def test_every_lock_has_a_ttl(pair: tuple[MemcachedBackend, MemcachedBackend]) -> None:
    one, _ = pair
    assert DEFAULT_LOCK_TTL == 5.0
    assert one.get_lock(one.get_key("x")).ttl == DEFAULT_LOCK_TTL
    assert one.get_lock(one.get_key("x"), ttl=2).ttl == 2


async def test_a_crashed_holder_cannot_block_forever(
    pair: tuple[MemcachedBackend, MemcachedBackend],
) -> None:
    one, other = pair
    crashed = one.get_lock(one.get_key("job"), ttl=1)
    assert await crashed.acquire(blocking=False)  # and never released
    started = time.monotonic()
    # Held 1 s at least; then the waiter gets it, well before it would give up (blocking
    # forever ends at the timeout): a slow machine only makes the wait longer.
    timeout = 20
    async with other.lock("job", ttl=5, blocking_timeout=timeout):
        waited = time.monotonic() - started
    assert 1.0 <= waited < timeout / 2


async def test_an_expired_lock_is_not_released_from_its_new_holder(
    pair: tuple[MemcachedBackend, MemcachedBackend],
) -> None:
    one, other = pair
    late = one.get_lock(one.get_key("job"), ttl=1)
    assert await late.acquire(blocking=False)
    current = other.get_lock(other.get_key("job"), ttl=30)
    assert await current.acquire(blocking_timeout=20)  # (once `late` expires: 1 to 3 s)
    with pytest.raises(LockReleaseError, match="ttl"):
        await late.release()
    assert not await one.get_lock(one.get_key("job")).acquire(blocking=False), (
        "the new holder lost its lock"
    )
    await current.release()


async def test_reentrant_locks_count_per_task(
    pair: tuple[MemcachedBackend, MemcachedBackend],
) -> None:
    one, other = pair
    async with one.lock("r", reentrant=True), one.lock("r", reentrant=True):
        assert not await other.get_lock(other.get_key("r")).acquire(blocking=False)
    async with other.lock("r", blocking=False):
        pass


async def test_only_the_owner_task_releases(
    pair: tuple[MemcachedBackend, MemcachedBackend],
) -> None:
    one, _ = pair
    lock = one.get_lock(one.get_key("owned"))
    assert await lock.acquire()
    with pytest.raises(LockReleaseError):
        await asyncio.create_task(lock.release())
    assert lock.is_owner()
    await lock.release()
    assert not lock.is_owner()
