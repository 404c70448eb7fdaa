"""Concurrent hits on one key, coalesced into rounds: each decided as if the hits came one after
another (the same decisions as `InMemoryBackend` on the same clock), a cancelled or failing caller
never losing the others' decisions."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiomcache
import pytest

from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.memcached import MemcachedBackend
from traffik.clock import ManualClock
from traffik.exceptions import BackendConnectionError
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, Strategy, TokenBucket
from traffik.testing.servers import MemcachedServer

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]

_COMMANDS = ("cmd_get", "cmd_set", "incr_hits", "incr_misses", "decr_hits", "decr_misses")

# FixedWindow counts with one `incr` per hit inside `evaluate`; a throttle's hits on one key
# add up in one `incr` (`MemcachedBackend.waited_decider`, tested below).
COALESCED = [cls for cls in BUILTIN_STRATEGIES if cls is not FixedWindow]
START = 1_700_000_040.0


async def _commands(client: aiomcache.Client) -> int:
    stats = await client.stats()
    return sum(int(stats[name.encode()] or 0) for name in _COMMANDS)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def backend(memcached_url: str, clock: ManualClock) -> AsyncIterator[MemcachedBackend]:
    # a long generation cache: after the warm-up no hit awaits before it queues, so the
    # hits of one `gather` arrive in order
    backend = MemcachedBackend(
        memcached_url,
        namespace=f"coalescing-{time.time_ns()}",
        clock=clock,
        generation_refresh=3600,
    )
    await backend.get("warm-up")
    yield backend
    await backend.reset()
    await backend.close()


@pytest.mark.parametrize("cls", COALESCED, ids=[cls.__name__ for cls in COALESCED])
async def test_coalesced_decisions_equal_sequential_ones(
    backend: MemcachedBackend, clock: ManualClock, cls: type[Strategy]
) -> None:
    """Bursts of hits with mixed costs, the clock moving between bursts: every decision
    (admitted, wait, remaining, reset) is the one the in-memory backend makes for the same
    hits one after another at the same times."""
    strategy, rate = cls(), Rate.parse("12/min")
    reference_clock = ManualClock(START)
    reference = InMemoryBackend(namespace="reference", clock=reference_clock)
    rng = random.Random(f"coalesce-{cls.__name__}")
    try:
        for burst in range(6):
            costs = [rng.choice([1, 1, 1, 2, 3, 5]) for _ in range(rng.randint(5, 30))]
            together = await asyncio.gather(
                *(strategy.decide("k", rate, backend, cost) for cost in costs)
            )
            one_by_one = [await strategy.decide("k", rate, reference, cost) for cost in costs]
            assert together == one_by_one, f"burst {burst}, costs {costs}"
            step = rng.choice([0, 1, 999, rng.randint(1, 3 * rate.expire)])
            clock.advance(ms=step)
            reference_clock.advance(ms=step)
    finally:
        await reference.close()


async def test_hits_of_one_round_share_one_read_and_one_write(
    backend: MemcachedBackend, memcached_url: str
) -> None:
    """The first hit runs alone (`gets`, `add`); the 49 that came while it was in flight run
    as one round (`gets`, `cas`): four commands for fifty decisions."""
    port = int(memcached_url.rsplit(":", 1)[1])
    client = aiomcache.Client("127.0.0.1", port)
    try:
        before = await _commands(client)
        decisions = await asyncio.gather(
            *(TokenBucket().decide("k", Rate.parse("30/min"), backend, 1) for _ in range(50))
        )
        assert await _commands(client) - before == 4
    finally:
        await client.close()
    assert sum(d.allowed for d in decisions) == 30
    assert len(backend._states) == 0, "an idle key keeps no lane"


async def test_a_cancelled_caller_leaves_the_others_decided(backend: MemcachedBackend) -> None:
    strategy, rate = TokenBucket(), Rate.parse("10/min")
    tasks = [asyncio.ensure_future(strategy.decide("k", rate, backend, 1)) for _ in range(20)]
    await asyncio.sleep(0)  # every hit has arrived: the first in flight, the rest queued
    tasks[0].cancel()  # the one running its own round
    tasks[5].cancel()  # one waiting for the next round
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
    decided = [r for r in results if not isinstance(r, BaseException)]
    assert len(cancelled) == 2 and len(decided) == 18
    admitted = sum(d.allowed for d in decided)
    # the first hit's round may or may not have been written when it was cancelled
    assert admitted in (9, 10)
    stat = await strategy.get_stat("k", rate, backend)
    assert stat.hits_remaining == 0


async def test_a_failing_round_fails_every_hit_in_it(
    start_memcached: Any, clock: ManualClock
) -> None:
    server: MemcachedServer = start_memcached()
    backend = MemcachedBackend(
        server.url, namespace="failing", clock=clock, command_timeout=0.2, circuit=False
    )
    strategy, rate = TokenBucket(), Rate.parse("10/min")
    try:
        assert (await strategy.decide("k", rate, backend, 1)).allowed
        server.stop()
        results = await asyncio.gather(
            *(strategy.decide("k", rate, backend, 1) for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, BackendConnectionError) for r in results), results
        assert len(backend._states) == 0
    finally:
        await backend.close()


def _request() -> Any:
    from starlette.requests import Request

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("10.0.0.1", 1)}
    return Request(scope)


async def _outcome(throttle: Any, request: Any) -> Any:
    from traffik.exceptions import ConnectionThrottled

    try:
        await throttle.hit(request)
    except ConnectionThrottled as exc:
        return ("throttled", exc.wait_period)
    return "admitted"


@pytest.mark.parametrize("cost", [1, 3])
async def test_a_throttle_s_fixed_window_hits_on_one_key_add_up_in_one_incr(
    memcached_url: str, clock: ManualClock, cost: int
) -> None:
    """Through a throttle (its prepared decider), fifty FixedWindow hits at once on one key:
    the first `incr`s alone, the 49 that came meanwhile in one `incr` of all their costs,
    each decided with the count it would have reached alone, as the in-memory backend
    decides the same hits one after another. (Refusals not remembered: every hit reaches
    the store.)"""
    from traffik import HTTPThrottle

    backend = MemcachedBackend(
        memcached_url,
        namespace=f"fixed-{time.time_ns()}",
        clock=clock,
        generation_refresh=3600,
        cache_refusals=False,
    )
    reference = InMemoryBackend(namespace="reference", clock=ManualClock(START))
    fast = HTTPThrottle("t", rate="40/min", backend=backend, strategy=FixedWindow(), cost=cost)
    slow = HTTPThrottle("t", rate="40/min", backend=reference, strategy=FixedWindow(), cost=cost)
    port = int(memcached_url.rsplit(":", 1)[1])
    client = aiomcache.Client("127.0.0.1", port)
    request = _request()
    try:
        await backend.get("warm-up")
        for burst in range(3):
            before = await _commands(client)
            together = await asyncio.gather(*(_outcome(fast, request) for _ in range(50)))
            # two `incr`s, and a command or two to open the window when the first finds it
            # closed (`window_hit`), where one by one would cost 50
            assert await _commands(client) - before <= 5, f"burst {burst}"
            one_by_one = [await _outcome(slow, request) for _ in range(50)]
            assert together == one_by_one, f"burst {burst}"
            assert together[0] == "admitted" and together[-1] != "admitted"
            step = 61_000  # a new window each burst
            clock.advance(ms=step)
            reference.clock.advance(ms=step)  # type: ignore[attr-defined]
        assert fast._decider[2] is not None, "the throttle took the prepared decider"
    finally:
        await client.close()
        await backend.reset()
        await backend.close()
        await reference.close()
