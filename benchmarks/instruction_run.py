"""One variant of `benchmarks.instructions`, run under callgrind: `python -m benchmarks.instruction_run <variant> <requests> [traffik 1.2's directory]`.

Builds the variant's app, then makes the requests one after another from one client through
its ASGI interface (as the timed benchmark does), with the collector off; exits non-zero
unless every answer was 200. traffik 1.2 (`LEGACY`) is imported from the directory given,
put first on the path before anything imports traffik. A variant `... on Redis` (and the
Redis floor) talks to the Redis at `$TRAFFIK_REDIS_URL`.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and len(sys.argv) > 3:
    sys.path.insert(0, sys.argv[3])  # traffik 1.2, before anything imports traffik

import asyncio
import gc
import os
import tempfile
from typing import Any, Callable, Optional

__all__ = ["GROUPS", "LEGACY", "ON_REDIS", "RIVAL_VARIANTS", "needs"]

LEGACY = "traffik 1.2.2"
ON_REDIS = " on Redis"
"""The suffix of a variant that runs on the Redis at `$TRAFFIK_REDIS_URL`."""
_STRATEGIES = ("FixedWindow", "TokenBucket", "GCRA", "SlidingWindowCounter", "LeakyBucket")
_SQLITE = ("FixedWindow", "TokenBucket")
_RIVAL_NAMES = (
    "limits (thin dependency)",
    "limits.aio (thin dependency)",
    "slowapi",
    "fastapi-limiter",
)
_RIVALS = (*_RIVAL_NAMES, LEGACY)

GROUPS = {
    "FastAPI dependency": (
        "no limiter",
        "no-op dependency",
        *(f"traffik {name}" for name in _STRATEGIES),
        "traffik FixedWindow, headers=None",
        *(f"traffik {name} (SQLite)" for name in _SQLITE),
        *_RIVALS,
    ),
    "FastAPI dependency on Redis": (
        "no limiter",
        "no-op dependency + EVALSHA",
        "traffik FixedWindow" + ON_REDIS,
        *(name + ON_REDIS for name in _RIVALS),
    ),
    "Starlette middleware": ("bare app", "no-op middleware", "ThrottleMiddleware"),
}
"""Variants by group: the first is the group's bare request, the second its floor, the third
traffik's FixedWindow (what rivals are compared with)."""

RIVAL_VARIANTS = (*_RIVALS, *(name + ON_REDIS for name in _RIVALS))
"""The other limiters (`benchmarks.rival_apps`), compared with traffik FixedWindow."""


def needs(variant: str) -> Optional[str]:
    """Why `variant` cannot run here (a rival not installed), or None."""
    from benchmarks.rival_apps import RIVALS

    name = variant.removesuffix(ON_REDIS)
    for rival in RIVALS:
        if rival.name == name and not rival.installed():
            return f"not installed: pip install {rival.distribution}"
    return None


def _throttled(strategy: str, backend: Any) -> Any:
    from benchmarks.apps import dependency_app
    from benchmarks.rival_apps import RATE_PER_DAY
    from traffik import HTTPThrottle, strategies

    throttle = HTTPThrottle(
        "bench:instructions",
        rate=f"{RATE_PER_DAY}/d",
        backend=backend,
        strategy=getattr(strategies, strategy)(),
    )
    return dependency_app(throttle)


async def _app(variant: str) -> tuple[Any, Callable[[], Any]]:
    """The variant's app, and what to close after the requests."""
    from benchmarks.apps import plain_app
    from benchmarks.rivals import floor_app

    def nothing() -> None:
        return None

    url: Optional[str] = None
    if variant.endswith(ON_REDIS) or variant == "no-op dependency + EVALSHA":
        url = os.environ.get("TRAFFIK_REDIS_URL")
        if not url:
            raise SystemExit(f"{variant!r} needs a Redis: set TRAFFIK_REDIS_URL=redis://host:port")
        variant = variant.removesuffix(ON_REDIS)
    if variant == "no limiter":
        return plain_app(), nothing
    if variant in ("no-op dependency", "no-op dependency + EVALSHA"):
        return await floor_app(url), nothing
    if variant in ("bare app", "no-op middleware", "ThrottleMiddleware"):
        from benchmarks.middleware_overhead import _app as middleware_app

        layer = {"bare app": "bare", "no-op middleware": "noop"}.get(variant, "throttled")
        return middleware_app(layer), nothing
    if variant == "traffik FixedWindow, headers=None" or (variant == "traffik FixedWindow" and url):
        from benchmarks.rival_apps import traffik_app

        return traffik_app(variant == "traffik FixedWindow", url), nothing
    if variant == LEGACY:
        from benchmarks.legacy_run import legacy_app

        return await legacy_app(url), nothing
    if variant.endswith("(SQLite)"):
        from traffik.backends.sqlite import SQLiteBackend

        folder = tempfile.TemporaryDirectory()
        backend = SQLiteBackend(f"{folder.name}/bench.db")
        strategy = variant.split()[1]

        async def close() -> None:
            await backend.close()
            folder.cleanup()

        return _throttled(strategy, backend), close
    if variant.startswith("traffik "):
        from traffik import InMemoryBackend

        return _throttled(variant.split()[1], InMemoryBackend()), nothing
    from benchmarks.rival_apps import RIVALS

    for rival in RIVALS:
        if rival.name == variant:
            return await rival.app(url), nothing
    raise SystemExit(f"unknown variant {variant!r}: one of {sum(GROUPS.values(), ())}")


async def _run(variant: str, requests: int) -> None:
    from benchmarks.asgi import asgi_target, clients
    from benchmarks.rival_apps import close_all

    app, close = await _app(variant)
    path = "/items/1" if variant in GROUPS["Starlette middleware"] else "/"
    target = asgi_target(variant, app, clients(1), path)
    for i in range(requests):
        await target.one(i)
    done = close()
    if done is not None:
        await done
    close_all()
    if set(target.statuses) != {200}:
        raise SystemExit(f"{variant} answered {dict(target.statuses)}, not 200 only")


if __name__ == "__main__":
    gc.disable()
    asyncio.run(_run(sys.argv[1], int(sys.argv[2])))
