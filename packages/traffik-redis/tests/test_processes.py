"""Four OS processes hitting one key at once admit exactly the limit, for every built-in strategy,
with one rate and with several (the tightest decides)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import redis

from traffik.strategies import BUILTIN_STRATEGIES

pytestmark = pytest.mark.redis

PROCESSES = 4
HITS_PER_PROCESS = 50

# Each worker connects, says "ready", then for each strategy waits for "go" and fires its
# hits concurrently on one shared key (the rates of `rate`, one item each), answering with
# how many were admitted.
WORKER = """
import asyncio, sys
from traffik.backends.redis import RedisBackend
from traffik.rates import parse_rates
from traffik.strategies import BUILTIN_STRATEGIES
from traffik.strategies.steps import items

async def main():
    url, namespace, hits, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    # (generous timeouts: 4 processes open their connections at once on a loaded CI machine)
    backend = RedisBackend(url, namespace=namespace, connect_timeout=10.0, command_timeout=10.0)
    await backend.initialize()
    rates = parse_rates(rate)
    print("ready", flush=True)
    for cls in BUILTIN_STRATEGIES:
        sys.stdin.readline()
        strategy = cls()
        if len(rates) == 1:
            waits = await asyncio.gather(*(strategy("hot", rates[0], backend) for _ in range(hits)))
            admitted = [wait == 0 for wait in waits]
        else:
            hit = items(strategy, "{hot}", rates, 1, backend)
            decisions = await asyncio.gather(*(backend.evaluate_all(hit) for _ in range(hits)))
            admitted = [decision.allowed for decision in decisions]
        print(sum(admitted), flush=True)
    await backend.close()

asyncio.run(main())
"""


def _admitted(redis_url: str, rate: str) -> dict[str, int]:
    """How many hits the processes together admitted, per strategy."""
    namespace = f"processes-{uuid.uuid4().hex}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, namespace, str(HITS_PER_PROCESS), rate],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    admitted: dict[str, int] = {}
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        for cls in BUILTIN_STRATEGIES:
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            counts = []
            for worker in workers:
                assert worker.stdout is not None
                counts.append(int(worker.stdout.readline()))
            admitted[cls.__name__] = sum(counts)
        for worker in workers:
            assert worker.wait(timeout=60) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            for pipe in (worker.stdin, worker.stdout):
                if pipe is not None:
                    pipe.close()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{namespace}:*"):
            client.delete(key)
        client.close()
    return admitted


def test_processes_admit_exactly_the_limit(redis_url: str) -> None:
    assert _admitted(redis_url, "100/hour") == {cls.__name__: 100 for cls in BUILTIN_STRATEGIES}


def test_processes_admit_exactly_the_tightest_of_several_rates(redis_url: str) -> None:
    admitted = _admitted(redis_url, "100/min;50/hour")
    assert admitted == {cls.__name__: 50 for cls in BUILTIN_STRATEGIES}
