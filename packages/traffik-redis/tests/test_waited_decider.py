"""A throttle's prepared Redis decisions (`RedisBackend.waited_decider`) are those of
`strategy.decide`: the same decisions and the same stored state on the same timeline, one
`EVALSHA` each; a throttle takes them on its hot path; and a test that replaces `evaluate`
on the backend still sees every decision."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from unittest.mock import patch

import pytest
from redis.asyncio import Redis
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.redis import RedisBackend
from traffik.clock import ManualClock
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, TokenBucket
from traffik.strategies.steps import IN_PLACE_COUNTER, IN_PLACE_STATE, in_place_kind

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

STATE_STRATEGIES = [cls for cls in BUILTIN_STRATEGIES if in_place_kind(cls()) == IN_PLACE_STATE]


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisBackend, RedisBackend, ManualClock]]:
    """Two backends on one clock: one decides through `waited_decider`, the other through
    `strategy.decide`."""
    clock = ManualClock(1_700_000_000.0)
    fast = RedisBackend(redis_url, namespace="waited-fast", clock=clock)
    plain = RedisBackend(redis_url, namespace="waited-plain", clock=clock)
    yield fast, plain, clock
    for backend in (fast, plain):
        await backend.reset()
        await backend.close()


def _request() -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/items",
        "root_path": "",
        "headers": [],
        "client": ("10.1.2.3", 4000),
        "app": None,
    }
    return Request(scope)


def test_every_state_strategy_is_covered() -> None:
    assert len(STATE_STRATEGIES) >= 6, STATE_STRATEGIES


@pytest.mark.parametrize("cost", [1, 2])
@pytest.mark.parametrize("strategy_cls", STATE_STRATEGIES, ids=lambda cls: cls.__name__)
async def test_same_decisions_and_state_as_strategy_decide(
    pair: tuple[RedisBackend, RedisBackend, ManualClock],
    raw: Redis,
    strategy_cls: type,
    cost: int,
) -> None:
    fast, plain, clock = pair
    strategy, rate = strategy_cls(), Rate.parse("5/s")
    decide = fast.waited_decider(strategy, rate, cost, IN_PLACE_STATE)
    assert decide is not None
    steps = random.Random(f"{strategy_cls.__name__}-{cost}")
    allowed = refused = 0
    for _ in range(60):
        clock.advance(ms=steps.choice([0, 0, 1, 37, 120, 260, 900]))
        got = await decide("client")
        expected = await strategy.decide("client", rate, plain, cost)
        assert got == expected
        allowed += got.allowed
        refused += not got.allowed
        stored = await raw.get(fast.get_key("client") + strategy.suffix)
        assert stored == await raw.get(plain.get_key("client") + strategy.suffix)
    assert allowed and refused  # the timeline reached both answers


async def test_server_clock_decisions_count_down(redis_url: str) -> None:
    backend = RedisBackend(redis_url, namespace="waited-server-clock")
    try:
        decide = backend.waited_decider(TokenBucket(), Rate.parse("1000/h"), 1, IN_PLACE_STATE)
        assert decide is not None
        remaining = [(await decide("client")).remaining for _ in range(3)]
        assert remaining == [999, 998, 997]
    finally:
        await backend.reset()
        await backend.close()


async def test_none_for_counters_and_rates_decided_without_the_store(
    pair: tuple[RedisBackend, RedisBackend, ManualClock],
) -> None:
    fast, _, _ = pair
    assert fast.waited_decider(FixedWindow(), Rate.parse("5/s"), 1, IN_PLACE_COUNTER) is None
    # A cost above the capacity is refused without the store, by `strategy.decide`.
    assert fast.waited_decider(TokenBucket(), Rate.parse("5/s"), 6, IN_PLACE_STATE) is None


async def test_a_throttle_decides_through_it(
    pair: tuple[RedisBackend, RedisBackend, ManualClock], raw: Redis
) -> None:
    fast, _, _ = pair
    throttle = HTTPThrottle("waited", rate="3/min", backend=fast, strategy=TokenBucket())
    request = _request()
    for _ in range(3):
        await throttle.hit(request)
    assert throttle._decider[0] is fast and throttle._decider[2] is not None
    with pytest.raises(Exception) as refused:
        await throttle.hit(request)
    assert getattr(refused.value, "status_code", None) == 429


async def test_a_replaced_evaluate_sees_every_decision(
    pair: tuple[RedisBackend, RedisBackend, ManualClock],
) -> None:
    fast, _, _ = pair
    strategy, rate = TokenBucket(), Rate.parse("5/s")
    decide = fast.waited_decider(strategy, rate, 1, IN_PLACE_STATE)
    assert decide is not None
    failing = patch.object(fast, "evaluate", side_effect=RuntimeError("store down"))
    with failing as evaluate, pytest.raises(RuntimeError, match="store down"):
        await decide("client")
    assert evaluate.call_count == 1
    assert (await decide("client")).allowed  # the patch gone, the prepared path again
