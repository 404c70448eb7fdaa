"""A process serving clients that vary everything they send stays bounded, on every store.

Each test sends 10^4 to 10^5 distinct client inputs, then asserts that every structure the
process keeps for them holds at most its bound.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle, InMemoryBackend
from traffik.backends.base import ThrottleBackend

pytestmark = pytest.mark.anyio


def _peer(n: int) -> str:
    """The `n`th client's address: IPv4 and IPv6 in turn, sixteen IPv6 addresses in each
    /64 network (one client, counted as one, with many addresses)."""
    if n % 2:
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    return f"2001:db8:{n >> 5 & 0xFFFF:x}:{n >> 21:x}::{n >> 1 & 15:x}"


def _scope(n: int, path: str) -> dict[str, Any]:
    """The `n`th request."""
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "query_string": f"q={n}".encode(),
        "headers": [(b"host", f"h{n}.example".encode())],
        "client": (_peer(n), 40000 + n % 20000),
    }


def _live(kind: type) -> list[Any]:
    """Every live object of `kind` in the process."""
    gc.collect()
    return [found for found in gc.get_objects() if isinstance(found, kind)]


async def _hit(throttle: HTTPThrottle, scope: dict[str, Any]) -> None:
    try:
        await throttle.hit(Request(scope))
    except Exception as exc:
        if getattr(exc, "status_code", None) != 429:
            raise


def _down(kind: str) -> ThrottleBackend:
    """A network store nothing answers for (a port nothing listens on), whose circuit opens
    at its first failure."""
    from traffik.backends.health import CircuitPolicy
    from traffik.testing.servers import free_port

    policy = CircuitPolicy(failure_threshold=1, quiet_period=0)
    if kind == "redis":
        from traffik.backends.redis import RedisBackend

        return RedisBackend(f"redis://127.0.0.1:{free_port()}/0", namespace="down", circuit=policy)
    from traffik.backends.memcached import MemcachedBackend

    return MemcachedBackend(f"memcached://127.0.0.1:{free_port()}", circuit=policy)


@pytest.mark.parametrize("kind", ["redis", "memcached"])
async def test_fallbacks_built_per_request_during_an_outage_leave_nothing_behind(
    kind: str,
) -> None:
    """Throttles built per request (a user's own limit), each with its own `on_error`
    handler, while the store is down: its circuits keep one recovery listener, and what the
    fallback admitted is owed in one ledger, the spare's, however many handlers there were."""
    from traffik.error_handlers import failover, fallback
    from traffik.reconcile import Ledger

    store = _down(kind)
    spare = InMemoryBackend(namespace="spare", max_keys=1000)
    for n in range(10_000):
        handler = failover(spare) if n % 2 else fallback(spare)
        throttle = HTTPThrottle("bm:per-user", "5/min", backend=store, on_error=handler)
        await _hit(throttle, _scope(n, "/r"))
    assert [len(circuit._listeners) for circuit in store.circuits] == [1] * len(store.circuits)
    ledgers = _live(Ledger)
    assert len(ledgers) == 1
    assert 5_000 < ledgers[0].owed(store) <= 10_000  # (an IPv6 /64 is one client)
    await store.close()
