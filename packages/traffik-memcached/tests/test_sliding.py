"""`SlidingWindowCounter` on window counters: keys, the previous count taken when a window opens,
refunds as the strategy's, and limits too large for counters kept under compare-and-swap."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.memcached import MemcachedBackend
from traffik.backends.memcached._keys import MAX_KEY_BYTES
from traffik.backends.memcached._sliding import (
    COUNTED_LIMIT,
    PREVIOUS_SPAN,
    counts_windows,
    window_key,
)
from traffik.clock import ManualClock
from traffik.rates import Rate
from traffik.strategies import SlidingWindowCounter, TokenBucket
from traffik.strategies.steps import items

pytestmark = pytest.mark.memcached

START = 1_700_000_040.0  # on a minute boundary
RATE = Rate.parse("10/min")


def test_window_keys_are_distinct_and_fit() -> None:
    assert window_key(b"ns:1:u:swc", 28333334, 60_000) == b"ns:1:u:swc#w28333334/60000"
    assert window_key(b"ns:1:u:swc", 1, 1_000) != window_key(b"ns:1:u:swc", 11, 1_000)
    # window 1 of a second is not window 1 of ten (nor window 11 of a second)
    assert window_key(b"ns:1:u:swc", 1, 1_000) != window_key(b"ns:1:u:swc", 1, 10_000)
    assert window_key(b"ns:1:u:swc", 11, 1_000) != window_key(b"ns:1:u:swc", 1, 11_000)
    long = b"k" * MAX_KEY_BYTES
    hashed = window_key(long, 28333334, 60_000)
    assert len(hashed) <= MAX_KEY_BYTES and hashed != window_key(long, 28333335, 60_000)
    assert hashed != window_key(long, 28333334, 1_000)


def test_counters_serve_sliding_window_counter_itself_up_to_the_counted_limit() -> None:
    class Custom(SlidingWindowCounter):
        pass

    assert counts_windows(SlidingWindowCounter(), Rate(limit=COUNTED_LIMIT, seconds=60))
    assert not counts_windows(SlidingWindowCounter(), Rate(limit=COUNTED_LIMIT + 1, seconds=60))
    assert not counts_windows(Custom(), RATE)
    assert not counts_windows(TokenBucket(), RATE)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def backend(memcached_url: str, clock: ManualClock) -> AsyncIterator[MemcachedBackend]:
    backend = MemcachedBackend(memcached_url, namespace=f"sliding-{time.time_ns()}", clock=clock)
    yield backend
    await backend.reset()
    await backend.close()


async def _counter(backend: MemcachedBackend, key: str, now_ms: int) -> tuple[int, int] | None:
    node, mkey = await backend._locate(backend.get_key(key) + SlidingWindowCounter.suffix)
    raw = await node.run(
        lambda client, conn: client.get_on(
            conn, window_key(mkey, now_ms // RATE.expire, RATE.expire)
        ),
        "test",
    )
    if raw is None:
        return None
    previous, count = divmod(int(raw if isinstance(raw, bytes) else raw.value), PREVIOUS_SPAN)
    return previous, count


@pytest.mark.anyio
async def test_a_window_opens_with_the_previous_count(
    backend: MemcachedBackend, clock: ManualClock
) -> None:
    strategy = SlidingWindowCounter()
    for cost in (3, 2):
        assert (await strategy.decide("u", RATE, backend, cost)).allowed
    assert await _counter(backend, "u", clock.ms()) == (0, 5)
    clock.advance(ms=RATE.expire)
    assert await _counter(backend, "u", clock.ms()) is None
    assert (await strategy.decide("u", RATE, backend, 1)).allowed
    assert await _counter(backend, "u", clock.ms()) == (5, 1)
    refused = await strategy.decide("u", RATE, backend, 9)
    assert not refused.allowed
    assert await _counter(backend, "u", clock.ms()) == (5, 1), "a refused hit is given back"


@pytest.mark.anyio
@pytest.mark.parametrize("opened", [True, False], ids=["window open", "window not open"])
async def test_refunds_are_the_strategys(
    backend: MemcachedBackend, clock: ManualClock, opened: bool
) -> None:
    """Off the open window's count first, then off the previous count; with no open window,
    off the previous window's own count: what the in-memory backend answers afterwards."""
    strategy = SlidingWindowCounter()
    reference_clock = ManualClock(START)
    reference = InMemoryBackend(namespace="reference", clock=reference_clock)
    try:
        plan = [("hit", 6), ("move", 30_000), ("hit", 2), ("refund", 3), ("refund", 4)]
        if not opened:
            plan = [("hit", 6), ("move", 60_000), ("refund", 4)]
        for action, amount in plan:
            for one, when in ((backend, clock), (reference, reference_clock)):
                if action == "hit":
                    assert (await strategy.decide("u", RATE, one, amount)).allowed
                elif action == "move":
                    when.advance(ms=amount)
                else:
                    await one.refund_all(items(strategy, "u", [RATE], amount, one))
            for cost in (1, 5, 10):
                seen = await backend.evaluate_all(
                    items(strategy, "u", [RATE], cost, backend), commit=False
                )
                expected = await reference.evaluate_all(
                    items(strategy, "u", [RATE], cost, reference), commit=False
                )
                assert seen == expected, (action, amount, cost)
    finally:
        await reference.close()


