"""A process remembers the clients it just refused (`cache_refusals`, on by default): what
forgets the counts forgets those refusals too, on every store (docs/observability.md)."""

from __future__ import annotations

import re
from typing import Any, Callable

import httpx
import pytest
from fastapi import Depends, FastAPI

from traffik import HTTPThrottle
from traffik.backends.base import ThrottleBackend
from traffik.strategies import SlidingWindowLog
from traffik.strategies.custom import PriorityQueue, TieredRate

pytestmark = pytest.mark.anyio


def _app(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def route() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.mark.parametrize("forget", ["backend.reset", "backend.clear", "throttle.reset"])
async def test_what_forgets_the_counts_forgets_the_refusals(
    make_backend: Callable[..., ThrottleBackend], forget: str
) -> None:
    # On Redis and Memcached (whose `clear` comes from a mixin) `reset()` and `clear()` left
    # the refusals in place: the client was refused for up to its wait after the store was
    # emptied, the first request of each test that empties its backend before it.
    backend = make_backend(cache_refusals=True)
    throttle = HTTPThrottle("forget", rate="1/min", backend=backend)
    transport = httpx.ASGITransport(app=_app(throttle))
    async with backend(), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert [(await client.get("/r")).status_code for _ in range(2)] == [200, 429]
        assert len(backend.refusals or ()) == 1
        way: Any = {
            "backend.reset": backend.reset,
            "backend.clear": backend.clear,
            "throttle.reset": lambda: throttle.reset("127.0.0.1", path="/r"),
        }[forget]
        await way()
        assert len(backend.refusals or ()) == 0
        assert [(await client.get("/r")).status_code for _ in range(2)] == [200, 429]
        await backend.reset()


def _parts(header: str) -> list[tuple[int, int]]:
    """`RateLimit`'s items as (r, t)."""
    return [(int(r), int(t)) for r, t in re.findall(r";r=(\d+);t=(\d+)", header)]


async def test_a_remembered_refusal_tells_what_the_store_told(
    make_backend: Callable[..., ThrottleBackend],
) -> None:
    # Answered from memory, a refusal said r=0 for every rate and t=its wait: false (a
    # cheaper request then passed), and unlike the store's own answer, and memory's.
    backend = make_backend(cache_refusals=True)
    throttle = HTTPThrottle(
        "told", rate="3/min;10/h", backend=backend, strategy=SlidingWindowLog(), cost=2
    )
    transport = httpx.ASGITransport(app=_app(throttle))
    async with backend(), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        admitted, by_store, remembered = [await client.get("/r") for _ in range(3)]
        assert [r.status_code for r in (admitted, by_store, remembered)] == [200, 429, 429]
        told, again = _parts(by_store.headers["ratelimit"]), _parts(remembered.headers["ratelimit"])
        assert [r for r, _ in told] == [1, 8]  # (the refused request took none)
        assert [r for r, _ in again] == [r for r, _ in told]
        assert all(0 <= t - t_again <= 1 for (_, t), (_, t_again) in zip(told, again))
        assert remembered.headers["retry-after"] == by_store.headers["retry-after"]
        await backend.reset()


@pytest.mark.parametrize(
    ("strategy", "identity"),
    [(TieredRate({"free": 1}), "tier:free:alice"), (PriorityQueue(), "priority:low:alice")],
    ids=["TieredRate", "PriorityQueue"],
)
async def test_reset_by_the_stored_client_forgets_a_refusal_of_its_segment(
    make_backend: Callable[..., ThrottleBackend], strategy: Any, identity: str
) -> None:
    # The segment (tier, priority) is not part of the stored client: `reset("alice")`
    # forgot the store's state, but the refusal remembered under the whole identity stood.
    backend = make_backend(cache_refusals=True)
    throttle = HTTPThrottle(
        "segment", rate="2/min", backend=backend, strategy=strategy, identifier=lambda r: identity
    )
    transport = httpx.ASGITransport(app=_app(throttle))
    async with backend(), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert [(await client.get("/r")).status_code for _ in range(3)] == [200, 200, 429]
        assert await throttle.reset("alice", path="/r")
        assert (await client.get("/r")).status_code == 200
        await backend.reset()
