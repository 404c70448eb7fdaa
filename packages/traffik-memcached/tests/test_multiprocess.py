"""Exact limits across OS processes: 4 processes x 50 concurrent hits on one key admit exactly the limit,
100 for "100/hour" and 50 for "100/min;50/hour" (decided as one, all or nothing)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import pytest

from traffik.strategies import BUILTIN_STRATEGIES

pytestmark = pytest.mark.memcached

PROCESSES = 4
HITS_PER_PROCESS = 50

# Each process starts its hits at the same wall-clock instant, all at once, and prints how
# many were admitted: one rate through the strategy, several through `evaluate_all`.
WORKER = """
import asyncio, sys, time
from traffik import strategies
from traffik.backends.memcached import MemcachedBackend
from traffik.rates import parse_rates
from traffik.strategies.steps import items

url, namespace, name = sys.argv[1:4]
rates, start, hits = parse_rates(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])

async def hit(backend, strategy):
    if len(rates) == 1:
        return await strategy("hot", rates[0], backend, 1) == 0
    return (await backend.evaluate_all(items(strategy, "hot", rates, 1, backend))).allowed

async def main():
    backend = MemcachedBackend(url, namespace=namespace, persistent=True)
    strategy = getattr(strategies, name)()
    await backend.initialize()
    await backend.get("warm-up")
    await asyncio.sleep(max(0.0, start - time.time()))
    admitted = await asyncio.gather(*(hit(backend, strategy) for _ in range(hits)))
    await backend.close()
    print(sum(admitted))

asyncio.run(main())
"""

_runs = itertools.count()


@pytest.mark.parametrize(("rates", "limit"), [("100/hour", 100), ("100/min;50/hour", 50)])
@pytest.mark.parametrize(
    "strategy", BUILTIN_STRATEGIES, ids=[cls.__name__ for cls in BUILTIN_STRATEGIES]
)
def test_processes_admit_exactly_the_limit(
    memcached_url: str, strategy: type, rates: str, limit: int
) -> None:
    namespace = f"multiprocess-{time.time_ns()}-{next(_runs)}"
    start = time.time() + 2.0
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                memcached_url,
                namespace,
                strategy.__name__,
                rates,
                repr(start),
                str(HITS_PER_PROCESS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    admitted = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        admitted.append(int(out.strip()))
    assert sum(admitted) == limit, f"admitted per process: {admitted}"
