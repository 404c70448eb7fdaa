"""What `ThrottleMiddleware` adds to a request, against a no-op ASGI middleware (issue 16).

One Starlette app (no FastAPI: no dependency machinery to pay for), timed bare, behind a
pure ASGI middleware that does nothing, behind `ThrottleMiddleware` with one
`MiddlewareThrottle` (in-memory `FixedWindow`, a limit nothing reaches, default headers), and
behind the floor of any such middleware: a pure ASGI middleware that makes only the store's
decision (the in-memory backend's own step on a fixed key) and adds two constant headers to the
response, behind the hand-fused floor (`benchmarks.fused`: the throttle's whole work, written
by hand for this one configuration), and behind `ThrottleMiddleware` with two
`MiddlewareThrottle`s on one store that both guard the route (decided as one:
`traffik.together`; no target). Blocks are interleaved
repetition after repetition and timed in CPU time; the figure is the throttle's µs over the
no-op middleware within each repetition (target: at most 3 µs), next to the floors' and the
two throttles'.
Every request goes to the route the throttle guards and must be answered 200 by each app
(the run fails otherwise: a request that missed the route would measure a 404 and no
throttle at all).

`python -m benchmarks.middleware_overhead [--quick | --smoke]` prints the table on its own.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.asgi import asgi_target, clients
from benchmarks.fused import fused_middleware
from benchmarks.settings import MODES, Settings
from benchmarks.targets import printed
from benchmarks.timing import CPU_TIME, Spread, run_block, spread
from traffik import HTTPThrottle, InMemoryBackend, Rate
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
from traffik.strategies import FixedWindow
from traffik.strategies.steps import in_place_kind

__all__ = ["TARGET_US", "MiddlewareOverhead", "markdown", "measure", "report"]

TARGET_US = 3.0
_MIN_REPETITIONS = 15


@dataclass
class MiddlewareOverhead:
    """µs per request (median of block medians, min-max) of each app, and the throttle's
    µs over the no-op middleware."""

    bare_us: Spread
    noop_us: Spread
    throttled_us: Spread
    overhead_us: Spread
    statuses: dict[str, dict[int, int]]
    floor_us: Optional[Spread] = None
    """The floor middleware's µs over the no-op middleware (the store's decision and two
    headers)."""
    two_us: Optional[Spread] = None
    """Two throttles on one store (decided as one), µs over the no-op middleware."""
    fused_us: Optional[Spread] = None
    """The hand-fused floor (`benchmarks.fused`: the throttle's whole work written by hand
    for this configuration), µs over the no-op middleware."""
    target_us: float = TARGET_US
    met: bool = False


_RATE = "1000000000/d"
_HEADERS = [(b"ratelimit-policy", b'"bench:mw";q=1000000000;w=86400')]
_REMAINING = (b"ratelimit", b'"bench:mw";r=999999999;t=86400')


def _floor(inner: Any) -> Any:
    """The floor middleware: the store's decision, then two headers on the response start."""
    backend = InMemoryBackend(namespace="bench-floor")
    strategy = FixedWindow()
    decide = backend.decider(strategy, Rate.parse(_RATE), 1, in_place_kind(strategy))
    assert decide is not None

    async def floor(scope: Any, receive: Any, send: Any) -> None:
        if decide("floor") is None:  # (the backend opens on its first use)
            await backend.initialize()
            decide("floor")

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_HEADERS, _REMAINING]
            await send(message)

        await inner(scope, receive, sending)

    return floor


def _app(layer: str) -> Any:
    async def items(request: Any) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/items/{item_id}", items)])
    if layer == "floor":
        app.add_middleware(_floor)
    elif layer == "noop":

        class Noop:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                await self.inner(scope, receive, send)

        app.add_middleware(Noop)
    elif layer in ("throttled", "headers=None"):
        headers: Optional[Literal["ietf"]] = None if layer == "headers=None" else "ietf"
        throttle = HTTPThrottle("bench:mw", rate=_RATE, backend=InMemoryBackend(), headers=headers)
        app.add_middleware(
            ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(throttle, path="/items/")]
        )
    elif layer == "fused":
        app.add_middleware(fused_middleware("bench:mw", _RATE, "/items/", "/items/"))
    elif layer == "two":
        store = InMemoryBackend()
        pair = [
            MiddlewareThrottle(HTTPThrottle(f"bench:mw:{n}", rate=_RATE, backend=store), path=path)
            for n, path in (("all", "/**"), ("items", "/items/"))
        ]
        app.add_middleware(ThrottleMiddleware, middleware_throttles=pair)
    return app


