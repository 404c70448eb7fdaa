"""What answers tell a client on Memcached, beyond the shared suite: huge costs and real time."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.memcached import MemcachedBackend
from traffik.exceptions import ConnectionThrottled
from traffik.strategies import FixedWindow, SlidingWindowCounter, Strategy

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]

_names = itertools.count()


def _request() -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("h", 1)}
    )


@pytest.mark.parametrize(
    "huge", [[2**64 - 1, 2**64 - 1], [2**64 + 5, 2**64 + 5]], ids=["wraps", "past-64-bits"]
)
@pytest.mark.parametrize("on_error", ["allow", "throttle"])
@pytest.mark.parametrize("strategy", [FixedWindow(), SlidingWindowCounter()], ids=repr)
async def test_a_cost_past_memcacheds_counters_is_refused_and_takes_nothing(
    memcached_url: str, strategy: Strategy, on_error: str, huge: list[int]
) -> None:
    """A cost given per request (from the client, say) that memcached's 64-bit counters
    cannot count is refused as any cost above the limit is (with several rates, the longest
    period it exceeds: docs/guides/costs.md), whatever `on_error` says, and leaves the
    client's spent budget spent. Counted first and given back, such a cost wrapped the
    window's counter around (2**64 - 1) and the give-back emptied it, so the spent budget
    came back; past 2**64 memcached refused the increment, and `on_error="allow"` let the
    request through."""
    backend = MemcachedBackend(memcached_url, namespace=f"truth-{next(_names)}")
    costs = iter([1, 1, *huge, 1])

    def cost(request: Any, context: Any) -> int:
        return next(costs)

    throttle = HTTPThrottle(
        f"huge-{next(_names)}",
        rate="2/min;10/hour",
        strategy=strategy,
        backend=backend,
        cost=cost,
        on_error=on_error,
    )
    try:
        answers = []
        for _ in range(5):
            try:
                await throttle.hit(_request())
                answers.append("200")
            except ConnectionThrottled as refused:
                answers.append(refused.headers["Retry-After"])
        # (the last: 2/min is spent, whatever the huge costs did)
        assert (answers[:4], answers[4] != "200") == (["200", "200", "3600", "3600"], True)
    finally:
        await backend.reset()
        await backend.close()
