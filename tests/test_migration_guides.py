"""The migration guides' "before -> after" pairs: the Traffik code admits what the slowapi and
fastapi-limiter code did (same limit, same client key, same route scope) and answers 429."""

from __future__ import annotations

from typing import Optional

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, Response

from traffik import HTTPThrottle, InMemoryBackend

pytestmark = pytest.mark.anyio


async def responses(
    app: FastAPI, paths: list[str], headers: Optional[list[dict[str, str]]] = None
) -> list[httpx.Response]:
    """`GET` each path in turn (with the matching headers), the app's lifespan running."""
    transport = httpx.ASGITransport(app=app)
    sent = headers or [{}] * len(paths)
    opened = httpx.AsyncClient(transport=transport, base_url="http://test")
    async with app.router.lifespan_context(app), opened as client:
        return [await client.get(path, headers=h) for path, h in zip(paths, sent)]


async def statuses(app: FastAPI, paths: list[str]) -> list[int]:
    return [response.status_code for response in await responses(app, paths)]


def traffik_items_app(rate: str, **options: object) -> FastAPI:
    backend = InMemoryBackend(namespace="app")
    items_throttle = HTTPThrottle("items", rate=rate, backend=backend, **options)  # type: ignore[arg-type]
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/items")
    async def items(request: Request = Depends(items_throttle)) -> list[int]:
        return []

    @app.get("/items/{item_id}")
    async def item(item_id: int, request: Request = Depends(items_throttle)) -> list[int]:
        return []

    return app


async def test_slowapi_and_traffik_admit_the_same_five_a_minute() -> None:
    pytest.importorskip("slowapi")
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")
    before = FastAPI()
    before.state.limiter = limiter
    before.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    @before.get("/items")
    @limiter.limit("5/minute")
    async def items(request: Request) -> list[int]:
        return []

    after = traffik_items_app("5/minute")
    paths = ["/items"] * 6
    assert await statuses(before, paths) == await statuses(after, paths) == [200] * 5 + [429]


async def test_slowapi_headers_and_traffik_legacy_headers() -> None:
    # `headers_enabled=True` -> `headers="legacy"`: the same names, but slowapi's
    # X-RateLimit-Reset is a Unix time and Traffik's the seconds until the window resets.
    pytest.importorskip("slowapi")
    from slowapi import Limiter
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://", headers_enabled=True)
    before = FastAPI()
    before.state.limiter = limiter

    @before.get("/items")
    @limiter.limit("5/minute")
    async def items(request: Request, response: Response) -> list[int]:
        return []

    after = traffik_items_app("5/minute", headers="legacy")
    slowapi_headers = (await responses(before, ["/items"]))[0].headers
    traffik_headers = (await responses(after, ["/items"]))[0].headers
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining"):
        assert slowapi_headers[name] == traffik_headers[name]
    assert float(slowapi_headers["x-ratelimit-reset"]) > 1_000_000_000  # a Unix time
    assert 0 < int(traffik_headers["x-ratelimit-reset"]) <= 60  # seconds from now


async def test_fastapi_limiter_and_traffik_admit_two_every_five_seconds() -> None:
    pytest.importorskip("fastapi_limiter.depends")
    from fastapi_limiter.depends import RateLimiter
    from pyrate_limiter import Duration, Limiter, Rate

    pyrate = Limiter(Rate(2, Duration.SECOND * 5))
    before = FastAPI()

    @before.get("/items", dependencies=[Depends(RateLimiter(limiter=pyrate))])
    async def items() -> list[int]:
        return []

    backend = InMemoryBackend(namespace="app")
    after = FastAPI(lifespan=backend.lifespan)

    @after.get("/items", dependencies=[Depends(HTTPThrottle("items", rate="2/5s"))])
    async def traffik_items() -> list[int]:
        return []

    paths = ["/items"] * 3
    try:
        assert await statuses(before, paths) == await statuses(after, paths) == [200, 200, 429]
    finally:
        pyrate.close()


async def test_fastapi_limiter_trusts_x_forwarded_for_and_traffik_does_not() -> None:
    # fastapi-limiter's default identifier takes X-Forwarded-For from any client, so a client
    # picks its own key; Traffik counts the peer address unless `remote_address(trusted)`.
    pytest.importorskip("fastapi_limiter.identifier")
    from fastapi_limiter.identifier import default_identifier
    from starlette.requests import Request as StarletteRequest

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/items",
        "headers": [(b"x-forwarded-for", b"10.0.0.1")],
        "client": ("127.0.0.1", 50000),
    }
    assert await default_identifier(StarletteRequest(scope)) == "10.0.0.1:/items"

    after = traffik_items_app("1/min")
    forwarded = [{"X-Forwarded-For": "10.0.0.1"}, {"X-Forwarded-For": "10.0.0.2"}]
    codes = [r.status_code for r in await responses(after, ["/items"] * 2, forwarded)]
    assert codes == [200, 429]  # one peer, one bucket, whatever the header says


async def test_a_route_template_is_one_budget_in_traffik() -> None:
    # slowapi counts per decorated function too: /items/1 and /items/2 share its budget.
    after = traffik_items_app("2/min")
    assert await statuses(after, ["/items/1", "/items/2", "/items/3"]) == [200, 200, 429]