LAYERS = ("bare", "noop", "throttled", "floor", "fused", "two")
"""The apps (`_app`), in the order they are timed; `--profile` also times `"headers=None"`
(`ThrottleMiddleware` with the same throttle, no rate-limit headers)."""

PATH = "/items/1"
"""What every request asks for: the route `/items/{item_id}`, under the throttle's `/items/`."""


async def measure(settings: Settings) -> MiddlewareOverhead:
    layers = LAYERS
    targets = [asgi_target(layer, _app(layer), clients(1), PATH) for layer in layers]
    repetitions = max(settings.repetitions, _MIN_REPETITIONS) if settings.mode != "smoke" else 1
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    for target in targets:
        await run_block(target, settings.warmup, 1, CPU_TIME)
    for rep in range(repetitions):
        order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
        for target in order:
            gc.collect(0)
            gc.disable()
            try:
                block = await run_block(target, settings.requests, 1, CPU_TIME)
            finally:
                gc.enable()
            block.sort()
            times[target.name].append(block[len(block) // 2] / 1000)
    statuses = {target.name: dict(target.statuses) for target in targets}
    if any(set(counts) != {200} for counts in statuses.values()):
        raise RuntimeError(f"the middleware benchmark's apps must answer 200 only: {statuses}")
    overhead = spread([t - n for t, n in zip(times["throttled"], times["noop"])])
    return MiddlewareOverhead(
        spread(times["bare"]),
        spread(times["noop"]),
        spread(times["throttled"]),
        overhead,
        statuses,
        spread([f - n for f, n in zip(times["floor"], times["noop"])]),
        spread([t - n for t, n in zip(times["two"], times["noop"])]),
        spread([f - n for f, n in zip(times["fused"], times["noop"])]),
        met=printed(overhead["median"]) <= TARGET_US,
    )


def _us(value: Spread) -> str:
    return f"{value['median']:.2f} ({value['min']:.2f}-{value['max']:.2f})"


def markdown(row: MiddlewareOverhead) -> str:
    verdict = "met" if row.met else "**MISSED**"
    return (
        "### ThrottleMiddleware over a no-op ASGI middleware (Starlette, in memory, µs per "
        "request, CPU time)\n\n"
        "| bare app | no-op middleware | ThrottleMiddleware | overhead | target | | floor "
        "| hand-fused | two throttles |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {_us(row.bare_us)} | {_us(row.noop_us)} | {_us(row.throttled_us)} "
        f"| {_us(row.overhead_us)} | <= {row.target_us:g} | {verdict} "
        f"| {_us(row.floor_us) if row.floor_us else ''} "
        f"| {_us(row.fused_us) if row.fused_us else ''} "
        f"| {_us(row.two_us) if row.two_us else ''} |\n\n"
        "`floor`: a no-op middleware that makes only the store's decision and adds two "
        "constant headers, over the no-op middleware: what any middleware limiter on this "
        "store pays before matching a rule, finding a client's key or formatting a header. "
        "`hand-fused`: the throttle's whole work for this one configuration written by hand "
        "(`benchmarks.fused`: the client's key, the store's decision, the request's state "
        "noted, the two fields formatted and merged), no rule, option or hook looked at: the "
        "least any code doing that work costs here"
        + (
            f"; the target is below it ({row.fused_us['median']:.2f} us). "
            if row.fused_us and printed(row.fused_us["median"]) > row.target_us
            else ". "
        )
        + "`two throttles`: two `MiddlewareThrottle`s on one store that both guard the route "
        "(`/**` and `/items/`), decided as one, over the no-op middleware."
    )


def report(mode: str) -> dict[str, Any]:
    """Measure in `mode`, print the table, and return the row for the JSON document."""
    row = asyncio.run(measure(MODES[mode]))
    print("\n" + markdown(row))
    return asdict(row)


if __name__ == "__main__":
    size = "quick" if "--quick" in sys.argv else "smoke" if "--smoke" in sys.argv else "full"
    report(size)
