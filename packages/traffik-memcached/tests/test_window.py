"""Fixed-window counters: count and window end in one number, one `incr` per hit, on the backend's clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiomcache
import pytest

from traffik.backends.base import WindowCount
from traffik.backends.memcached import MemcachedBackend
from traffik.backends.memcached._window import (
    COUNT_SPAN,
    FOLD_AT,
    FOLD_BY,
    WINDOW_FLAG,
    ms_left,
    pack,
    unpack,
    window_end,
)
from traffik.clock import ManualClock


def test_pack_round_trips() -> None:
    end = window_end(1_700_000_040.0, 60)
    assert end == 170_000_010_000
    assert unpack(pack(end, 42)) == (end, 42)
    assert pack(end, 42) < 2**64
    assert unpack(pack(window_end(16_000_000_000.0, 3600), COUNT_SPAN - 1))[1] == COUNT_SPAN - 1


def test_window_end_never_exceeds_the_ttl_and_is_after_now() -> None:
    for now in (1_700_000_040.0, 1_700_000_040.004, 1_700_000_040.999, 1_734_567_890.123456):
        for ttl in (0.001, 0.5, 1, 60, 3600.25):
            end = window_end(now, ttl)
            assert 0 < ms_left(end, now) <= max(ttl * 1000, 10)
            assert ms_left(end, now) > ttl * 1000 - 10


def test_fold_keeps_counts_far_from_overflow() -> None:
    assert FOLD_AT + 1_000_000 < COUNT_SPAN  # room for a last big hit before the fold
    assert FOLD_AT - FOLD_BY >= 1_000_000


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_040.0)


@pytest.fixture
async def backend(memcached_url: str, clock: ManualClock) -> AsyncIterator[MemcachedBackend]:
    backend = MemcachedBackend(memcached_url, namespace=f"window-{time.time_ns()}", clock=clock)
    yield backend
    await backend.reset()
    await backend.close()


@pytest.mark.memcached
@pytest.mark.anyio
async def test_counts_carry_the_time_left(backend: MemcachedBackend, clock: ManualClock) -> None:
    first = await backend.increment_with_ttl("w", amount=1, ttl=60)
    assert isinstance(first, WindowCount) and first == 1 and first.ttl_ms == 60_000
    clock.advance(12.5)
    second = await backend.increment_with_ttl("w", amount=2, ttl=60)
    assert isinstance(second, WindowCount) and second == 3 and second.ttl_ms == 47_500
    assert await backend.get("w") == "3"
    assert await backend.ttl("w") == 47_500


@pytest.mark.memcached
@pytest.mark.anyio
async def test_the_window_closes_on_the_backend_clock(
    backend: MemcachedBackend, clock: ManualClock
) -> None:
    for _ in range(3):
        await backend.increment_with_ttl("w", amount=1, ttl=60)
    clock.advance(60)  # memcached still holds the key; the backend's clock says the window is over
    assert await backend.get("w") is None
    assert await backend.ttl("w") is None
    reopened = await backend.increment_with_ttl("w", amount=1, ttl=60)
    assert reopened == 1 and isinstance(reopened, WindowCount) and reopened.ttl_ms == 60_000


@pytest.mark.memcached
@pytest.mark.anyio
async def test_expire_moves_the_window_end(backend: MemcachedBackend) -> None:
    await backend.increment_with_ttl("w", amount=5, ttl=60)
    assert await backend.expire("w", 10)
    assert await backend.ttl("w") == 10_000
    assert await backend.get("w") == "5"


@pytest.mark.memcached
@pytest.mark.anyio
async def test_plain_counters_stay_plain(backend: MemcachedBackend) -> None:
    await backend.set("n", "7")
    assert await backend.increment_with_ttl("n", amount=1, ttl=60) == 8
    assert await backend.ttl("n") is None
    assert await backend.get("n") == "8"


@pytest.mark.memcached
@pytest.mark.anyio
async def test_a_huge_count_is_folded_before_it_can_overflow(
    backend: MemcachedBackend, clock: ManualClock, memcached_url: str
) -> None:
    await backend.increment_with_ttl("w", amount=1, ttl=60)
    _, key = await backend._locate("w")
    raw = aiomcache.FlagClient(
        "127.0.0.1",
        int(memcached_url.rsplit(":", 1)[1]),
        get_flag_handler=lambda value, flags: _async((value, flags)),
        set_flag_handler=lambda value: _async(value),
    )
    try:
        end = window_end(clock(), 60)
        await raw.set(key, (b"%d" % pack(end, FOLD_AT - 1), WINDOW_FLAG), exptime=120)
        crossed = await backend.increment_with_ttl("w", amount=1, ttl=60)
        assert crossed == FOLD_AT - FOLD_BY
        assert await backend.increment_with_ttl("w", amount=1, ttl=60) == FOLD_AT - FOLD_BY + 1
    finally:
        await raw.close()


async def _async(value: object) -> object:
    return value
