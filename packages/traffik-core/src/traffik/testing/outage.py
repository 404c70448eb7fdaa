"""A store outage seen through throttles: the one fault check every networked backend runs."""

from __future__ import annotations

import time
from typing import Any, Callable

from traffik.backends.base import ThrottleBackend

__all__ = ["check_outage_follows_on_error"]


async def check_outage_follows_on_error(
    backend: ThrottleBackend, stop: Callable[[], Any], start: Callable[[], Any], bound: float
) -> None:
    """Stop the store under two throttles of a Starlette app, one failing open and one closed,
    then start it again: while it is down each request answers 200 or 429 within `bound`
    seconds (never a 500, never a hang), and afterwards both count again by themselves.

    Needs Starlette and httpx; raises `AssertionError` naming what went wrong.
    """
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from traffik.throttles import HTTPThrottle

    throttles = {
        "/open": HTTPThrottle("outage:open", "1000/hour", backend=backend, on_error="allow"),
        "/closed": HTTPThrottle("outage:closed", "1000/hour", backend=backend, on_error="throttle"),
    }

    async def endpoint(request: Request) -> PlainTextResponse:
        await throttles[request.url.path].hit(request)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route(path, endpoint) for path in throttles])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        for path in throttles:
            assert (await client.get(path)).status_code == 200, f"{path} before the outage"
        stop()
        for path, status in (("/open", 200), ("/closed", 429)):
            started = time.monotonic()
            code = (await client.get(path)).status_code
            took = time.monotonic() - started
            assert code == status, f"{path} during the outage answered {code}, not {status}"
            assert took < bound, f"{path} during the outage took {took:.2f}s (bound {bound}s)"
        start()
        for path in throttles:
            code = (await client.get(path)).status_code
            assert code == 200, f"{path} after the restart answered {code}: no recovery"
