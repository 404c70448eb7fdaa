"""Rates and costs given per connection are decided in place, exactly as the strategy decides them."""

from __future__ import annotations

import random
from typing import Any

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle, InMemoryBackend, ManualClock
from traffik.exceptions import ConnectionThrottled
from traffik.strategies import BUILTIN_STRATEGIES
from traffik.strategies.steps import in_place_kind
from traffik.throttle_steps import DECIDERS_KEPT

pytestmark = pytest.mark.anyio

TIERS = {"free": "3/s", "pro": "8/s;20/min", "team": "5/500ms"}


def _request(client: str, tier: str, cost: int) -> Request:
    headers = [(b"x-tier", tier.encode()), (b"x-cost", str(cost).encode())]
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": headers}
    return Request({**scope, "client": (client, 1), "query_string": b""})


def _tier(connection: Any, context: Any) -> str:
    return TIERS[connection.headers["x-tier"]]


def _cost(connection: Any, context: Any) -> int:
    return int(connection.headers["x-cost"])


async def _answer(throttle: HTTPThrottle, request: Request, cost: Any = None) -> Any:
    try:
        await throttle.hit(request, cost=cost)
    except ConnectionThrottled as exc:
        return ("refused", exc.wait_period, exc.detail, exc.headers)
    return "allowed"


def _stored(backend: InMemoryBackend) -> dict[str, Any]:
    return {key: entry[:2] for key, entry in backend._data.items()}


@pytest.mark.parametrize("strategy_class", BUILTIN_STRATEGIES, ids=lambda c: c.__name__)
async def test_a_rate_and_cost_given_per_connection_decide_as_the_strategy_does(
    strategy_class: type,
) -> None:
    """A rate callable (tiers of one and two rates), a cost callable (up to a cost no tier
    admits) and `cost=` given to `hit`: a throttle decides them in place for the pairs it
    keeps deciders for, and the strategy decides the rest; every answer and every stored
    entry equal those of the same throttle decided by the strategy alone."""
    clock = ManualClock(1_000.0)
    fast_store, slow_store = InMemoryBackend(clock=clock), InMemoryBackend(clock=clock)
    fast, slow = (
        HTTPThrottle("t", rate=_tier, cost=_cost, backend=store, strategy=strategy_class())
        for store in (fast_store, slow_store)
    )
    assert in_place_kind(fast.strategy) and fast._in_place
    slow._in_place = 0  # (the strategy's own `decide`, as a strategy of one's own is)
    draw = random.Random(strategy_class.__name__)
    for turn in range(600):
        clock.advance(ms=draw.choice([0, 0, 0, 1, 30, 200, 700, 3000]))
        client, tier = draw.choice(["1.1.1.1", "2.2.2.2"]), draw.choice(list(TIERS))
        cost = draw.choice([1, 1, 2, 3, 9])  # (9: more than a tier of 3 or 8 admits)
        given = draw.choice([None, None, None, draw.randint(1, 4)])
        answers = [
            await _answer(throttle, _request(client, tier, cost), given)
            for throttle in (fast, slow)
        ]
        assert answers[0] == answers[1], (turn, tier, cost, given)
        # (each entry's state and expiry; a refusal mark, a hint for eviction, is the in-place
        # path's alone for a window counter, as for a throttle of fixed rates)
        assert _stored(fast_store) == _stored(slow_store), turn
    kept = fast._deciders_kept
    assert 0 < len(kept) <= DECIDERS_KEPT
    assert any(decide is not None for _, decide, _ in kept.values()), "nothing in place"
    assert any(decide is None and waited is None for _, decide, waited in kept.values()), (
        "a cost no tier admits is the strategy's"
    )
    assert slow._deciders_kept == {}


async def test_past_the_pairs_it_keeps_a_throttle_decides_by_the_strategy() -> None:
    backend = InMemoryBackend()
    throttle = HTTPThrottle("many", rate="1000/min", cost=_cost, backend=backend)
    for cost in range(1, DECIDERS_KEPT + 6):
        assert await _answer(throttle, _request("1.1.1.1", "free", cost)) == "allowed"
    assert len(throttle._deciders_kept) == DECIDERS_KEPT
    total = sum(range(1, DECIDERS_KEPT + 6))
    assert [int(value) for value in [await backend.get(key) for key in await backend.keys()]] == [
        total
    ]
