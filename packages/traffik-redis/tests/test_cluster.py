"""RedisBackend on a three-master Redis Cluster: keys on every node, per-slot multi-key commands."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode

from traffik.backends.redis import RedisBackend
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


def _addresses(url: str) -> list[tuple[str, int]]:
    hosts = url.split("://", 1)[1].split(",")
    return [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in hosts]


@pytest.fixture
async def nodes(redis_cluster_url: str) -> AsyncIterator[list[Redis]]:
    clients = [Redis(host=h, port=p) for h, p in _addresses(redis_cluster_url)]
    yield clients
    for client in clients:
        await client.aclose()


async def _keys_per_node(nodes: list[Redis], pattern: str) -> list[int]:
    counts = []
    for node in nodes:
        counts.append(len([key async for key in node.scan_iter(match=pattern, count=1000)]))
    return counts


async def test_reset_clears_every_master_and_only_its_namespace(
    redis_cluster_url: str, nodes: list[Redis]
) -> None:
    mine = RedisBackend(redis_cluster_url, namespace="cluster-mine")
    theirs = RedisBackend(redis_cluster_url, namespace="cluster-theirs")
    try:
        for backend in (mine, theirs):
            await backend.multi_set({backend.get_key(f"k{i}"): str(i) for i in range(300)})
        assert all(count > 0 for count in await _keys_per_node(nodes, "cluster-mine:*"))
        await mine.reset()
        assert await _keys_per_node(nodes, "cluster-mine:*") == [0, 0, 0]
        assert sum(await _keys_per_node(nodes, "cluster-theirs:*")) == 300
    finally:
        await theirs.reset()
        await mine.close()
        await theirs.close()


@pytest.mark.parametrize("key", ["plain", "{tag}x", "x{tag}", "sp ace ✓", "{", "}{"], ids=repr)
async def test_strategies_and_multi_key_ops_across_slots(redis_cluster_url: str, key: str) -> None:
    backend = RedisBackend(redis_cluster_url, namespace="cluster-keys")
    rate = Rate.parse("2/min")
    try:
        for cls in BUILTIN_STRATEGIES:
            strategy = cls()
            allowed = [(await strategy.decide(key, rate, backend, 1)).allowed for _ in range(3)]
            assert allowed == [True, True, False], cls.__name__
        names = [backend.get_key(f"{key}-{i}") for i in range(20)]
        await backend.multi_set({name: str(i) for i, name in enumerate(names)}, expire=30)
        assert await backend.multi_get(*names) == [str(i) for i in range(20)]
        async with backend.lock(key, ttl=2):
            pass
    finally:
        await backend.reset()
        await backend.close()


async def test_one_round_trip_per_decision_on_a_cluster(
    redis_cluster_url: str, nodes: list[Redis]
) -> None:
    async def reads() -> int:
        total = 0
        for node in nodes:
            total += int((await node.info("stats"))["total_reads_processed"])
        return total

    backend = RedisBackend(redis_cluster_url, namespace="cluster-trips")
    rate = Rate.parse("2/hour")
    try:
        for cls in BUILTIN_STRATEGIES:
            strategy = cls()
            await strategy.decide("warm-up", rate, backend, 1)
            trips = []
            for _ in range(3):
                idle = -(await reads()) + await reads()
                before = await reads()
                await strategy.decide("u", rate, backend, 1)
                trips.append(await reads() - before - idle)
            assert trips == [1, 1, 1], cls.__name__
    finally:
        await backend.reset()
        await backend.close()


async def test_a_given_cluster_client_without_decoding(redis_cluster_url: str) -> None:
    startup = [ClusterNode(h, p) for h, p in _addresses(redis_cluster_url)]
    client = RedisCluster(startup_nodes=startup)
    backend = RedisBackend(client, namespace="cluster-given")
    try:
        assert backend.cluster
        rate = Rate.parse("1/min")
        for cls in BUILTIN_STRATEGIES:
            assert (await cls().decide("u", rate, backend, 1)).allowed
            assert not (await cls().decide("u", rate, backend, 1)).allowed
        await backend.set(backend.get_key("v"), "é")
        assert await backend.multi_get(backend.get_key("v"), backend.get_key("w")) == ["é", None]
        await backend.reset()
        await backend.close()
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_list_of_nodes(redis_cluster_url: str) -> None:
    addresses = _addresses(redis_cluster_url)
    backend = RedisBackend(
        [addresses[0], {"host": addresses[1][0], "port": addresses[1][1]}], namespace="nodes"
    )
    try:
        assert backend.cluster
        assert await backend.increment_with_ttl(backend.get_key("n"), ttl=5) == 1
    finally:
        await backend.reset()
        await backend.close()
