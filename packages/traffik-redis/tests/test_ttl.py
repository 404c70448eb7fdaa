"""Times to live count to the first millisecond at which the key is gone, on the server's clock.

Redis deletes a key once its clock has passed the key's expiry, so a key with PTTL `p` is
gone `p + 1` ms later; the backend's `ttl()`, `WindowCount.ttl_ms` and PX values account
for it. Checked against the server's clock alone: an operation between two `TIME` readings
ran in a millisecond between them, and a pipelined `TIME`, `EXISTS`, `TIME` shows the key
present or gone in a millisecond between its two readings. Each attempt checks what these
bounds allow; one whose bounds pin both moments to single milliseconds checks exactly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from typing import Callable, TypeVar

import pytest
from redis.asyncio import Redis

from traffik.backends.redis import RedisBackend
from traffik.rates import Rate
from traffik.strategies import TokenBucket

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

T = TypeVar("T")
BUDGET = 30
"""Seconds to get one exact reading; a quiet machine needs a few attempts of ~15 ms."""


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_url, namespace="ttl")
    yield backend
    await backend.reset()
    await backend.close()


def _ms(reading: tuple[int, int]) -> int:
    seconds, microseconds = reading
    return seconds * 1000 + microseconds // 1000


async def _during(raw: Redis, operation: Callable[[], Awaitable[T]]) -> tuple[int, int, T]:
    """The server's milliseconds before and after `operation`, and its result."""
    before = _ms(await raw.time())
    result = await operation()
    return before, _ms(await raw.time()), result


async def _gone_between(raw: Redis, key: str) -> tuple[int, int]:
    """The first millisecond without `key` lies in the returned range (inclusive): after the
    latest one in which it surely existed, at or before one in which it surely did not."""
    there, deadline = -1, time.monotonic() + 10
    while time.monotonic() < deadline:
        pipe = raw.pipeline(transaction=False)
        before, exists, after = await pipe.time().exists(key).time().execute()
        if not exists:
            return there + 1, _ms(after)
        there = _ms(before)
    pytest.fail(f"{key} was never seen gone")


async def _check(
    raw: Redis,
    key: str,
    setup: Callable[[], Awaitable[object]],
    operation: Callable[[], Awaitable[T]],
    gone_in: Callable[[T], float | None],
) -> T:
    """`setup()`, then `operation()`, after which `key` must be gone exactly `gone_in(result)`
    ms later (None: the result shows a slow run, the key expired before the operation). Every
    attempt checks what its readings allow; attempts go on until one has pinned both moments
    to a single millisecond. Returns that attempt's result."""
    deadline = time.monotonic() + BUDGET
    while time.monotonic() < deadline:
        await setup()
        before, after, result = await _during(raw, operation)
        claimed = gone_in(result)
        if claimed is None:
            continue
        first, last = await _gone_between(raw, key)
        assert first <= after + claimed and before + claimed <= last, (before, after, first, last)
        if before == after and first == last:
            assert first == before + claimed
            return result
    pytest.fail(f"no exact reading in {BUDGET} s (is the machine overloaded?)")


async def test_ttl_is_pttl_plus_one(backend: RedisBackend, raw: Redis) -> None:
    key = backend.get_key("ttl")
    await _check(raw, key, lambda: raw.set(key, "v", px=10), lambda: backend.ttl(key), _same)


async def test_an_expiry_in_seconds_is_when_the_key_is_gone(
    backend: RedisBackend, raw: Redis
) -> None:
    key = backend.get_key("set")
    await _check(raw, key, backend.initialize, lambda: backend.set(key, "v", expire=0.01), _ms_10)
    await _check(raw, key, lambda: raw.set(key, "v"), lambda: backend.expire(key, 0.01), _ms_10)


async def test_increment_with_ttl_reports_when_the_window_is_gone(
    backend: RedisBackend, raw: Redis
) -> None:
    key = backend.get_key("counter")
    fresh = await _check(
        raw,
        key,
        lambda: raw.delete(key),
        lambda: backend.increment_with_ttl(key, ttl=0.01),
        _ttl_ms,
    )
    assert fresh.ttl_ms == 10  # type: ignore[attr-defined]
    await _check(
        raw,
        key,
        lambda: raw.set(key, "1", px=10),
        lambda: backend.increment_with_ttl(key, ttl=0.02),
        lambda count: _ttl_ms(count) if count == 2 else None,
    )


async def test_strategy_state_is_gone_when_its_transition_says(
    backend: RedisBackend, raw: Redis
) -> None:
    strategy, rate = TokenBucket(), Rate(limit=3, milliseconds=30)
    key = backend.get_key("state") + strategy.suffix
    # A first hit leaves a third of a token to refill: the state lasts 10 ms, then equals a fresh key.
    assert strategy.transition(None, 0, rate, 1)[2] == 10
    await _check(
        raw,
        key,
        lambda: raw.delete(key),
        lambda: strategy.decide("state", rate, backend, 1),
        _ms_10,
    )


def _same(left: int | None) -> int | None:
    return left


def _ttl_ms(count: int) -> float | None:
    return getattr(count, "ttl_ms", None)


def _ms_10(_: object) -> int:
    return 10
