"""Steps of several items on a Redis Cluster, through throttles: how many scripts each kind of
step takes, bursts that admit and store what the in-memory backend does, and a step that
fails on one node taking nothing from the others."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis
from redis.crc import key_slot
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle, throttled
from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.redis import RedisBackend
from traffik.clock import ManualClock
from traffik.exceptions import BackendError
from traffik.rates import parse_rates
from traffik.strategies import GCRA, FixedWindow, SlidingWindowLog, Strategy, TokenBucket
from traffik.strategies.steps import items
from traffik.testing.servers import RedisCluster, require_binaries

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

ROUTES = ("/rates", "/same-client", "/two-clients", "/quota")
"""A throttle of two rates; two throttles of one client (one tag); two throttles of two
clients (two tags, two slots); a quota context of two throttles and two contexts."""


def _user(request: Request) -> str:
    return request.headers["x-user"]


def _app(backend: ThrottleBackend, strategy: Strategy, short: str, long: str) -> Starlette:
    """The four kinds of step, each on its own route, every throttle on `backend`, with the
    rates `short` and `long` (one throttle of both, or one throttle each)."""

    def throttle(uid: str, rate: str, **options: Any) -> HTTPThrottle:
        return HTTPThrottle(uid, rate, backend=backend, strategy=strategy, **options)

    rates = throttle("rates", f"{short};{long}")
    burst, sustained = throttle("burst", short), throttle("sustained", long)
    by_address, by_user = throttle("address", short), throttle("user", long, identifier=_user)
    owner, other = (
        throttle("owner", f"{short};{long}"),
        throttle("other", "20/" + long.split("/")[1]),
    )

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def quota(request: Request) -> PlainTextResponse:
        async with owner.quota(request, {"scope": "reads"}) as hits:
            hits(cost=1)
            hits(owner, cost=1, context={"scope": "writes"})
            hits(other, cost=2)
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/rates", throttled(rates, route=ok)),
            Route("/same-client", throttled(burst, sustained, route=ok)),
            Route("/two-clients", throttled(by_address, by_user, route=ok)),
            Route("/quota", quota),
        ]
    )


async def _burst(app: Starlette, path: str, n: int = 50) -> int:
    """`n` concurrent requests of one client (address and user); how many were admitted."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answers = await asyncio.gather(
            *(client.get(path, headers={"x-user": "ada"}) for _ in range(n))
        )
    assert {answer.status_code for answer in answers} <= {200, 429}
    return sum(answer.status_code == 200 for answer in answers)


async def _stored(backend: ThrottleBackend) -> dict[str, Any]:
    """Every key of `backend`'s namespace and its value (a state as its numbers)."""
    return {key: await backend.get(key) for key in await backend.scan(backend.get_key(""))}


def _assert_same_states(stored: dict[str, Any], expected: dict[str, Any]) -> None:
    """The two stores hold the same keys, with the same states: memory's may carry the rate
    (`,limit,period`) after the numbers that both keep."""
    assert sorted(stored) == sorted(expected)
    for key, value in stored.items():
        numbers, reference = str(value).split(","), str(expected[key]).split(",")
        assert numbers == reference[: len(numbers)], key
        assert len(reference) - len(numbers) in (0, 2), key


async def _evalsha_calls(nodes: list[Redis]) -> int:
    total = 0
    for node in nodes:
        total += int((await node.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0))
    return total


@pytest.mark.parametrize(
    ("path", "scripts", "slots"),
    [*[(p, 1, 1) for p in ROUTES[:2]], ("/two-clients", 2, 2), ("/quota", 1, 1)],
)
async def test_which_steps_are_one_script_on_a_cluster(
    redis_cluster_url: str, nodes: list[Redis], path: str, scripts: int, slots: int
) -> None:
    """One client's items share its `{client}` hash tag: the rates of a throttle, throttles
    of one client and a quota context (two contexts, two throttles) are one `EVALSHA` on one
    slot. Throttles keyed by different clients (an address, a user) are on two slots: one
    script each, in order (`ScriptSteps._in_order`)."""
    backend = RedisBackend(redis_cluster_url, namespace="cluster-kinds")
    app = _app(backend, TokenBucket(), "5/min", "8/hour")
    try:
        await _burst(app, path, 1)
        keys = list(await _stored(backend))
        assert len({key_slot(key.encode()) for key in keys}) == slots, keys
        before = await _evalsha_calls(nodes)
        assert await _burst(app, path, 1) == 1
        assert await _evalsha_calls(nodes) - before == scripts
    finally:
        await backend.reset()
        await backend.close()


class _OwnKeys(HTTPThrottle):
    """traffik 1.2's key hook: a key of the user's own, the client in braces or not."""

    braces = False

    def get_namespaced_key(self, connection: Any, identifier: Any, context: Any = None) -> str:
        return f"{self.uid}:{{{identifier}}}" if self.braces else f"{self.uid}:{identifier}"


