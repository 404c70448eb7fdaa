"""Logs that grow with the limit are refused when they could outgrow a memcached item, and the
largest limit allowed really fits one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.backends.memcached._item_size import entries, growth, value_budget
from traffik.backends.memcached._keys import MAX_KEY_BYTES
from traffik.clock import ManualClock
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import (
    GCRA,
    FixedWindow,
    LeakyBucketWithQueue,
    Priority,
    PriorityQueue,
    SlidingWindowCounter,
    SlidingWindowLog,
    StateStrategy,
    TokenBucket,
)
from traffik.strategies.state import encode_state

NOW = 1_700_000_000_000
HOUR = Rate(limit=1, hours=1).expire


def _largest(backend: MemcachedBackend, strategy: StateStrategy, period_ms: int) -> int:
    """The largest limit `validate` accepts, found by trying."""
    low, high = 1, 10**7
    while low < high:
        middle = (low + high + 1) // 2
        try:
            backend.validate(strategy, Rate(limit=middle, milliseconds=period_ms))
            low = middle
        except ConfigurationError:
            high = middle - 1
    return low


def _worst_log(limit: int) -> list[int]:
    """A `SlidingWindowLog` state of `limit` hits of cost 1, each in its own millisecond."""
    return [value for i in range(limit) for value in (NOW - limit + 1 + i, 1)]


def _worst_queue(limit: int, period_ms: int) -> list[int]:
    """A `LeakyBucketWithQueue` state of `limit` undrained hits of cost 1, and its rate."""
    entries = (value for i in range(limit) for value in (NOW - limit + 1 + i, period_ms))
    return [NOW, *entries, limit, -period_ms]


def _worst_priorities(limit: int, entries: int) -> list[int]:
    """A `PriorityQueue` state of `entries` entries holding `4 x limit` units (each priority
    counts its own and those above it), spread evenly, oldest first, the last at `NOW`."""
    cost = 4 * limit // entries
    return [
        value
        for i in range(entries)
        for value in (NOW - entries + 1 + i, 1 + 4 * i // entries, cost)
    ]


UNBOUNDED_QUEUE = PriorityQueue(default_priority=Priority.CRITICAL, max_queue_size=10**7)
"""A priority queue whose worst case is bounded by its limit (`4 x limit` entries of cost 1),
deciding CRITICAL hits (a key naming no priority)."""


@pytest.mark.parametrize("limit", [1, 7, 1000])
@pytest.mark.parametrize("period_ms", [1, 999, HOUR, 40 * 24 * HOUR])
def test_the_worst_case_is_what_the_state_codec_writes(limit: int, period_ms: int) -> None:
    rate = Rate(limit=limit, milliseconds=period_ms)
    for strategy, state in (
        (SlidingWindowLog(), _worst_log(limit)),
        (LeakyBucketWithQueue(), _worst_queue(limit, period_ms)),
        (UNBOUNDED_QUEUE, _worst_priorities(limit, 4 * limit)),
        (PriorityQueue(max_queue_size=limit), _worst_priorities(limit, limit)),
    ):
        grows = growth(strategy, rate)
        assert grows is not None
        fixed, per_entry = grows
        assert len(encode_state(state)) == fixed + per_entry * entries(strategy, limit)


def test_a_log_that_could_outgrow_an_item_is_refused_naming_the_largest_limit() -> None:
    backend = MemcachedBackend()
    largest = _largest(backend, SlidingWindowLog(), HOUR)
    assert largest == (value_budget(1024 * 1024) + 1) // 16 == 65_512
    with pytest.raises(ConfigurationError) as refused:
        backend.validate(SlidingWindowLog(), Rate(limit=largest + 1, hours=1))
    message = str(refused.value)
    assert "SlidingWindowLog with rate '65513/h'" in message
    assert "the largest limit that fits is 65,512 ('65512/h')" in message
    assert "max_item_bytes=1,048,576" in message
    queue = _largest(backend, LeakyBucketWithQueue(), HOUR)
    assert queue == (value_budget(1024 * 1024) - 13) // (13 + 2 + len(str(HOUR)))
    with pytest.raises(ConfigurationError, match=f"the largest limit that fits is {queue:,}"):
        backend.validate(LeakyBucketWithQueue(), Rate(limit=queue + 1, hours=1))


def test_a_priority_queue_is_bounded_by_its_limit_and_its_queue_size() -> None:
    backend = MemcachedBackend()
    backend.validate(PriorityQueue(), Rate(limit=10**9, hours=1))  # 1,000 entries at most
    largest = _largest(backend, UNBOUNDED_QUEUE, HOUR)
    assert largest == (value_budget(1024 * 1024) + 1) // (4 * (13 + 5)) == 14_558
    with pytest.raises(ConfigurationError) as refused:
        backend.validate(PriorityQueue(max_queue_size=100_000), Rate(limit=100_000, hours=1))
    assert "max_queue_size=100,000 bounds its entries too" in str(refused.value)


def test_the_item_size_is_a_setting() -> None:
    small = MemcachedBackend(max_item_bytes=64 * 1024)
    assert _largest(small, SlidingWindowLog(), HOUR) == (value_budget(64 * 1024) + 1) // 16
    with pytest.raises(
        ConfigurationError, match=r"max_item_bytes=512\): must be a whole number >= 1024"
    ):
        MemcachedBackend(max_item_bytes=512)


@pytest.mark.parametrize(
    "strategy",
    [FixedWindow(), SlidingWindowCounter(), TokenBucket(), GCRA(), object()],
    ids=["FixedWindow", "SlidingWindowCounter", "TokenBucket", "GCRA", "third-party"],
)
def test_states_that_do_not_grow_are_never_refused(strategy: Any) -> None:
    MemcachedBackend().validate(strategy, Rate(limit=10**9, days=1))
    MemcachedBackend().validate(SlidingWindowLog(), Rate())


def test_a_throttle_with_this_backend_is_refused_when_built() -> None:
    pytest.importorskip("starlette")
    from traffik.throttles import HTTPThrottle

    backend = MemcachedBackend()
    with pytest.raises(ConfigurationError, match="largest limit that fits is 65,512"):
        HTTPThrottle("log", "100000/h", strategy=SlidingWindowLog(), backend=backend)
    HTTPThrottle("log", "65512/h", strategy=SlidingWindowLog(), backend=backend)


@pytest.fixture
async def backend(memcached_url: str) -> AsyncIterator[MemcachedBackend]:
    backend = MemcachedBackend(
        memcached_url, namespace=f"items-{time.time_ns()}", clock=ManualClock(NOW / 1000)
    )
    yield backend
    await backend.reset()
    await backend.close()


@pytest.mark.memcached
@pytest.mark.anyio
async def test_first_use_refuses_without_a_fixed_backend(backend: MemcachedBackend) -> None:
    rate = Rate(limit=100_000, hours=1)
    for _ in range(2):  # a refused pair is not remembered as checked
        with pytest.raises(ConfigurationError, match="largest limit that fits is 65,512"):
            await SlidingWindowLog().decide("u", rate, backend, 1)
    assert await backend.get(backend.get_key("u") + SlidingWindowLog.suffix) is None


@pytest.mark.memcached
@pytest.mark.anyio
async def test_a_per_request_backend_reaches_the_same_error(backend: MemcachedBackend) -> None:
    pytest.importorskip("starlette")
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from traffik.throttles import HTTPThrottle

    throttle = HTTPThrottle("log", "100000/h", strategy=SlidingWindowLog())

    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle.hit(request)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)])
    async with (
        backend(persistent=True, close_on_exit=False),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client,
    ):
        with pytest.raises(ConfigurationError, match="largest limit that fits is 65,512"):
            await client.get("/")


async def _longest_key(backend: MemcachedBackend, suffix: str) -> str:
    """A throttle key whose memcached key is `MAX_KEY_BYTES` long, the longest there is."""
    _, shortest = await backend._locate(backend.get_key("") + suffix)
    key = "k" * (MAX_KEY_BYTES - len(shortest))
    _, longest = await backend._locate(backend.get_key(key) + suffix)
    assert len(longest) == MAX_KEY_BYTES
    return key


@pytest.mark.memcached
@pytest.mark.anyio
@pytest.mark.parametrize(
    "strategy", [SlidingWindowLog(), LeakyBucketWithQueue(), UNBOUNDED_QUEUE], ids=repr
)
async def test_the_largest_limit_allowed_fits_a_real_item(
    backend: MemcachedBackend, strategy: StateStrategy
) -> None:
    """Fill the state to the largest limit allowed, under the longest key: the last hit's
    write is stored (no `SERVER_ERROR object too large`) and the next hit is refused."""
    largest = _largest(backend, strategy, HOUR)
    rate = Rate(limit=largest, hours=1)
    key = await _longest_key(backend, strategy.suffix)
    if isinstance(strategy, SlidingWindowLog):
        full = _worst_log(largest)
        short = full[:-2]
    elif isinstance(strategy, PriorityQueue):  # (the newest entries are CRITICAL, its own)
        full = _worst_priorities(largest, 4 * largest)
        short = full[:-3]
    else:
        full = _worst_queue(largest, HOUR)
        short = [*full[:-4], *full[-2:]]  # (the rate stays last)
    # one hit short of full; the hit at NOW (the clock's time) then adds the last entry
    await backend.set(backend.get_key(key) + strategy.suffix, encode_state(short), expire=60)
    last = await strategy.decide(key, rate, backend, 1)
    assert last.allowed and last.remaining == 0
    stored = await backend.get(backend.get_key(key) + strategy.suffix)
    assert stored is not None and len(stored) == len(encode_state(full))
    grows = growth(strategy, rate)
    assert grows is not None and len(stored) == grows[0] + grows[1] * entries(strategy, largest)
    more = entries(strategy, largest + 1) - entries(strategy, largest)  # (a limit one higher)
    assert len(stored) > value_budget(backend.max_item_bytes) - grows[1] * more
    assert not (await strategy.decide(key, rate, backend, 1)).allowed


@pytest.mark.memcached
@pytest.mark.anyio
async def test_a_server_with_a_smaller_item_size_is_named_with_what_to_fix(
    memcached_binary: str,
) -> None:
    """A server started with `-I` below the backend's `max_item_bytes`: the write it refuses
    (`SERVER_ERROR object too large for cache`) names both settings, where the log said
    "stats cas failed", which points at nothing to change."""
    from traffik.exceptions import BackendError
    from traffik.testing.servers import MemcachedServer

    server = MemcachedServer(
        memcached_binary, options=["-I", "2048", "-m", "8", "-o", "slab_chunk_max=1024"]
    ).start()
    clock = ManualClock(NOW / 1000)
    backend = MemcachedBackend(server.url, namespace="item-size", clock=clock)
    try:
        strategy, rate = SlidingWindowLog(), Rate.parse("500/min")
        with pytest.raises(BackendError) as caught:
            for _ in range(500):  # (a ms apart: one entry each in the log)
                clock.advance(0.001)
                assert (await strategy.decide("client", rate, backend, 1)).allowed
        message = str(caught.value)
        assert "-I" in message and "max_item_bytes" in message, message
    finally:
        await backend.close()
        server.stop()
