"""Python bytecodes per request of the in-memory apps (a count the machine's load cannot move).

Each app is warmed up, then a block of requests runs under `sys.settrace` with opcode
events: every bytecode the interpreter executes for a request is counted, in traffik's
functions and in everything else (Starlette, FastAPI, asyncio). Two sets of apps:

- the middleware benchmark's (`benchmarks.middleware_overhead`): the no-op ASGI middleware,
  `ThrottleMiddleware` with one in-memory `MiddlewareThrottle`, the floor middleware, the
  hand-fused one (`benchmarks.fused`: the throttle's work written by hand), and
  `ThrottleMiddleware` with two throttles decided as one; each is reported over the no-op
  one;
- the main benchmark's FastAPI route (`benchmarks.apps`): no limiter, the no-op dependency,
  a throttle of each built-in strategy in memory on one key (the one-key workload's
  rates), and the hand-fused FixedWindow dependency; each is reported over the route with
  no limiter, and as a multiple of the no-op dependency's (the ratio the main run's target
  speaks of, here in bytecodes).

A bytecode is not a fixed cost (a call costs more than a jump), but fewer of them on the
request path is less time, whatever else runs on the machine: this is how a change to the
hot path is judged before a timed run. `python -m benchmarks --bytecodes` prints both tables.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from types import FrameType
from typing import Any, Callable, Optional

from benchmarks import middleware_overhead
from benchmarks.apps import dependency_app, noop, plain_app
from benchmarks.asgi import Target, asgi_target, clients
from benchmarks.fused import fused_dependency
from benchmarks.timing import run_block
from benchmarks.workloads import WORKLOADS
from traffik import HTTPThrottle, InMemoryBackend
from traffik.strategies import GCRA, FixedWindow, LeakyBucket, SlidingWindowCounter, TokenBucket

__all__ = [
    "FUSED",
    "STRATEGIES",
    "STRATEGY_NAMES",
    "Count",
    "count",
    "counts",
    "markdown",
    "report",
]

STRATEGIES = (FixedWindow, SlidingWindowCounter, TokenBucket, LeakyBucket, GCRA)
"""The strategies of the main run's in-memory ratio target."""
STRATEGY_NAMES = tuple(strategy.__name__ for strategy in STRATEGIES)
FUSED = "hand-fused FixedWindow"
"""The dependency table's row of `benchmarks.fused`'s dependency."""

_WARMUP = 300
_REQUESTS = 100

Count = dict[str, Any]
"""One app's count: `total` and `traffik` bytecodes per request, and `functions`: traffik's
functions (`module:function`) with their bytecodes per request, most first."""


def _function(frame: FrameType) -> Optional[str]:
    """`module:function` of a frame running traffik's code; None for any other code."""
    path = frame.f_code.co_filename.replace("\\", "/")
    if "/traffik/" not in path:
        return None
    module = path.rsplit("/traffik/", 1)[1].rsplit(".", 1)[0].replace("/", ".")
    return f"traffik.{module}:{frame.f_code.co_name}"


async def count(target: Target, requests: int = _REQUESTS, warmup: int = _WARMUP) -> Count:
    """Bytecodes per request of `target`, one request at a time, after `warmup` requests."""
    await run_block(target, warmup, 1)
    ours: Counter[str] = Counter()
    total = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Callable[..., Any]:
        nonlocal total
        frame.f_trace_opcodes = True
        if event == "opcode":
            total += 1
            name = _function(frame)
            if name is not None:
                ours[name] += 1
        return trace

    sys.settrace(trace)
    try:
        await run_block(target, requests, 1)
    finally:
        sys.settrace(None)
    if set(target.statuses) != {200}:
        raise RuntimeError(f"{target.name}: every request must be answered 200: {target.statuses}")
    return {
        "total": round(total / requests, 1),
        "traffik": round(sum(ours.values()) / requests, 1),
        "functions": {name: round(n / requests, 1) for name, n in ours.most_common()},
    }


def _throttled(strategy: type) -> Any:
    rate = WORKLOADS[0].rate_for(strategy.__name__)
    throttle = HTTPThrottle(
        f"bench:bytecodes:{strategy.__name__}",
        rate=rate,
        backend=InMemoryBackend(namespace="bytecodes"),
        strategy=strategy(),
    )
    return dependency_app(throttle)


async def counts() -> dict[str, dict[str, Count]]:
    """Every app's count: `{"middleware": {...}, "dependency": {...}}`."""
    peer = clients(1)
    path = middleware_overhead.PATH
    middleware = {
        layer: await count(asgi_target(layer, middleware_overhead._app(layer), peer, path))
        for layer in ("noop", "throttled", "floor", "fused", "two")
    }
    dependency = {
        "no limiter": await count(asgi_target("no limiter", plain_app(), peer)),
        "no-op dependency": await count(asgi_target("no-op", dependency_app(noop), peer)),
    }
    for strategy in STRATEGIES:
        target = asgi_target(strategy.__name__, _throttled(strategy), peer)
        dependency[strategy.__name__] = await count(target)
    fused = fused_dependency("bench:bytecodes", WORKLOADS[0].rate_for("FixedWindow"), "GET:/")
    dependency[FUSED] = await count(asgi_target(FUSED, dependency_app(fused), peer))
    return {"middleware": middleware, "dependency": dependency}


def markdown(found: dict[str, dict[str, Count]]) -> str:
    """The two tables, and traffik's functions on the middleware's path."""
    middleware, dependency = found["middleware"], found["dependency"]
    noop_total = middleware["noop"]["total"]
    lines = [
        "### Bytecodes per request: ThrottleMiddleware (Starlette, in memory)",
        "",
        "| app | total | over the no-op middleware | in traffik |",
        "|---|---|---|---|",
    ]
    for layer, row in middleware.items():
        over = row["total"] - noop_total
        lines.append(f"| {layer} | {row['total']:.0f} | {over:.0f} | {row['traffik']:.0f} |")
    plain, floor = dependency["no limiter"]["total"], dependency["no-op dependency"]["total"]
    lines += [
        "",
        "### Bytecodes per request: a FastAPI route (in memory, one key)",
        "",
        "| app | total | over no limiter | x no-op dependency | in traffik |",
        "|---|---|---|---|---|",
    ]
    for name, row in dependency.items():
        over = row["total"] - plain
        ratio = over / (floor - plain) if floor > plain else float("nan")
        lines.append(
            f"| {name} | {row['total']:.0f} | {over:.0f} | {ratio:.2f} | {row['traffik']:.0f} |"
        )
    lines += ["", "traffik's functions behind ThrottleMiddleware, bytecodes per request:", ""]
    lines += [f"- `{name}`: {n:g}" for name, n in middleware["throttled"]["functions"].items()]
    return "\n".join(lines)


def report() -> dict[str, dict[str, Count]]:
    """Count every app, print the tables, and return the counts for the JSON document."""
    found = asyncio.run(counts())
    print(markdown(found))
    return found
