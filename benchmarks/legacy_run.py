"""traffik 1.2 timed in a process of its own, for `benchmarks.rivals` (it is imported as `traffik`).

`python -m benchmarks.legacy_run <directory holding traffik 1.2> <mode>` puts that directory
first on the path, then times the bare endpoint, the no-op dependency and traffik 1.2's
in-memory `HTTPThrottle` (FixedWindow, its default, no headers, its default) in each of the
rivals' workloads, as `benchmarks.rivals.timed` does, and prints one JSON line: per
workload, per variant, the µs per request of each repetition.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])  # before anything imports traffik

import asyncio
import json
from typing import Any

__all__ = ["legacy_app", "main"]


def legacy_app() -> tuple[Any, Any]:
    """traffik 1.2's throttle as the endpoint's dependency, and its backend (to initialize)."""
    from benchmarks.apps import dependency_app
    from benchmarks.rival_apps import RATE_PER_DAY
    from traffik import HTTPThrottle, __version__
    from traffik.backends.inmemory import InMemoryBackend

    if not __version__.startswith("1.2"):
        raise RuntimeError(f"expected traffik 1.2 first on the path, found {__version__}")
    backend = InMemoryBackend(namespace="bench-rivals")
    throttle = HTTPThrottle("bench:rivals", rate=f"{RATE_PER_DAY}/d", backend=backend)
    return dependency_app(throttle), backend


async def main(mode: str) -> dict[str, Any]:
    from benchmarks.apps import dependency_app, noop, plain_app
    from benchmarks.rivals import BARE, LEGACY, NOOP, WORKLOADS, timed
    from benchmarks.settings import MODES

    app, backend = legacy_app()
    await backend.initialize()
    apps = {BARE: plain_app(), NOOP: dependency_app(noop), LEGACY: app}
    return {workload: await timed(apps, workload, MODES[mode]) for workload in WORKLOADS}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[2]))))
