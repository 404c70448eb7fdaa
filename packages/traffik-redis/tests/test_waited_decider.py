"""A throttle's prepared Redis decisions (`RedisBackend.waited_decider`) are those of
`strategy.decide`: the same decisions and the same stored state on the same timeline, one
`EVALSHA` each, or one for the concurrent hits on a key that arrive while one is in flight;
a throttle takes them on its hot path; and a test that replaces `evaluate` (or
`increment_with_ttl`) on the backend still sees every decision."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import AsyncIterator
from unittest.mock import patch

import pytest
from redis.asyncio import Redis
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.redis import RedisBackend
from traffik.backends.redis.scripts import evalsha
from traffik.backends.redis.steps import _decisions, _pack, _program
from traffik.clock import ManualClock
from traffik.decision import Decision
from traffik.exceptions import BackendError
from traffik.rates import Rate
from traffik.strategies import (
    BUILTIN_STRATEGIES,
    GCRA,
    FixedWindow,
    LeakyBucket,
    SlidingWindowCounter,
    StateStrategy,
    TimeOfDay,
    TokenBucket,
)
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
    # Per minute, not per second: a key expires on the server's clock, whatever the manual
    # clock says, and one expiring between the two backends' turns would part them.
    strategy, rate = strategy_cls(), Rate.parse("5/min")
    decide = fast.waited_decider(strategy, rate, cost, IN_PLACE_STATE)
    assert decide is not None
    steps = random.Random(f"{strategy_cls.__name__}-{cost}")
    allowed = refused = 0
    for _ in range(60):
        clock.advance(ms=steps.choice([0, 0, 1, 2220, 7200, 15_600, 54_000]))
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


async def test_none_for_rates_and_costs_decided_without_the_store(
    pair: tuple[RedisBackend, RedisBackend, ManualClock],
) -> None:
    fast, _, _ = pair
    # A cost above the capacity is refused without the store, by `strategy.decide`.
    assert fast.waited_decider(TokenBucket(), Rate.parse("5/s"), 6, IN_PLACE_STATE) is None
    assert fast.waited_decider(FixedWindow(), Rate.parse("5/s"), 6, IN_PLACE_COUNTER) is None


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


# -- concurrent hits on one key: one EVALSHA for those that arrive while one is in flight --

COALESCED = [
    GCRA(),
    LeakyBucket(),
    SlidingWindowCounter(),
    TimeOfDay([(0, 12, 0.5), (12, 24, 1)]),  # (the bursts meet 40/h, then 20/h)
    TokenBucket(),
]


async def _evalsha_calls(raw: Redis) -> int:
    found = (await raw.info("commandstats")).get("cmdstat_evalsha", {})
    return int(found.get("calls", 0))


@pytest.mark.parametrize("cost", [1, 3])
@pytest.mark.parametrize("strategy", COALESCED, ids=lambda strategy: type(strategy).__name__)
async def test_concurrent_hits_go_together_and_decide_as_sequential_ones(
    pair: tuple[RedisBackend, RedisBackend, ManualClock],
    raw: Redis,
    strategy: StateStrategy,
    cost: int,
) -> None:
    fast, plain, clock = pair
    rate = Rate.parse("40/h")  # (a key expires on the server's clock)
    decide = fast.waited_decider(strategy, rate, cost, IN_PLACE_STATE)
    assert decide is not None
    for burst in range(3):
        before = await _evalsha_calls(raw)
        got = await asyncio.gather(*(decide("client") for _ in range(50)))
        calls = await _evalsha_calls(raw) - before
        expected = [await strategy.decide("client", rate, plain, cost) for _ in range(50)]
        assert got == expected, burst
        assert calls <= 3, calls  # the first hit alone, then the 49 others (not 50 calls)
        assert any(d.allowed for d in got) and not all(d.allowed for d in got)
        stored = await raw.get(fast.get_key("client") + strategy.suffix)
        assert stored == await raw.get(plain.get_key("client") + strategy.suffix)
        clock.advance(ms=7_560_000)  # a window and more: the next burst starts afresh


async def test_hits_of_several_costs_in_one_call_are_decided_in_turn(
    pair: tuple[RedisBackend, RedisBackend, ManualClock], raw: Redis
) -> None:
    """Mode 's' itself: a refused hit charges nothing and the hits after it still decide on
    the state as it stands (a smaller one may then be admitted)."""
    fast, plain, clock = pair
    strategy, rate = TokenBucket(), Rate.parse("5/min")  # (a key expires on the server's clock)
    costs = [3, 3, 1, 2, 1, 5, 1]
    packs = [_pack(strategy, rate, cost) for cost in costs]
    program = _program(packs[:1])
    key = fast.get_key("client") + strategy.suffix
    args = b"s" + struct.pack("<d", clock.ms()) + b"".join(p.data or b"" for p in packs)
    reply = await fast._run(program.name, evalsha, program.sha, [key] * len(costs), (args,))
    got = _decisions(reply, packs)
    expected = [await strategy.decide("client", rate, plain, cost) for cost in costs]
    assert got == expected
    assert [d.allowed for d in got] == [True, False, True, False, True, False, False]
    assert await raw.get(key) == await raw.get(plain.get_key("client") + strategy.suffix)
    assert 0 < await raw.pttl(key) <= rate.expire


async def test_a_failing_round_fails_each_of_its_hits(
    pair: tuple[RedisBackend, RedisBackend, ManualClock],
) -> None:
    fast, _, _ = pair
    decide = fast.waited_decider(TokenBucket(), Rate.parse("40/s"), 1, IN_PLACE_STATE)
    assert decide is not None
    real_run, calls = fast._run, []

    async def second_fails(*args: object) -> object:
        calls.append(args)
        if len(calls) == 2:
            raise BackendError("store down")
        return await real_run(*args)

    with patch.object(fast, "_run", second_fails):
        got = await asyncio.gather(*(decide("client") for _ in range(5)), return_exceptions=True)
    assert len(calls) == 2
    assert isinstance(got[0], Decision) and got[0].allowed
    assert all(isinstance(error, BackendError) for error in got[1:])


async def test_a_hit_cancelled_while_queued_is_not_charged(
    pair: tuple[RedisBackend, RedisBackend, ManualClock],
) -> None:
    fast, _, _ = pair
    decide = fast.waited_decider(TokenBucket(), Rate.parse("10/s"), 1, IN_PLACE_STATE)
    assert decide is not None
    tasks = [asyncio.ensure_future(decide("client")) for _ in range(5)]
    await asyncio.sleep(0)  # each task started: the first in flight, the others queued
    tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    assert [d.remaining for d in done if isinstance(d, Decision)] == [9, 8, 7, 6]
    assert (await decide("client")).remaining == 5


# -- FixedWindow's counter: concurrent hits on one key add up in one EVALSHA --


def _counted(decisions: list[Decision]) -> list[tuple[bool, object]]:
    return [(d.allowed, d.remaining) for d in decisions]


@pytest.mark.parametrize("cost", [1, 2])
async def test_counter_hits_add_up_together_as_sequential_ones(
    pair: tuple[RedisBackend, RedisBackend, ManualClock], raw: Redis, cost: int
) -> None:
    fast, plain, _ = pair
    strategy, rate = FixedWindow(), Rate.parse("30/min")
    decide = fast.waited_decider(strategy, rate, cost, IN_PLACE_COUNTER)
    assert decide is not None
    alone = await decide("client")
    assert _counted([alone]) == _counted([await strategy.decide("client", rate, plain, cost)])
    before = await _evalsha_calls(raw)
    got = await asyncio.gather(*(decide("client") for _ in range(50)))
    calls = await _evalsha_calls(raw) - before
    expected = [await strategy.decide("client", rate, plain, cost) for _ in range(50)]
    assert calls <= 3, calls
    assert _counted(got) == _counted(expected)
    assert any(d.allowed for d in got) and not all(d.allowed for d in got)
    for decision in got:  # the window's time left, from the server's TTL
        assert 0 < decision.reset_ms <= rate.expire
        assert decision.wait_ms == (0 if decision.allowed else decision.reset_ms)
    counter = fast.get_key("client") + strategy.suffix
    assert int(await raw.get(counter)) == 51 * cost
    assert 0 < await raw.pttl(counter) < rate.expire


async def test_a_replaced_increment_with_ttl_sees_every_counter_hit(
    pair: tuple[RedisBackend, RedisBackend, ManualClock],
) -> None:
    fast, _, _ = pair
    decide = fast.waited_decider(FixedWindow(), Rate.parse("5/s"), 1, IN_PLACE_COUNTER)
    assert decide is not None
    failing = patch.object(fast, "increment_with_ttl", side_effect=RuntimeError("store down"))
    with failing as increment, pytest.raises(RuntimeError, match="store down"):
        await decide("client")
    assert increment.call_count == 1
    assert (await decide("client")).remaining == 4
