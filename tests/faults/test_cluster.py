"""Point 9: a Redis Cluster of three masters with a replica each loses a master. Decisions for
keys on the healthy masters never fail and never wait longer than one command timeout; keys on
the lost master fail (at once: its connections are refused) until its replica is promoted, and
the store's circuit, which the healthy masters keep answering, never opens. Figures printed."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
import redis
from redis.crc import key_slot
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.health import CircuitState
from traffik.backends.redis import RedisBackend
from traffik.exceptions import BackendError
from traffik.testing.servers import RedisCluster

pytestmark = [
    pytest.mark.anyio,
    # Before redis-py 8, a cluster client that loses a connection to one node closes those of
    # every node, in use or not: the healthy masters' decisions in flight fail too.
    pytest.mark.skipif(
        int(redis.__version__.split(".")[0]) < 8,
        reason="redis-py < 8 closes every node's connections when one node fails "
        "(docs/deployment.md#redis-cluster)",
    ),
]

COMMAND_TIMEOUT = 1.0
AFTER = 6.0
"""Seconds measured after the master is killed (failover takes about two: node timeout 1 s)."""


def _request(client: str) -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    return Request({**scope, "client": ("10.0.0.1", 1), "traffik-client": client})


def _client(request: Request) -> str:
    return str(request.scope["traffik-client"])


def _on(cluster: RedisCluster, port: int, clients: list[str]) -> list[str]:
    ranges = cluster.slots_of(port)
    return [c for c in clients if any(a <= key_slot(c.encode()) <= b for a, b in ranges)]


async def test_losing_a_master_does_not_fail_the_healthy_masters_keys(
    redis_cluster_3x3: RedisCluster,
) -> None:
    cluster = redis_cluster_3x3
    masters = cluster.master_ports()
    assert len(masters) == 3
    victim = masters[0]
    clients = [f"client-{i}" for i in range(60)]
    lost = _on(cluster, victim, clients)
    healthy = [c for c in clients if c not in lost]
    backend = RedisBackend(cluster.url, namespace="cluster-loss", command_timeout=COMMAND_TIMEOUT)
    throttle = HTTPThrottle(
        "cluster",
        "1000000/hour",
        backend=backend,
        identifier=_client,
        on_error="raise",
        per_route=False,
    )
    samples: list[tuple[float, float, bool, bool]] = []
    """(started, seconds, on the lost master, failed)."""
    running = True

    async def worker(keys: list[str], on_lost: bool) -> None:
        i = 0
        while running:
            i += 1
            started = time.monotonic()
            try:
                await throttle.hit(_request(keys[i % len(keys)]))
                failed = False
            except BackendError:
                failed = True
            samples.append((started, time.monotonic() - started, on_lost, failed))
            await asyncio.sleep(0.005)

    try:
        workers = [asyncio.ensure_future(worker(healthy, False)) for _ in range(6)]
        workers += [asyncio.ensure_future(worker(lost, True)) for _ in range(2)]
        await asyncio.sleep(0.5)
        cluster.node(victim).stop()
        killed_at = time.monotonic()
        await asyncio.sleep(AFTER)
        running = False
        await asyncio.gather(*workers)
    finally:
        await backend.close()

    after = [s for s in samples if s[0] >= killed_at]
    kept = [s for s in after if not s[2]]
    moved = [s for s in after if s[2]]
    times = sorted(s[1] for s in kept)
    p50, p99 = statistics.quantiles(times, n=100)[49], statistics.quantiles(times, n=100)[98]
    failures = [s for s in moved if s[3]]
    back = max((s[0] + s[1] for s in failures), default=killed_at) - killed_at
    print(
        f"\ncluster 3+3, a master killed: healthy masters' keys {len(kept)} decisions, "
        f"{sum(s[3] for s in kept)} failed, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {times[-1] * 1000:.0f} ms; the lost master's keys failed {len(failures)} times, "
        f"the last {back:.2f}s after the kill; circuit opened {backend.circuit.opened} times"
    )
    assert not any(s[3] for s in kept), "a decision on a healthy master failed"
    assert times[-1] < 2 * COMMAND_TIMEOUT
    assert back < AFTER - 1.0, "the lost master's keys did not come back after the failover"
    assert [s for s in moved if s[0] >= killed_at + back and not s[3]], "no decision after it"
    # The cluster's circuit stays closed while healthy masters answer. When the failover stalls
    # every healthy request past the circuit's quiet period (0.25 s; they may take up to
    # 2 x COMMAND_TIMEOUT above), the lost master's fast refusals may open it for that moment
    # (seen once in CI, a 276 ms stall): the first healthy answer closes it again, and no
    # healthy decision failed (asserted above).
    assert backend.circuit.opened <= 1 and backend.circuit.state is CircuitState.CLOSED
