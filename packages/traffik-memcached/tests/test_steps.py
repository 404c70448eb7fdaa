"""Several items decided in turn: what a refusal or a failure gives back, and what refunds keep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Callable

import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.backends.memcached._counters import uncount
from traffik.backends.memcached._ring import Ring
from traffik.clock import ManualClock
from traffik.exceptions import BackendConnectionError
from traffik.rates import Rate, parse_rates
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, Strategy
from traffik.strategies.steps import Item, items

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]

_IDS = [cls.__name__ for cls in BUILTIN_STRATEGIES]
LOOSE, TIGHT = Rate.parse("10/hour"), Rate.parse("2/hour")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_040.0)


@pytest.fixture
async def backend(memcached_url: str, clock: ManualClock) -> AsyncIterator[MemcachedBackend]:
    backend = MemcachedBackend(memcached_url, namespace=f"steps-{time.time_ns()}", clock=clock)
    yield backend
    await backend.reset()
    await backend.close()


async def _seen(backend: MemcachedBackend, item: Item) -> tuple[Any, ...]:
    """What is stored for `item`, and what a hit on it alone would be told."""
    peek = await backend.evaluate_all([item], commit=False)
    return await backend.get(item.key), peek.allowed, peek.remaining, peek.wait_ms


@pytest.mark.parametrize("cls", BUILTIN_STRATEGIES, ids=_IDS)
async def test_a_later_item_refusing_gives_back_what_the_earlier_took(
    backend: MemcachedBackend, cls: type[Strategy]
) -> None:
    strategy = cls()
    loose, tight = items(strategy, "client", (LOOSE, TIGHT), 1, backend)
    for _ in range(2):
        assert (await backend.evaluate_all([loose, tight])).allowed
    before = await _seen(backend, loose)
    refused = await backend.evaluate_all([loose, tight])
    assert not refused.allowed and getattr(refused, "refused", None) == 1
    assert await _seen(backend, loose) == before
    if isinstance(strategy, FixedWindow):
        assert await backend.get(tight.key) == "2"  # the refusing counter gave its count back


@pytest.mark.parametrize("cls", BUILTIN_STRATEGIES, ids=_IDS)
async def test_the_items_after_a_refusal_are_only_read(
    backend: MemcachedBackend, cls: type[Strategy]
) -> None:
    strategy = cls()
    tight, loose = items(strategy, "client", (TIGHT, LOOSE), 1, backend)
    for _ in range(2):
        assert (await backend.evaluate_all([tight, loose])).allowed
    before = await _seen(backend, loose)
    refused = await backend.evaluate_all([tight, loose])
    assert not refused.allowed and getattr(refused, "refused", None) == 0
    assert await _seen(backend, loose) == before


@pytest.mark.parametrize("cls", BUILTIN_STRATEGIES, ids=_IDS)
async def test_a_failing_later_item_gives_back_what_the_earlier_took(
    start_memcached: Callable[[], Any], cls: type[Strategy]
) -> None:
    first, second = start_memcached(), start_memcached()
    backend = MemcachedBackend(
        servers=[("127.0.0.1", first.port), ("127.0.0.1", second.port)],
        namespace="failing",
        connect_timeout=0.2,
        command_timeout=0.2,
    )
    ring = Ring(["first", "second"], [str(server) for server in backend.servers])
    strategy = cls()
    keys = (f"client{i}" for i in range(1000))
    up = next(k for k in keys if ring.pick(backend.get_key(k) + strategy.suffix) == "first")
    down = next(k for k in keys if ring.pick(backend.get_key(k) + strategy.suffix) == "second")
    hit = [*items(strategy, up, (LOOSE,), 1, backend), *items(strategy, down, (LOOSE,), 1, backend)]
    try:
        assert (await backend.evaluate_all(hit)).allowed
        second.stop()
        with pytest.raises(BackendConnectionError):
            await backend.evaluate_all(hit)
        assert (await backend.evaluate_all(hit[:1], commit=False)).remaining == 8  # 10 - 1 - 1
    finally:
        await backend.close()


async def test_a_counter_gives_back_only_in_the_window_it_counted_in(
    backend: MemcachedBackend, clock: ManualClock
) -> None:
    counted = await backend.increment_with_ttl("w", 3, ttl=60)
    end = clock.ms() + counted.ttl_ms
    node, mkey = await backend._locate("w")
    await node.run(uncount(mkey, 1, end - 60_000), "test")  # an earlier window: left alone
    assert await backend.get("w") == "3"
    await node.run(uncount(mkey, 1, end), "test")
    assert await backend.get("w") == "2" and await backend.ttl("w") == 60_000


async def test_a_counter_refund_keeps_its_window_and_stops_at_zero(
    backend: MemcachedBackend, clock: ManualClock
) -> None:
    await backend.increment_with_ttl("w", 3, ttl=60)
    clock.advance(10)
    await backend.refund_all([Item(FixedWindow(), "w", Rate.parse("5/min"), 2)])
    assert await backend.get("w") == "1" and await backend.ttl("w") == 50_000
    await backend.refund_all([Item(FixedWindow(), "w", Rate.parse("5/min"), 5)])
    assert await backend.get("w") == "0" and await backend.ttl("w") == 50_000
    clock.advance(50)
    await backend.refund_all([Item(FixedWindow(), "w", Rate.parse("5/min"), 5)])
    assert await backend.get("w") is None  # a closed window is left to close


@pytest.mark.parametrize("cls", BUILTIN_STRATEGIES, ids=_IDS)
@pytest.mark.parametrize("rates", ["10/hour;5/day", "5/hour;10/day"], ids=["day", "hour"])
async def test_a_burst_refused_by_one_rate_leaves_every_rate_as_one_by_one_would(
    backend: MemcachedBackend, cls: type[Strategy], rates: str
) -> None:
    """Fifty hits at once: a hit refused because others held units for a moment (units given
    back a moment later, when a later rate refused them) leaves no unit behind on any rate."""
    hit = items(cls(), "burst", parse_rates(rates), 1, backend)
    decisions = await asyncio.gather(*(backend.evaluate_all(hit) for _ in range(50)))
    assert sum(1 for decision in decisions if decision.allowed) == 5
    left = [(await backend.evaluate_all([item], commit=False)).remaining for item in hit]
    assert left == ([4, 0] if rates == "10/hour;5/day" else [0, 4])  # after one more hit
