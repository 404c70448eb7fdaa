"""Four OS processes hitting one key at once admit exactly the limit, for every built-in strategy."""

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
LIMIT = 100

# Each worker connects, says "ready", then for each strategy waits for "go" and fires its
# hits concurrently on one shared key, answering with how many were admitted.
WORKER = """
import asyncio, sys
from traffik.backends.redis import RedisBackend
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES

async def main():
    url, namespace, hits, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    backend = RedisBackend(url, namespace=namespace, command_timeout=10.0)
    await backend.initialize()
    rate = Rate.parse(limit + "/hour")
    print("ready", flush=True)
    for cls in BUILTIN_STRATEGIES:
        sys.stdin.readline()
        strategy = cls()
        waits = await asyncio.gather(*(strategy("hot", rate, backend, 1) for _ in range(hits)))
        print(sum(1 for wait in waits if wait == 0), flush=True)
    await backend.close()

asyncio.run(main())
"""


def test_processes_admit_exactly_the_limit(redis_url: str) -> None:
    namespace = f"processes-{uuid.uuid4().hex}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, namespace, str(HITS_PER_PROCESS), str(LIMIT)],
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
    assert admitted == {cls.__name__: LIMIT for cls in BUILTIN_STRATEGIES}
