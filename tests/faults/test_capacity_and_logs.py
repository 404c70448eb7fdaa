"""Points 7 and 8: an in-memory store at its cap keeps serving (or refuses, by policy) without a
log line per request, its cap can be bytes, and an outage of the shared store writes a handful
of log lines, not one per failed decision."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.redis import RedisBackend
from traffik.exceptions import ConnectionThrottled
from traffik.quotas import QuotaContext
from traffik.strategies import BUILTIN_STRATEGIES
from traffik.testing import ManualClock

pytestmark = pytest.mark.anyio

CLIENTS = 2000


def _request(peer: str = "10.0.0.1") -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    return Request({**scope, "client": (peer, 1234)})


_CURRENT: list[Any] = [None]


def _ident(connection: Any) -> Any:
    return _CURRENT[0]


async def _hit(throttle: HTTPThrottle, ident: Any) -> bool:
    _CURRENT[0] = ident
    try:
        await throttle.hit(_request())
    except ConnectionThrottled:
        return False
    return True


def _traffik_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "traffik"]


async def test_at_its_cap_the_store_evicts_and_serves_every_new_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = InMemoryBackend(namespace="cap-evict", max_keys=100)
    throttle = HTTPThrottle(
        "cap-evict", "2/min", backend=backend, on_error="throttle", identifier=_ident
    )
    caplog.set_level(logging.WARNING, "traffik")
    assert await _hit(throttle, "regular")
    admitted = [await _hit(throttle, f"new-{i}") for i in range(CLIENTS)]
    assert all(admitted)
    assert len(await backend.keys()) <= 100
    print(
        f"\nevict: {CLIENTS} new clients past a 100-key cap: {len(_traffik_lines(caplog))} log lines"
    )
    assert len(_traffik_lines(caplog)) <= 2


async def test_at_its_cap_the_refusing_store_keeps_its_clients_counting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = InMemoryBackend(namespace="cap-refuse", max_keys=100, at_capacity="refuse")
    throttle = HTTPThrottle(
        "cap-refuse", "2/min", backend=backend, on_error="throttle", identifier=_ident
    )
    caplog.set_level(logging.WARNING, "traffik")
    assert await _hit(throttle, "regular")
    admitted = [await _hit(throttle, f"new-{i}") for i in range(CLIENTS)]
    assert admitted.count(True) == 99 and not any(admitted[99:])
    assert await _hit(throttle, "regular") and not await _hit(throttle, "regular")
    print(f"\nrefuse: {CLIENTS - 99} refusals: {len(_traffik_lines(caplog))} log lines")
    assert len(_traffik_lines(caplog)) <= 3


async def test_a_byte_cap_bounds_a_store_of_long_keys() -> None:
    # Keys over 1 KB each (a long uid: identifiers that long are keyed by a digest).
    backend = InMemoryBackend(namespace="cap-bytes", max_bytes=64 * 1024)
    throttle = HTTPThrottle(
        "cap-bytes-" + "x" * 1024, "2/min", backend=backend, on_error="raise", identifier=_ident
    )
    for i in range(500):
        assert await _hit(throttle, f"client-{i}")
    keys = await backend.keys()
    assert 0 < len(keys) <= 64
    assert sum(len(key) for key in keys) <= 64 * 1024


async def test_an_outage_writes_a_handful_of_log_lines(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server()
    backend = RedisBackend(server.url, namespace="quiet", connect_timeout=0.2, command_timeout=0.2)
    throttles = [
        HTTPThrottle(f"quiet-{policy}", "1000/min", backend=backend, on_error=policy)
        for policy in ("allow", "throttle")
    ]
    caplog.set_level(logging.INFO, "traffik")
    try:
        for throttle in throttles:
            await throttle.hit(_request())
        server.stop()
        decisions, started = 0, time.monotonic()
        while time.monotonic() - started < 2.0:
            for throttle in throttles:
                with contextlib.suppress(ConnectionThrottled):
                    await throttle.hit(_request())
                decisions += 1
        server.start()
        lines = _traffik_lines(caplog)
        print(f"\n{decisions} failed decisions in a 2 s outage: {len(lines)} log lines")
        for line in lines:
            print("   ", line[:160])
        assert decisions > 500
        assert len(lines) <= 8
    finally:
        await backend.close()


@pytest.mark.parametrize("strategy", [cls() for cls in BUILTIN_STRATEGIES], ids=repr)
async def test_a_decision_refused_for_want_of_room_writes_none_of_its_keys(strategy: Any) -> None:
    # Two rates need two keys where the store has room for one: the decision is refused
    # (`on_error`), and neither key is written, so the store keeps its room for a client that
    # needs one key.
    backend = InMemoryBackend(namespace="cap-joint", max_keys=3, at_capacity="refuse")
    both = HTTPThrottle(
        "both", "5/min;10/hour", backend=backend, strategy=strategy, identifier=_ident
    )
    one = HTTPThrottle("one", "5/min", backend=backend, strategy=strategy, identifier=_ident)
    assert await _hit(both, "a")  # 2 keys of 3
    before = sorted(await backend.keys())
    assert not await _hit(both, "b")  # needs 2
    assert sorted(await backend.keys()) == before
    assert await _hit(one, "c")  # needs 1: there is room


async def test_a_quota_refused_for_want_of_room_writes_none_of_its_keys() -> None:
    backend = InMemoryBackend(namespace="cap-quota", max_keys=2, at_capacity="refuse")
    x, y, z = (HTTPThrottle(n, "5/min", backend=backend, identifier=_ident) for n in "xyz")
    assert await _hit(x, "a")
    before = sorted(await backend.keys())
    _CURRENT[0] = "b"
    quota = QuotaContext(_request())
    quota(y, skip_handler=True)
    quota(z, skip_handler=True)
    assert not await quota.apply()
    assert sorted(await backend.keys()) == before


async def test_room_made_for_a_decision_never_evicts_its_own_keys() -> None:
    # Client a's minute key has expired and its hour key is kept; the store is full (a's
    # hour key and c's): room for a's new minute key is made by evicting c's, never a's hour
    # key, which the decision is charging.
    for run in range(20):
        clock = ManualClock()
        backend = InMemoryBackend(namespace=f"cap-own-{run}", max_keys=2, clock=clock)
        both = HTTPThrottle("both", "5/min;10/hour", backend=backend, identifier=_ident)
        one = HTTPThrottle("one", "5/hour", backend=backend, identifier=_ident)
        assert await _hit(both, "a")
        clock.advance(61)  # a's minute key is gone
        assert await _hit(one, "c")
        assert await _hit(both, "a")
        counts = sorted([await backend.get(k) for k in await backend.keys() if "{a}" in k])
        assert counts == ["1", "2"], run  # the new minute's hit, and the hour's two
