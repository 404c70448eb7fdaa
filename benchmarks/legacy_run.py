"""traffik 1.2 timed in a process of its own, for `benchmarks.rivals` and `benchmarks.instructions` (it is imported as `traffik` too).

`legacy_path` finds traffik 1.2.2 (`$TRAFFIK_12_PATH`, or a `pip install --target` into
`~/.cache/traffik-benchmarks/` made on first use, with pottery for its Redis backend and
nothing that would shadow this environment's packages), and `measure_apart` runs
`python -m benchmarks.legacy_run <that directory> <mode> [redis url [server pid]]` (the pid
of a server the run started: sequential Redis requests share its CPU). That puts the
directory first on the path, then times the bare endpoint, the floor and traffik 1.2's
`HTTPThrottle` (FixedWindow, its default; no headers, its default) in each of the rivals'
workloads as `benchmarks.rivals.timed` does (on Redis too when given a URL, with the
commands per request), and prints one JSON line: per workload, per variant, the µs per
request of each repetition.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])  # before anything imports traffik

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Optional

__all__ = ["LEGACY_VERSION", "legacy_app", "legacy_path", "measure_apart"]

LEGACY_VERSION = "1.2.2"
_ROOT = Path(__file__).resolve().parents[1]
_CACHE = (
    Path.home()
    / ".cache"
    / "traffik-benchmarks"
    / f"traffik-{LEGACY_VERSION}-py{sys.version_info[0]}.{sys.version_info[1]}"
)
"""Where traffik 1.2 is installed on first use (its wheel is built for each Python)."""
_BUILT = 0
_PACKAGES = (
    f"traffik=={LEGACY_VERSION}",
    "annotated-types>=0.7",
    "typing_extensions>=4.12",
    "pottery>=3",  # its Redis backend's lock; pottery's own redis is this environment's
    "mmh3",
)


def legacy_path() -> tuple[Optional[Path], Optional[str]]:
    """Where traffik 1.2 is (installed there now if need be), or why it is not."""
    given = os.environ.get("TRAFFIK_12_PATH")
    place = Path(given) if given else _CACHE
    if (place / "traffik" / "__init__.py").exists() and (place / "pottery").exists():
        return place, None
    if given:
        return None, f"$TRAFFIK_12_PATH={given} holds no traffik package with pottery beside it"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--upgrade", "--target", str(place), "--no-deps", *_PACKAGES]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        reason = done.stderr.strip()[-200:]
        return None, f"pip could not install traffik=={LEGACY_VERSION}: {reason}"
    return place, None


def measure_apart(
    mode: str, url: Optional[str], server_pid: Optional[int] = None
) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """traffik 1.2's figures from its own process, or why there are none; its sequential
    Redis requests share a CPU with the server `server_pid` (`servers.one_cpu`), if given."""
    place, why = legacy_path()
    if place is None:
        return None, why
    command = [sys.executable, "-m", "benchmarks.legacy_run", str(place), mode]
    if url:
        command.append(url)
        if server_pid is not None:
            command.append(str(server_pid))
    done = subprocess.run(
        command,
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"traffik 1.2 did not run: {last[-300:]}"
    return json.loads(done.stdout.strip().splitlines()[-1]), None


async def legacy_app(url: Optional[str] = None) -> Any:
    """traffik 1.2's throttle as the endpoint's dependency, its backend initialized (in
    memory, or on the Redis at `url`)."""
    from benchmarks.apps import dependency_app
    from benchmarks.rival_apps import KEY_PREFIX, RATE_PER_DAY
    from traffik import HTTPThrottle, __version__

    if not __version__.startswith("1.2"):
        raise RuntimeError(f"expected traffik 1.2 first on the path, found {__version__}")
    backend: Any
    if url is None:
        from traffik.backends.inmemory import InMemoryBackend

        backend = InMemoryBackend(namespace=f"{KEY_PREFIX}-12")
    else:
        from traffik.backends.redis import RedisBackend

        backend = RedisBackend(connection=url, namespace=f"{KEY_PREFIX}-12")
    await backend.initialize()
    global _BUILT
    _BUILT += 1  # (traffik 1.2 refuses a uid it has seen)
    throttle = HTTPThrottle(f"bench:rivals:{_BUILT}", rate=f"{RATE_PER_DAY}/d", backend=backend)
    return dependency_app(throttle)


async def main(mode: str, url: Optional[str], server_pid: Optional[int] = None) -> dict[str, Any]:
    from benchmarks.apps import plain_app
    from benchmarks.rivals import BARE, FLOOR, LEGACY, WORKLOADS, commands, floor_app, timed
    from benchmarks.settings import MODES

    settings = MODES[mode]
    times: dict[str, Any] = {}
    counted: dict[str, float] = {}
    for store, workload in WORKLOADS:
        where = None if store == "memory" else url
        if store == "redis" and url is None:
            continue
        apps = {
            BARE: plain_app(),
            FLOOR: await floor_app(where),
            LEGACY: await legacy_app(where),
        }
        times[f"{store} {workload}"] = await timed(apps, store, workload, settings, server_pid)
        if where is not None and not workload.endswith("at once"):
            found = await commands({LEGACY: apps[LEGACY]}, where, settings)
            counted[f"{store} {workload}"] = found[LEGACY]
    return {"times": times, "commands": counted}


if __name__ == "__main__":
    address = sys.argv[3] if len(sys.argv) > 3 else None
    pid = int(sys.argv[4]) if len(sys.argv) > 4 else None
    print(json.dumps(asyncio.run(main(sys.argv[2], address, pid))))
