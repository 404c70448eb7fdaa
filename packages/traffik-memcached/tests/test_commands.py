"""Commands per decision, counted by the server: one `incr` for a fixed window and a sliding window
counter, `gets`+`cas` for the others, for several rates one item after another (plus the give-back
when one refuses), and at most 1.5 per decision for 50 concurrent hits on one key.

The server counts a `get` once per key (`cmd_get`): a sliding window counter's refusal whose wait
reaches the next window reads that window's counter too (the wait a retry finds after a clock
stepped back, `_sliding.with_windows_ahead`): two keys in its one `get` while the key is known
full, else a `get` of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Callable

import aiomcache
import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.rates import Rate, parse_rates
from traffik.strategies import (
    BUILTIN_STRATEGIES,
    GCRA,
    FixedWindow,
    SlidingWindowCounter,
    TokenBucket,
)
from traffik.strategies.steps import items

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]

_COUNTED = (
    "cmd_get",  # one per key in get/gets
    "cmd_set",  # set, add, cas, replace, append, prepend
    "cmd_touch",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "delete_hits",
    "delete_misses",
)
DECISIONS = 20
RATE = Rate.parse("1000/hour")


async def _commands(client: aiomcache.Client) -> int:
    stats = await client.stats()
    return sum(int(stats[name.encode()] or 0) for name in _COUNTED)


async def _per_hit(server: Any, hit: Callable[[], Awaitable[Any]]) -> float:
    client = aiomcache.Client("127.0.0.1", server.port)
    try:
        await hit()  # creates the keys and reads the generation
        before = await _commands(client)
        for _ in range(DECISIONS):
            await hit()
        return (await _commands(client) - before) / DECISIONS
    finally:
        await client.close()


async def _per_decision(
    server: Any, backend: MemcachedBackend, strategy: Any, rate: Rate = RATE
) -> float:
    return await _per_hit(server, lambda: strategy.decide("u", rate, backend, 1))


@pytest.fixture
def backend(memcached_server: Any) -> MemcachedBackend:
    # a long generation cache, so the counts below are the decisions' own commands
    return MemcachedBackend(memcached_server.url, namespace="count", generation_refresh=3600)


async def test_fixed_window_is_one_command(
    memcached_server: Any, backend: MemcachedBackend
) -> None:
    assert await _per_decision(memcached_server, backend, FixedWindow()) == 1
    assert (
        await _per_decision(memcached_server, backend, FixedWindow(), Rate.parse("1/hour")) == 1
    ), "rejected"
    await backend.close()


async def test_a_sliding_window_counter_is_one_command(
    memcached_server: Any, backend: MemcachedBackend
) -> None:
    assert await _per_decision(memcached_server, backend, SlidingWindowCounter()) == 1
    await backend.close()


@pytest.mark.parametrize("strategy", [TokenBucket(), GCRA()], ids=["TokenBucket", "GCRA"])
async def test_state_strategies_are_two_commands(
    memcached_server: Any, backend: MemcachedBackend, strategy: Any
) -> None:
    assert await _per_decision(memcached_server, backend, strategy) == 2
    await backend.close()


@pytest.mark.parametrize(
    "strategy", BUILTIN_STRATEGIES, ids=[cls.__name__ for cls in BUILTIN_STRATEGIES]
)
async def test_a_rejection_is_one_read(
    memcached_server: Any, backend: MemcachedBackend, strategy: type
) -> None:
    rate = Rate.parse("1/hour")
    await strategy().decide("u", rate, backend, 1)
    keys = 2 if strategy is SlidingWindowCounter else 1  # (its window's counter and the next)
    assert await _per_decision(memcached_server, backend, strategy(), rate) == keys
    await backend.close()


async def test_the_generation_is_read_at_most_once_per_refresh(memcached_server: Any) -> None:
    backend = MemcachedBackend(memcached_server.url, namespace="count", generation_refresh=1.0)
    assert await _per_decision(memcached_server, backend, FixedWindow()) <= 1 + 1 / DECISIONS
    await backend.close()


# rates -> commands per decision for FixedWindow's counters, SlidingWindowCounter's window
# counters, and a state strategy (a refused hit of several rates leaves every rate as it found
# it: a fixed-window counter that counted it gives it back, one `decr`; alone it keeps it). A
# refusing sliding window reads the next window's counter too: in its one `get` (2 keys) while
# known full, in a `get` of its own when only read.
SEVERAL_RATES = {
    "1000/hour": (1, 1, 2),  # allowed
    "1/hour": (1, 2, 1),  # refused
    "1000/hour;2000/day": (2, 2, 4),  # allowed: each item taken
    "1000/hour;1/day": (4, 4, 5),  # refused by the second: the first taken, then given back
    "1/hour;1000/day": (3, 3, 2),  # refused by the first: the second only read
    "1/hour;1/day": (3, 4, 2),  # refused by both: the second only read
}
_COLUMN: dict[type, int] = {FixedWindow: 0, SlidingWindowCounter: 1}


@pytest.mark.parametrize("rates", list(SEVERAL_RATES))
@pytest.mark.parametrize(
    "strategy", BUILTIN_STRATEGIES, ids=[cls.__name__ for cls in BUILTIN_STRATEGIES]
)
async def test_several_rates_are_decided_one_item_after_another(
    memcached_server: Any, backend: MemcachedBackend, strategy: type, rates: str
) -> None:
    hit = items(strategy(), "u", parse_rates(rates), 1, backend)
    expected = SEVERAL_RATES[rates][_COLUMN.get(strategy, 2)]
    assert await _per_hit(memcached_server, lambda: backend.evaluate_all(hit)) == expected
    await backend.close()


CONCURRENT = 50


@pytest.mark.parametrize("rate", ["10000/hour", "1/hour"], ids=["admitted", "refused"])
@pytest.mark.parametrize(
    "strategy", BUILTIN_STRATEGIES, ids=[cls.__name__ for cls in BUILTIN_STRATEGIES]
)
async def test_concurrent_hits_on_one_key_cost_at_most_one_and_a_half_commands(
    memcached_server: Any, backend: MemcachedBackend, strategy: type, rate: str
) -> None:
    """Fifty hits at once on one key are coalesced into a few rounds (the fixed window's
    `incr`s need none)."""
    decide, parsed = strategy().decide, Rate.parse(rate)

    async def burst() -> None:
        await asyncio.gather(*(decide("hot", parsed, backend, 1) for _ in range(CONCURRENT)))

    per_burst = await _per_hit(memcached_server, burst)
    assert per_burst / CONCURRENT <= 1.5
    await backend.close()