@pytest.mark.parametrize(("braces", "scripts"), [(False, 2), (True, 1)])
async def test_a_key_of_ones_own_keeps_its_rates_in_one_script_with_a_hash_tag(
    redis_cluster_url: str, nodes: list[Redis], braces: bool, scripts: int
) -> None:
    """A 1.2 `get_namespaced_key` without braces puts each rate's key on its own slot (a
    script each, in order); with the client in braces, as `docs/guides/deployment.md` says,
    the rates are one script again."""
    backend = RedisBackend(redis_cluster_url, namespace="cluster-own")
    throttle = _OwnKeys("own", "5/s;8/min", backend=backend, strategy=TokenBucket())
    throttle.braces = braces
    request = Request({"type": "http", "method": "GET", "path": "/", "client": ("1.2.3.4", 1)})
    try:
        await throttle.hit(request)
        before = await _evalsha_calls(nodes)
        await throttle.hit(request)
        assert await _evalsha_calls(nodes) - before == scripts
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    "strategy", [FixedWindow(), TokenBucket(), SlidingWindowLog(), GCRA()], ids=repr
)
async def test_a_burst_admits_and_stores_what_memory_does(
    redis_cluster_url: str, strategy: Strategy, path: str
) -> None:
    """50 concurrent requests on `5/min;8/hour` admit exactly what the in-memory backend
    admits (5), and the store holds the same states: the 45 refused steps took nothing, from
    any item. (The other strategies run on one manual clock, FixedWindow on the server's: its
    window is a key TTL. A key's expiry always follows the server's clock, so the rates are
    long: under `5/s` a bucket's key, one token spent, expires 200 ms later, and a burst
    slower than that on a loaded machine was admitted again from a full bucket.)"""
    clock = ManualClock(1_700_000_000.0)
    manual = None if isinstance(strategy, FixedWindow) else clock
    cluster = RedisBackend(redis_cluster_url, namespace="burst", clock=manual)
    memory = InMemoryBackend(namespace="burst", clock=clock)
    try:
        admitted = await _burst(_app(cluster, strategy, "5/min", "8/hour"), path)
        stored = await _stored(cluster)
        assert admitted == await _burst(_app(memory, strategy, "5/min", "8/hour"), path) == 5
        _assert_same_states(stored, await _stored(memory))
    finally:
        await cluster.reset()
        await cluster.close()


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("strategy", [TokenBucket(), SlidingWindowLog(), GCRA()], ids=repr)
async def test_the_longer_rates_refusals_take_nothing_from_the_shorter(
    redis_cluster_url: str, strategy: Strategy, path: str
) -> None:
    """`5/min;8/hour` on a manual clock: a burst admits 5, a burst a minute later 3 (the hour's
    rest). The hour's refusals of the second burst take nothing from the minute's rate, in
    one step with it or, for two clients' throttles, after it on another slot and given back:
    every state is memory's."""
    clock = ManualClock(1_700_000_000.0)
    cluster = RedisBackend(redis_cluster_url, namespace="timeline", clock=clock)
    memory = InMemoryBackend(namespace="timeline", clock=clock)
    apps = (_app(cluster, strategy, "5/min", "8/hour"), _app(memory, strategy, "5/min", "8/hour"))
    try:
        for expected in (5, 3):
            assert [await _burst(app, path) for app in apps] == [expected, expected]
            _assert_same_states(await _stored(cluster), await _stored(memory))
            clock.advance(60)
    finally:
        await cluster.reset()
        await cluster.close()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A three-master cluster of this test's own, whose nodes it may stop."""
    require_binaries(("redis-server", "redis-cli"), "SKIP_REDIS_TESTS", "install redis-server")
    cluster = RedisCluster(tmp_path, masters=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _tag_on(cluster: RedisCluster, port: int, name: str) -> str:
    """A `{tag}` whose slot the master on `port` serves."""
    ranges = cluster.slots_of(port)
    for i in range(10_000):
        tag = f"{{{name}{i}}}"
        if any(low <= key_slot(tag[1:-1].encode()) <= high for low, high in ranges):
            return tag
    raise AssertionError(f"no tag on port {port}")


@pytest.mark.skipif(
    int(redis.__version__.split(".")[0]) < 8,
    reason="redis-py < 8 closes every node's connections when one node fails, the healthy "
    "slot's give-back included (docs/deployment.md#redis-cluster)",
)
async def test_a_step_failing_on_one_node_takes_nothing_from_the_others(
    own_cluster: RedisCluster,
) -> None:
    """Two clients' items on two masters: the first slot is charged, then the second's master
    is gone. The step fails (`BackendError`, for the throttles' `on_error`) and gives the
    first slot its units back, as a step that one script decides takes nothing when it fails."""
    healthy, lost = own_cluster.master_ports()[:2]
    backend = RedisBackend(own_cluster.url, namespace="lost", command_timeout=0.5)
    rates = parse_rates("5/hour")
    step = [
        *items(TokenBucket(), "a:" + _tag_on(own_cluster, healthy, "a"), rates, 1, backend),
        *items(TokenBucket(), "b:" + _tag_on(own_cluster, lost, "b"), rates, 1, backend),
    ]
    try:
        assert (await backend.evaluate_all(step)).allowed
        own_cluster.node(lost).stop()
        with pytest.raises(BackendError):
            await backend.evaluate_all(step)
        peek = await backend.evaluate_all(step[:1], commit=False)
        assert peek.remaining == 3  # 5 - 1 (the first step) - 1 (the peek's own unit)
    finally:
        await backend.close()
