"""What grows with traffic stays bounded: a full in-memory store keeps its throttled clients,
and metrics carry one label set per throttle up to a bound, never one per client or path."""

from __future__ import annotations

import logging

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle, InMemoryBackend, ManualClock
from traffik.strategies import (
    GCRA,
    FixedWindow,
    SlidingWindowCounter,
    SlidingWindowLog,
    Strategy,
    TokenBucket,
)

pytestmark = pytest.mark.anyio

FLOOD = 20_000
"""New clients sent at a store capped at 1 000 keys."""


def request(host: str) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/r",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": (host, 1234),
    }
    return Request(scope)


async def _hit(throttle: HTTPThrottle, host: str) -> bool:
    try:
        await throttle.hit(request(host))
    except Exception as exc:  # (the 429)
        if getattr(exc, "status_code", None) == 429:
            return False
        raise
    return True


@pytest.mark.parametrize(
    "strategy",
    [FixedWindow(), SlidingWindowCounter(), SlidingWindowLog(), TokenBucket(), GCRA()],
    ids=lambda strategy: type(strategy).__name__,
)
@pytest.mark.parametrize("rate", ["3/min", "3/min;1000/h"])
async def test_a_flood_of_new_clients_never_gives_a_throttled_client_a_fresh_budget(
    strategy: Strategy, rate: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(1_700_000_000.0)
    backend = InMemoryBackend(namespace="flood", clock=clock, max_keys=1000)
    throttle = HTTPThrottle("flood", rate=rate, backend=backend, strategy=strategy)
    assert [await _hit(throttle, "10.9.9.9") for _ in range(4)] == [True] * 3 + [False]
    clock.advance(1)
    with caplog.at_level(logging.WARNING, logger="traffik"):
        for n in range(FLOOD):
            await _hit(throttle, f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}")
            if n % 100 == 0:
                clock.advance(ms=10)
    assert len(backend._data) <= 1000
    assert not await _hit(throttle, "10.9.9.9")  # still throttled: its state was kept
    assert len([r for r in caplog.records if "full" in r.getMessage()]) <= 2  # not per request


async def test_a_store_full_of_throttled_clients_refuses_new_keys_until_they_are_whole() -> None:
    clock = ManualClock(1_700_000_000.0)
    backend = InMemoryBackend(namespace="kept", clock=clock, max_keys=3)
    throttle = HTTPThrottle("kept", rate="1/min", backend=backend, strategy=TokenBucket())
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert [await _hit(throttle, host) for _ in range(2)] == [True, False]
    assert not await _hit(throttle, "10.0.0.4")  # no key may go: the newcomer is refused
    assert len(backend._data) == 3
    clock.advance(61)  # every bucket is whole again: nothing is kept any more
    assert await _hit(throttle, "10.0.0.4")


async def test_metrics_label_a_bounded_number_of_throttles_and_never_a_client() -> None:
    prometheus = pytest.importorskip("traffik.metrics.prometheus")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from traffik.metrics._labels import MAX_THROTTLES, OTHER_THROTTLES

    registry = CollectorRegistry()
    prometheus.install(registry)
    try:
        backend = InMemoryBackend(namespace="labels")
        for n in range(MAX_THROTTLES + 500):  # throttles built per request, a uid each
            per_request = HTTPThrottle(f"user-{n}", rate="5/min", backend=backend)
            await _hit(per_request, f"10.1.{n >> 8}.{n & 255}")
        text = generate_latest(registry).decode()
    finally:
        prometheus.uninstall(registry)
    throttles = {
        sample.labels["throttle"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "throttle" in sample.labels
    }
    assert len(throttles) == MAX_THROTTLES + 1 and OTHER_THROTTLES in throttles
    assert "10.1." not in text and "/r" not in text  # no client, no path