@pytest.mark.anyio
async def test_a_limit_too_large_for_counters_keeps_a_state(
    backend: MemcachedBackend, clock: ManualClock
) -> None:
    strategy, rate = SlidingWindowCounter(), Rate(limit=COUNTED_LIMIT + 1, seconds=60)
    assert (await strategy.decide("big", rate, backend, 7)).allowed
    stored = await backend.get(backend.get_key("big") + strategy.suffix)
    assert stored == f"{clock.ms() // rate.expire},7,0,{rate.expire}"


@pytest.mark.anyio
@pytest.mark.parametrize("where", [(0,), (1,), (0, 1)], ids=["open", "previous", "both"])
async def test_window_counters_holding_what_no_counter_wrote_are_no_state(
    backend: MemcachedBackend, clock: ManualClock, where: tuple[int, ...]
) -> None:
    """Another program's value at the open window's counter, the previous one's or both:
    read as missing, given nothing back, and replaced by the hit that opens the window (it
    failed every decision on the key)."""
    strategy = SlidingWindowCounter()
    node, mkey = await backend._locate(backend.get_key("u") + strategy.suffix)
    wid = clock.ms() // RATE.expire

    def plant(backs: tuple[int, ...]) -> Any:
        async def run(client: Any, conn: Any) -> None:
            for back in backs:
                counter = window_key(mkey, wid - back, RATE.expire)
                assert await client.store_on(conn, b"set", counter, b"not a count", 0)

        return run

    await node.run(plant(where), "test")
    assert (
        await backend.evaluate_all(items(strategy, "u", [RATE], 10, backend), commit=False)
    ).allowed
    await backend.refund_all(items(strategy, "u", [RATE], 3, backend))
    decisions = [(await strategy.decide("u", RATE, backend, 4)).allowed for _ in range(3)]
    assert decisions == [True, True, False]
    assert await _counter(backend, "u", clock.ms()) == (0, 8)
    await node.run(plant((0,)), "test")  # while the key is known full: its `get` reads it
    assert (await strategy.decide("u", RATE, backend, 4)).allowed
    assert await _counter(backend, "u", clock.ms()) == (0, 4)


# A clock that steps back: (the rate, the hits `(seconds after START, how many)` before the
# step, the time it steps back to, the wait the in-memory store tells the next hit then)
STEPPED_BACK = {
    # 4 in a window, 1 (and 1 refused) 15 s into the next; back 30 s: the next window's count
    # refuses the hit until 30 s into that window
    "next-window": (Rate.parse("4/min"), [(10, 5), (75, 2)], 45, 45_000),
    # 2/10s: 2 in a window, 1 (and 1 refused) in each of the next two; back 17 s: each of the
    # two windows ahead refuses the hit until its end
    "two-windows-ahead": (Rate.parse("2/10s"), [(5, 2), (15, 2), (25, 2)], 8, 22_000),
}


async def _stepped_back(one: Any, when: ManualClock, timeline: str) -> None:
    rate, hits, back_to, _ = STEPPED_BACK[timeline]
    strategy = SlidingWindowCounter()
    for at, count in hits:
        when.set(START + at)
        for _ in range(count):
            await strategy.decide("u", rate, one, 1)
    when.set(START + back_to)


@pytest.mark.anyio
@pytest.mark.parametrize("timeline", list(STEPPED_BACK))
@pytest.mark.parametrize("deciding", ["incr", "get", "read"])
async def test_a_refusal_after_the_clock_steps_back_tells_the_true_wait(
    backend: MemcachedBackend,
    clock: ManualClock,
    memcached_url: str,
    deciding: str,
    timeline: str,
) -> None:
    """The clock steps back past counts of the windows ahead, and the client's next hit is
    refused. The wait it is told counts those windows too, so it is the wait the in-memory
    store tells (counting only the window the clock is in, it was 30 s and 7 s: the client
    came back then and was refused again). Retried 1 ms before that wait the hit is refused,
    and at it admitted. Decided by a process that does not know the key is full (`incr`), by
    the one that does (`get`: it reads the window's counter instead), and read without
    charging (`evaluate_all(commit=False)`)."""
    rate, _, _, wait = STEPPED_BACK[timeline]
    strategy = SlidingWindowCounter()
    reference_clock = ManualClock(START)
    reference = InMemoryBackend(namespace="reference", clock=reference_clock)
    other = MemcachedBackend(memcached_url, namespace=backend.namespace, clock=clock)
    try:
        await _stepped_back(backend, clock, timeline)
        await _stepped_back(reference, reference_clock, timeline)
        expected = await strategy.decide("u", rate, reference, 1)
        assert not expected.allowed and expected.wait_ms == wait, expected
        if deciding == "read":
            told = await backend.evaluate_all(
                items(strategy, "u", [rate], 1, backend), commit=False
            )
        else:
            told = await strategy.decide("u", rate, other if deciding == "incr" else backend, 1)
        assert (told.allowed, told.wait_ms) == (False, wait), told
        clock.advance(ms=wait - 1)
        early = await strategy.decide("u", rate, backend, 1)
        assert not early.allowed and early.wait_ms == 1, early
        clock.advance(ms=1)
        assert (await strategy.decide("u", rate, backend, 1)).allowed
    finally:
        await reference.close()
        await other.close()
