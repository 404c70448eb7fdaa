"""One variant of `benchmarks.instructions`, run under callgrind: `python -m benchmarks.instruction_run <variant> <requests> [traffik 1.2's directory]`.

Builds the variant's app, then makes the requests one after another from one client through
its ASGI interface (as the timed benchmark does), with the collector off; exits non-zero
unless every answer was 200. traffik 1.2 (`LEGACY`) is imported from the directory given,
put first on the path before anything imports traffik.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and len(sys.argv) > 3:
    sys.path.insert(0, sys.argv[3])  # traffik 1.2, before anything imports traffik

import asyncio
import gc
import tempfile
from typing import Any, Callable, Optional

__all__ = ["GROUPS", "LEGACY", "RIVAL_VARIANTS", "needs"]

LEGACY = "traffik 1.2.2"
_STRATEGIES = ("FixedWindow", "TokenBucket", "GCRA", "SlidingWindowCounter", "LeakyBucket")
_SQLITE = ("FixedWindow", "TokenBucket")
_RIVAL_NAMES = (
    "limits (thin dependency)",
    "limits.aio (thin dependency)",
    "slowapi",
    "fastapi-limiter",
)
RIVAL_VARIANTS = (*_RIVAL_NAMES, LEGACY)
"""The other limiters (`benchmarks.rival_apps`), compared with traffik FixedWindow."""

GROUPS = {
    "FastAPI dependency": (
        "no limiter",
        "no-op dependency",
        *(f"traffik {name}" for name in _STRATEGIES),
        "traffik FixedWindow, headers=None",
        *(f"traffik {name} (SQLite)" for name in _SQLITE),
        *RIVAL_VARIANTS,
    ),
    "Starlette middleware": ("bare app", "no-op middleware", "ThrottleMiddleware"),
}
"""Variants by group: the first is the group's bare request, the second its floor, the third
traffik's FixedWindow (what rivals are compared with)."""


def needs(variant: str) -> Optional[str]:
    """Why `variant` cannot run here (a rival not installed), or None."""
    from benchmarks.rival_apps import RIVALS

    for rival in RIVALS:
        if rival.name == variant and not rival.installed():
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
    from benchmarks.apps import dependency_app, noop, plain_app

    def nothing() -> None:
        return None

    if variant == "no limiter":
        return plain_app(), nothing
    if variant == "no-op dependency":
        return dependency_app(noop), nothing
    if variant in ("bare app", "no-op middleware", "ThrottleMiddleware"):
        from benchmarks.middleware_overhead import _app as middleware_app

        layer = {"bare app": "bare", "no-op middleware": "noop"}.get(variant, "throttled")
        return middleware_app(layer), nothing
    if variant == "traffik FixedWindow, headers=None":
        from benchmarks.rival_apps import traffik_app

        return traffik_app(headers=False), nothing
    if variant == LEGACY:
        from benchmarks.legacy_run import legacy_app

        app, backend = legacy_app()
        await backend.initialize()
        return app, nothing
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
            return rival.app(), nothing
    raise SystemExit(f"unknown variant {variant!r}: one of {sum(GROUPS.values(), ())}")


async def _run(variant: str, requests: int) -> None:
    from benchmarks.asgi import asgi_target, clients

    app, close = await _app(variant)
    path = "/items/1" if variant in GROUPS["Starlette middleware"] else "/"
    target = asgi_target(variant, app, clients(1), path)
    for i in range(requests):
        await target.one(i)
    done = close()
    if done is not None:
        await done
    if set(target.statuses) != {200}:
        raise SystemExit(f"{variant} answered {dict(target.statuses)}, not 200 only")


if __name__ == "__main__":
    gc.disable()
    asyncio.run(_run(sys.argv[1], int(sys.argv[2])))
