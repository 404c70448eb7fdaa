"""RedisBackend on one server: what the conformance suite does not cover."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from traffik.backends.redis import RedisBackend
from traffik.backends.redis.native import native
from traffik.backends.store_locks import DEFAULT_LOCK_TTL
from traffik.decision import Decision
from traffik.exceptions import (
    BackendConnectionError,
    ConfigurationError,
    LockAcquisitionError,
    LockReleaseError,
)
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, StateStrategy, Strategy, TokenBucket
from traffik.strategies.base import Refund, Transition
from traffik.strategies.steps import items

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

HOSTILE_KEYS = [
    "with spaces and\ttabs",
    "ключ ✓ 🚦",
    "{hash}tag",
    "new\nline",
    "*glob?[x]",
    "",
]


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_url, namespace="backend-tests")
    yield backend
    if backend.closed():
        await backend.initialize()
    await backend.reset()
    await backend.close()


async def _exercise(backend: RedisBackend, key: str = "user") -> None:
    rate = Rate.parse("2/min")
    for cls in BUILTIN_STRATEGIES:
        strategy = cls()
        assert [(await strategy.decide(key, rate, backend, 1)).allowed for _ in range(3)] == [
            True,
            True,
            False,
        ], cls.__name__
        stat = await strategy.get_stat(key, rate, backend)
        assert stat.hits_remaining == 0 and stat.wait_ms > 0
    full = backend.get_key(key)
    await backend.set(full, "é value")
    assert await backend.get(full) == "é value"
    await backend.multi_set({full + ":a": "1", full + ":b": "2"}, expire=30)
    assert await backend.multi_get(full + ":a", full + ":b", full + ":c") == ["1", "2", None]
    assert await backend.increment(full + ":n", 3) == 3
    assert await backend.decrement(full + ":n") == 2


@pytest.mark.parametrize("decode_responses", [False, True])
async def test_a_given_client_works_and_stays_open(redis_url: str, decode_responses: bool) -> None:
    client = Redis.from_url(redis_url, decode_responses=decode_responses)
    backend = RedisBackend(client, namespace=f"given-{decode_responses}")
    try:
        await _exercise(backend)
        async with backend.lock("L", ttl=30.5):  # (a life no slow machine outlasts)
            pass
        await backend.reset()
        await backend.close()
        assert await client.ping()
    finally:
        await client.aclose()


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
async def test_hostile_keys(backend: RedisBackend, key: str) -> None:
    await _exercise(backend, key)


async def test_reset_treats_the_namespace_literally(redis_url: str, raw: Redis) -> None:
    globby = RedisBackend(redis_url, namespace="a*[b]?")
    try:
        await raw.set("aXXb:k", "other")
        await raw.set("a*[b]?X:k", "other")
        await globby.set(globby.get_key("k"), "mine")
        await globby.reset()
        assert await raw.get("aXXb:k") == b"other"
        assert await raw.get("a*[b]?X:k") == b"other"
        assert await raw.get("a*[b]?:k") is None
    finally:
        await raw.delete("aXXb:k", "a*[b]?X:k")
        await globby.close()


async def test_reset_removes_many_keys_in_batches(backend: RedisBackend, raw: Redis) -> None:
    await backend.multi_set({backend.get_key(f"k{i}"): "1" for i in range(2_500)})
    await backend.reset()
    assert await raw.keys("backend-tests:*") == []


async def test_raw_keys_are_kept_inside_the_namespace(backend: RedisBackend, raw: Redis) -> None:
    await backend.set("bare", "1")
    assert await raw.get("backend-tests:bare") == b"1"
    assert await backend.get("bare") == await backend.get(backend.get_key("bare")) == "1"


def _lived(started: float) -> float:
    """Milliseconds since `started` (monotonic), plus the one a key lives past its expiry."""
    return (time.monotonic() - started) * 1000 + 1


async def test_increment_with_ttl_is_never_immortal(backend: RedisBackend, raw: Redis) -> None:
    key = backend.get_key("counter")
    # 10 s, not less: the second call must find the counter alive on the server's clock
    first = await backend.increment_with_ttl(key, amount=1, ttl=10)
    assert first == 1 and 0 < first.ttl_ms <= 10_000  # type: ignore[attr-defined]
    second = await backend.increment_with_ttl(key, amount=2, ttl=60)
    assert second == 3 and second.ttl_ms <= 10_000  # type: ignore[attr-defined]
    assert 0 < await raw.pttl(key) <= 10_000

    immortal = backend.get_key("immortal")
    assert await backend.increment(immortal) == 1
    assert await raw.pttl(immortal) == -1
    assert await backend.increment_with_ttl(immortal, amount=1, ttl=30) == 2
    assert 0 < await raw.pttl(immortal) <= 30_000


async def test_float_expiries_and_ttl(backend: RedisBackend) -> None:
    key = backend.get_key("k")
    assert await backend.ttl(key) is None
    # Fractions of a second kept (not 30 nor 31 s), bounded by the time the calls took: lives
    # long enough that no slow machine sees the key gone.
    started = time.monotonic()
    await backend.set(key, "v", expire=30.5)
    left = await backend.ttl(key)
    assert left is not None and 30_500 - _lived(started) <= left <= 30_500
    started = time.monotonic()
    assert await backend.expire(key, 20.25) is True
    left = await backend.ttl(key)
    assert left is not None and 20_250 - _lived(started) <= left <= 20_250
    await backend.set(key, "v")
    assert await backend.ttl(key) is None


async def test_amounts_must_be_whole(backend: RedisBackend) -> None:
    with pytest.raises(ValueError, match=r"amount=1\.5"):
        await backend.increment("k", 1.5)  # type: ignore[arg-type]
    assert await backend.increment("k", 2.0) == 2  # type: ignore[arg-type]


# -- locks -----------------------------------------------------------------------------------


async def test_lock_with_float_ttl_expires_and_leaves_nothing(
    backend: RedisBackend, raw: Redis
) -> None:
    started = time.monotonic()
    async with backend.lock("res", ttl=10.0):
        keys = await raw.keys("backend-tests:*")
        assert keys == [b"backend-tests:res"]
        assert 10_000 - _lived(started) <= await raw.pttl(keys[0]) + 1 <= 10_000
    assert await raw.keys("backend-tests:*") == []


@pytest.mark.parametrize("take", ["lock", "get_lock"])
async def test_a_lock_given_no_ttl_still_expires(
    backend: RedisBackend, raw: Redis, take: str
) -> None:
    """A holder that crashes cannot block a lock name for ever: with no ttl (and no
    `lock_ttl` default on the backend) the lock lives `DEFAULT_LOCK_TTL` seconds, as on
    Memcached and SQLite."""
    started = time.monotonic()
    if take == "lock":
        async with backend.lock("no-ttl"):
            left = await raw.pttl(b"backend-tests:no-ttl")
    else:  # taken and never released: a holder that crashed
        assert await backend.get_lock(backend.get_key("no-ttl")).acquire(blocking=False)
        left = await raw.pttl(b"backend-tests:no-ttl")
        await raw.delete(b"backend-tests:no-ttl")
    ttl_ms = int(DEFAULT_LOCK_TTL * 1000)
    assert ttl_ms - _lived(started) <= left + 1 <= ttl_ms


async def test_lock_reentrancy_and_ownership(backend: RedisBackend) -> None:
    async with backend.lock("re", reentrant=True) as lock:
        assert lock.is_owner()
        async with backend.lock("re", reentrant=True):
            pass
        assert lock.is_owner()

        async def other_task() -> bool:
            return lock.is_owner()

        assert not await asyncio.create_task(other_task())
        with pytest.raises(LockAcquisitionError):
            async with backend.lock("re"):
                pass
    assert not lock.is_owner()


async def test_releasing_an_expired_lock_taken_by_another(
    backend: RedisBackend, redis_url: str
) -> None:
    other = RedisBackend(redis_url, namespace="backend-tests")
    try:
        with pytest.raises(LockReleaseError, match="expired"):
            async with backend.lock("short", ttl=0.05):
                await asyncio.sleep(0.1)
                assert await other.get_lock(backend.get_key("short"), ttl=5).acquire(blocking=False)
    finally:
        await other.close()


async def test_lock_waits_until_released(backend: RedisBackend, redis_url: str) -> None:
    other = RedisBackend(redis_url, namespace="backend-tests")
    order: list[str] = []

    async def holder() -> None:
        async with other.lock("wait", ttl=5):
            order.append("held")
            await asyncio.sleep(0.05)
            order.append("releasing")  # after the release the waiter may resume before us

    try:
        task = asyncio.create_task(holder())
        while not order:
            await asyncio.sleep(0.001)
        async with backend.lock("wait", ttl=5, blocking_timeout=30):  # (ends at the release)
            order.append("acquired")
        await task
    finally:
        await other.close()
    assert order == ["held", "releasing", "acquired"]


# -- strategies without a script ------------------------------------------------------------


class Halving(StateStrategy):
    """A user's strategy: no script, its own transition; the generic locked path runs it."""

    name = "halving"
    suffix = ":half"

    def transition(self, state: Any, now: int, rate: Rate, cost: int) -> Transition:
        used = state[0] if state else 0
        if 2 * (used + cost) > rate.limit:
            return Decision(False, 1_000, 0, 1_000, rate.limit), None, 0
        used += cost
        return Decision(True, 0, rate.limit // 2 - used, 0, rate.limit), [used], 60_000


class StrictTokenBucket(TokenBucket):
    """Keeps the token bucket's script name but changes the transition: not run as a script."""

    def transition(self, state: Any, now: int, rate: Rate, cost: int) -> Transition:
        decision, new_state, ttl = super().transition(state, now, rate, cost * 2)
        return decision, new_state, ttl


class HalfRefundTokenBucket(TokenBucket):
    """Keeps the transition but gives back half: refunds take the generic path."""

    def refund(self, state: Any, now: int, rate: Rate, cost: int) -> Refund:
        return super().refund(state, now, rate, cost // 2)


@pytest.mark.parametrize(
    "strategy", [Halving(), StrictTokenBucket(), HalfRefundTokenBucket()], ids=repr
)
async def test_strategies_without_a_script_take_the_generic_path(
    backend: RedisBackend, strategy: Strategy
) -> None:
    assert native(strategy) is None
    rate = Rate.parse("4/min")
    allowed = [(await strategy.decide("u", rate, backend, 1)).allowed for _ in range(3)]
    assert allowed == [True, True, isinstance(strategy, HalfRefundTokenBucket)]


async def test_items_without_a_script_are_decided_together_on_the_generic_path(
    backend: RedisBackend,
) -> None:
    hit = [
        *items(StrictTokenBucket(), "strict", (Rate.parse("4/min"),), 1, backend),
        *items(TokenBucket(), "plain", (Rate.parse("5/min"),), 1, backend),
    ]
    assert [(await backend.evaluate_all(hit)).allowed for _ in range(3)] == [True, True, False]
    assert (await backend.evaluate_all(hit[1:], commit=False)).remaining == 2  # charged twice
    await backend.refund_all(hit)
    assert (await backend.evaluate_all(hit[1:], commit=False)).remaining == 3


# -- lifecycle ------------------------------------------------------------------------------


async def test_closed_backend_refuses(backend: RedisBackend) -> None:
    await backend.increment_with_ttl(backend.get_key("x"))
    await backend.close()
    with pytest.raises(BackendConnectionError, match="closed"):
        await TokenBucket().decide("u", Rate.parse("1/min"), backend, 1)


def _connections_named(redis_url: str, name: str) -> int:
    """How many connections the server has from clients named `name`, once closed ones are gone."""
    with redis.Redis.from_url(redis_url) as meter:
        for _ in range(100):
            count = sum(1 for client in meter.client_list() if client["name"] == name)
            if not count:
                return 0
            time.sleep(0.01)
        return count


def test_one_backend_across_event_loops(redis_url: str) -> None:
    backend = RedisBackend(redis_url, namespace="loops", url_kwargs={"client_name": "loops"})
    rate = Rate.parse("5/min")

    async def hit() -> bool:
        return (await TokenBucket().decide("u", rate, backend, 1)).allowed

    async def finish() -> None:
        await backend.reset()
        await backend.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(hit())
        assert _connections_named(redis_url, "loops") == 0  # closed in their loop, as it ended
        assert asyncio.run(hit())  # a new loop: a new client
        assert asyncio.run(hit())
        asyncio.run(finish())
        gc.collect()
    assert [str(w.message) for w in caught] == []


async def test_an_async_factory_is_awaited_once_per_loop_and_its_client_owned(
    redis_url: str,
) -> None:
    made: list[asyncio.AbstractEventLoop] = []

    async def factory() -> Redis:
        made.append(asyncio.get_running_loop())
        await asyncio.sleep(0.01)  # a factory may wait (look a server up, read a secret)
        return Redis.from_url(redis_url, client_name="factory")

    backend = RedisBackend(factory, namespace="factory")
    assert made == [] and "factory()" in backend.server  # nothing runs until first use
    rate = Rate.parse("3/min")
    try:
        decisions = await asyncio.gather(
            *(TokenBucket().decide("u", rate, backend, 1) for _ in range(5))
        )
        assert [d.allowed for d in decisions].count(True) == 3
        assert made == [asyncio.get_running_loop()]  # once, in this loop, for every first use
        await _exercise(backend, "other")
        assert _connections_named(redis_url, "factory") > 0
    finally:
        await backend.reset()
        await backend.close()
    assert _connections_named(redis_url, "factory") == 0  # the backend closed what it made


@pytest.mark.parametrize(
    ("factory", "error", "names"),
    [
        (lambda: asyncio.sleep(0, result=42), ConfigurationError, "returned 42 (int)"),
        (
            lambda: _raises(ConnectionRefusedError("no such host")),
            BackendConnectionError,
            "no such host",
        ),
    ],
)
async def test_a_failing_factory_fails_initialisation_naming_the_reason(
    factory: Any, error: type[Exception], names: str
) -> None:
    backend = RedisBackend(factory, namespace="factory-fails")
    with pytest.raises(error) as caught:
        await TokenBucket().decide("u", Rate.parse("3/min"), backend, 1)
    assert names in str(caught.value) and "<lambda>()" in str(caught.value)
    assert not backend.initialized


async def _raises(error: Exception) -> Redis:
    raise error


def test_a_factory_that_takes_arguments_is_refused() -> None:
    async def factory(url: str) -> Redis:
        return Redis.from_url(url)

    with pytest.raises(ConfigurationError, match=r"factory.* must take no arguments"):
        RedisBackend(factory, namespace="f")
