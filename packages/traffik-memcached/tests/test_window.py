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
    LAST_END,
    WINDOW_FLAG,
    WINDOW_LIMIT,
    pack,
    unpack,
    window_end,
)
from traffik.clock import ManualClock
from traffik.exceptions import BackendError, ConfigurationError
from traffik.rates import Rate
from traffik.strategies import FixedWindow


def test_pack_round_trips_and_stays_below_2_63() -> None:
    end = window_end(1_700_000_040_000, 60)
    assert end == 1_700_000_100_000
    assert unpack(pack(end, 42)) == (end, 42)
    latest = window_end(LAST_END - 60_000, 60)  # 2262-04-11 23:47:16.853 UTC
    assert latest == LAST_END and pack(latest, COUNT_SPAN - 1) < 2**63
    assert unpack(pack(latest, COUNT_SPAN - 1)) == (latest, COUNT_SPAN - 1)
    with pytest.raises(BackendError, match="check the host's clock"):
        window_end(LAST_END - 59_999, 60)


@pytest.mark.anyio
async def test_a_clock_past_2262_is_an_error_naming_it(memcached_url: str) -> None:
    """Memcached does not reliably increment a number of 2**63 or more (it may look for a minus
    sign past the digits, in recycled memory, and answer 'non-numeric'): a fixed window that
    would close later than `LAST_END` fails with an error that names the clock, every time,
    instead of now and then with 'lost 50 races'."""
    clock = ManualClock(10_000_000_000.0)  # 2286-11-20
    backend = MemcachedBackend(memcached_url, namespace=f"window-{time.time_ns()}", clock=clock)
    try:
        with pytest.raises(BackendError, match=r"past 9223372036853 ms \(2262-04-11"):
            await FixedWindow().decide("client", Rate.parse("4/min"), backend, 1)
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.parametrize(
    ("ttl", "ms"), [(60, 60_000), (0.7, 700), (60.001, 60_001), (0.0004, 1), (3600.25, 3_600_250)]
)
def test_a_window_lasts_its_ttl_to_the_millisecond(ttl: float, ms: int) -> None:
    assert window_end(1_734_567_890_123, ttl) - 1_734_567_890_123 == ms


def test_counts_up_to_the_window_limit_can_never_overflow_into_the_end() -> None:
    assert WINDOW_LIMIT == FOLD_AT - FOLD_BY == 250_000
    # the highest count before a fold, plus a last hit of the largest cost, with room to spare
    # for hits that race the fold
    assert FOLD_AT - 1 + WINDOW_LIMIT <= COUNT_SPAN - 250_000


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
async def test_the_window_closes_at_its_exact_millisecond(
    backend: MemcachedBackend, clock: ManualClock
) -> None:
    # 60.7 s, not less: memcached drops the item on its own clock (whole seconds), and the
    # second hit must find it there however slow the machine
    clock.advance(ms=0.6)  # sub-millisecond time does not count
    await backend.increment_with_ttl("w", amount=1, ttl=60.7)
    clock.advance(ms=60_699)
    last = await backend.increment_with_ttl("w", amount=1, ttl=60.7)
    assert last == 2 and isinstance(last, WindowCount) and last.ttl_ms == 1
    assert await backend.ttl("w") == 1
    clock.advance(ms=1)
    assert await backend.ttl("w") is None
    assert await backend.increment_with_ttl("w", amount=1, ttl=60.7) == 1


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
        end = window_end(clock.ms(), 60)
        await raw.set(key, (b"%d" % pack(end, FOLD_AT - 1), WINDOW_FLAG), exptime=120)
        crossed = await backend.increment_with_ttl("w", amount=1, ttl=60)
        assert crossed == FOLD_AT, "the caller that crossed reports the count it reached"
        after = await backend.increment_with_ttl("w", amount=1, ttl=60)
        assert after == FOLD_AT - FOLD_BY + 1 > WINDOW_LIMIT, "still over any exact limit"
        assert after.ttl_ms == 60_000
    finally:
        await raw.close()


@pytest.mark.memcached
@pytest.mark.anyio
async def test_a_hit_larger_than_the_window_limit_is_refused(backend: MemcachedBackend) -> None:
    assert await backend.increment_with_ttl("w", amount=WINDOW_LIMIT, ttl=60) == WINDOW_LIMIT
    with pytest.raises(ConfigurationError, match="at most 250,000 per hit"):
        await backend.increment_with_ttl("w", amount=WINDOW_LIMIT + 1, ttl=60)


async def _async(value: object) -> object:
    return value


@pytest.mark.memcached
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "flags"),
    [(b"not a number", 0), (b"abc", WINDOW_FLAG), (b"9" * 30, 0), (b"1_000", 0)],
    ids=["text", "text flagged as a window", "above 2**64", "not memcached's number"],
)
async def test_a_value_no_counter_wrote_is_replaced_by_a_new_window(
    backend: MemcachedBackend, clock: ManualClock, memcached_url: str, value: bytes, flags: int
) -> None:
    """Another program's value at the key is no state (it failed every `FixedWindow`
    decision on the key until it expired): the next hit opens a window over it."""
    _, key = await backend._locate("w")
    raw = aiomcache.FlagClient(
        "127.0.0.1",
        int(memcached_url.rsplit(":", 1)[1]),
        get_flag_handler=lambda value, flags: _async((value, flags)),
        set_flag_handler=lambda value: _async(value),
    )
    try:
        await raw.set(key, (value, flags), exptime=120)
        assert await backend.get("w") == value.decode()
        assert await backend.ttl("w") is None
        assert await backend.expire("w", 30)  # a plain `touch`
        first = await backend.increment_with_ttl("w", amount=2, ttl=60)
        assert first == 2 and isinstance(first, WindowCount) and first.ttl_ms == 60_000
        assert await backend.increment_with_ttl("w", amount=1, ttl=60) == 3
        assert await backend.get("w") == "3"
    finally:
        await raw.close()


@pytest.mark.memcached
@pytest.mark.anyio
async def test_a_negative_counter_stays_a_signed_counter(backend: MemcachedBackend) -> None:
    assert await backend.increment("n", -4) == -4
    assert await backend.increment_with_ttl("n", amount=1, ttl=60) == -3
