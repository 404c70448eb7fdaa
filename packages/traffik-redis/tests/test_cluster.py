"""RedisBackend on a three-master Redis Cluster: keys on every node, per-slot multi-key commands,
several items in one script when they share a slot, in order with refunds when they do not."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot

from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.redis import RedisBackend
from traffik.decision import Decision
from traffik.rates import Rate, parse_rates
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, Strategy, TokenBucket
from traffik.strategies.steps import Combined, Item, items

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


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


async def _reads(nodes: list[Redis]) -> int:
    """Requests the cluster's nodes have read from clients."""
    total = 0
    for node in nodes:
        total += int((await node.info("stats"))["total_reads_processed"])
    return total


async def test_one_round_trip_per_decision_on_a_cluster(
    redis_cluster_url: str, nodes: list[Redis]
) -> None:
    async def reads() -> int:
        return await _reads(nodes)

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


async def test_a_given_cluster_client_without_decoding(
    cluster_addresses: list[tuple[str, int]],
) -> None:
    startup = [ClusterNode(h, p) for h, p in cluster_addresses]
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


async def test_a_list_of_nodes(cluster_addresses: list[tuple[str, int]]) -> None:
    addresses = cluster_addresses
    backend = RedisBackend(
        [addresses[0], {"host": addresses[1][0], "port": addresses[1][1]}], namespace="nodes"
    )
    try:
        assert backend.cluster
        assert await backend.increment_with_ttl(backend.get_key("n"), ttl=5) == 1
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.parametrize("strategy", [cls() for cls in BUILTIN_STRATEGIES], ids=repr)
async def test_one_clients_rates_decide_in_one_round_trip_exactly(
    redis_cluster_url: str, nodes: list[Redis], strategy: Strategy
) -> None:
    """One client's keys share its hash tag: one script for three rates, and 200 concurrent
    hits on `100/min;50/hour` admit exactly 50."""
    backend = RedisBackend(redis_cluster_url, namespace="cluster-rates")
    three = items(strategy, "api:{1.2.3.4}:GET:/", parse_rates("3/hour;5/day;9/2d"), 1, backend)
    hot = items(strategy, "api:{5.6.7.8}:GET:/", parse_rates("100/min;50/hour"), 1, backend)
    try:
        assert len({key_slot(item.key.encode()) for item in three}) == 1
        await backend.evaluate_all(items(strategy, "{warm-up}", parse_rates("1/s"), 1, backend))
        trips, answers = [], []
        for _ in range(4):
            idle = -(await _reads(nodes)) + await _reads(nodes)
            before = await _reads(nodes)
            answers.append((await backend.evaluate_all(three)).allowed)
            trips.append(await _reads(nodes) - before - idle)
        assert answers == [True, True, True, False]
        assert trips == [1, 1, 1, 1]
        decisions = await asyncio.gather(*(backend.evaluate_all(hot) for _ in range(200)))
        assert sum(1 for decision in decisions if decision.allowed) == 50
    finally:
        await backend.reset()
        await backend.close()


def _parts(decision: Decision) -> tuple[Decision, ...]:
    return decision.parts if isinstance(decision, Combined) else (decision,)


async def test_clients_on_several_slots_are_decided_in_order_with_refunds(
    redis_cluster_url: str, nodes: list[Redis]
) -> None:
    """Three clients' throttles on three slots: a loose one first, a tight one, a fixed
    window last. Once the tight one refuses, the loose one gets its unit back and the fixed
    window is only read (it counts nothing, though its hour refuses), so the store ends as one
    atomic step leaves it."""
    cluster = RedisBackend(redis_cluster_url, namespace="cluster-order")
    memory = InMemoryBackend(namespace="cluster-order")

    def hit(backend: RedisBackend | InMemoryBackend) -> list[Item]:
        return [
            *items(TokenBucket(), "loose:{x}", parse_rates("5/hour"), 1, backend),
            *items(TokenBucket(), "tight:{y}", parse_rates("1/hour"), 1, backend),
            *items(FixedWindow(), "window:{z}", parse_rates("1/hour;3/day"), 1, backend),
        ]

    try:
        assert len({key_slot(item.key.encode()) for item in hit(cluster)}) == 3
        await cluster.evaluate_all(hit(cluster), commit=False)  # connects, loads the scripts
        for call in range(3):
            idle = -(await _reads(nodes)) + await _reads(nodes)
            before = await _reads(nodes)
            got = await cluster.evaluate_all(hit(cluster))
            trips = await _reads(nodes) - before - idle
            expected = await memory.evaluate_all(hit(memory))
            assert got.allowed is expected.allowed is (call == 0)
            assert getattr(got, "refused", None) in (None, 1, 2)
            for part, reference in zip(_parts(got), _parts(expected)):
                assert (part.allowed, part.remaining) == (reference.allowed, reference.remaining)
            # a script per slot; once refused, one more to give the first slot its unit back
            assert trips == (3 if call == 0 else 4)
        peeks = await cluster.evaluate_all(hit(cluster), commit=False)
        references = await memory.evaluate_all(hit(memory), commit=False)
        assert [p.remaining for p in _parts(peeks)] == [r.remaining for r in _parts(references)]
        assert await cluster.get(hit(cluster)[2].key) == "1"  # counted none of its refusals
        await cluster.refund_all(hit(cluster))
        assert (await cluster.evaluate_all(hit(cluster)[1:2], commit=False)).allowed
    finally:
        await cluster.reset()
        await cluster.close()


async def test_a_fixed_window_alone_on_its_slot_counts_nothing_of_a_refused_step(
    redis_cluster_url: str,
) -> None:
    """A fixed window that is its slot's one item refuses a step of several slots: it counts
    the hit no more than in one step of several items (it would, decided alone)."""
    cluster = RedisBackend(redis_cluster_url, namespace="cluster-alone")
    hit = [
        *items(TokenBucket(), "loose:{x}", parse_rates("5/hour"), 1, cluster),
        *items(FixedWindow(), "window:{z}", parse_rates("1/hour"), 1, cluster),
    ]
    try:
        assert [(await cluster.evaluate_all(hit)).allowed for _ in range(3)] == [True] + [False] * 2
        assert await cluster.get(hit[1].key) == "1"
        assert (await cluster.evaluate_all(hit[:1], commit=False)).remaining == 3  # 5 - 1 - 1
        assert not (await cluster.evaluate_all(hit[1:])).allowed
        assert await cluster.get(hit[1].key) == "2"  # alone, it counts the hit it refuses
    finally:
        await cluster.reset()
        await cluster.close()


async def test_a_connection_factory_of_a_cluster_groups_its_first_step_by_slot(
    cluster_addresses: list[tuple[str, int]],
) -> None:
    """A factory tells that its client is a cluster's only once awaited: the first step of two
    clients' items, which builds the client, is already decided slot by slot (one script of
    keys on two slots fails: `EVALSHA - all keys must map to the same key slot`)."""
    startup = [ClusterNode(h, p) for h, p in cluster_addresses]

    async def make() -> RedisCluster:
        return RedisCluster(startup_nodes=startup)

    backend = RedisBackend(make, namespace="cluster-factory")
    step = [
        *items(TokenBucket(), "a:{x}", parse_rates("5/min"), 1, backend),
        *items(TokenBucket(), "b:{y}", parse_rates("5/min"), 1, backend),
    ]
    try:
        assert not backend.cluster  # not known yet
        assert (await backend.evaluate_all(step)).allowed
        assert backend.cluster
        await backend.refund_all(step)
        assert (await backend.evaluate_all(step, commit=False)).remaining == 4
    finally:
        await backend.reset()
        await backend.close()
