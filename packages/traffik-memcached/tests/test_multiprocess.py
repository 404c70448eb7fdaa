"""Exact limits across OS processes: 4 processes x 50 concurrent hits on one key admit exactly 100."""

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
LIMIT = 100

# Each process starts its hits at the same wall-clock instant, all at once, and prints how
# many were admitted.
WORKER = """
import asyncio, sys, time
from traffik import strategies
from traffik.backends.memcached import MemcachedBackend
from traffik.rates import Rate

url, namespace, name, start, hits = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])

async def main():
    backend = MemcachedBackend(url, namespace=namespace, persistent=True)
    strategy = getattr(strategies, name)()
    rate = Rate.parse("100/hour")
    await backend.initialize()
    await backend.get("warm-up")
    await asyncio.sleep(max(0.0, start - time.time()))
    waits = await asyncio.gather(*(strategy("hot", rate, backend, 1) for _ in range(hits)))
    await backend.close()
    print(sum(1 for wait in waits if wait == 0))

asyncio.run(main())
"""

_runs = itertools.count()


@pytest.mark.parametrize(
    "strategy", BUILTIN_STRATEGIES, ids=[cls.__name__ for cls in BUILTIN_STRATEGIES]
)
def test_processes_admit_exactly_the_limit(memcached_url: str, strategy: type) -> None:
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
    assert sum(admitted) == LIMIT, f"admitted per process: {admitted}"
