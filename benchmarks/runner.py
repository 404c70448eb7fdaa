"""A whole run: open the stores, run every workload on each, measure key memory, check the targets."""

from __future__ import annotations

import os
import platform
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from benchmarks.memory import bytes_per_key
from benchmarks.processes import PROCESSES, run_processes
from benchmarks.results import Run
from benchmarks.scenarios import run_scenario
from benchmarks.settings import Settings
from benchmarks.stores import STORES, Store
from benchmarks.targets import checks, compare_sqlite
from benchmarks.workloads import WORKLOADS

__all__ = ["run"]

_DISTRIBUTIONS = (
    "traffik-core",
    "traffik-redis",
    "traffik-memcached",
    "fastapi",
    "starlette",
    "redis",
    "aiomcache",
)


def _versions() -> dict[str, str]:
    found = {}
    for name in _DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _meta(settings: Settings, started: float) -> dict[str, Any]:
    return {
        "mode": settings.mode,
        "settings": settings.as_dict(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "seconds": 0.0,
    }


async def _open(store: Store) -> str:
    """The store's description, or `not available: <reason>` (and the store stays unavailable)."""
    try:
        await store.open()
    except Exception as exc:
        await store.close()
        return f"not available: {exc}"
    return store.detail


_STARTED = time.monotonic()


def _progress(message: str) -> None:
    print(f"[bench {time.monotonic() - _STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


async def _several_processes(
    result: Run, stores: list[Store], settings: Settings, unavailable: dict[str, str]
) -> None:
    """When SQLite is measured: the same throttles in several processes at once, on SQLite
    and on the other stores of the run (memory, Redis) for comparison."""
    if not any(store.name == "sqlite" and store.available for store in stores):
        return
    for store in stores:
        if not store.available or store.name not in ("memory", "sqlite", "redis"):
            continue
        _progress(f"{store.name}: {PROCESSES} processes at once")
        try:
            rows, holds = run_processes(store.name, store.url, settings)
        except Exception as exc:
            failure = f"failed with {PROCESSES} processes: {type(exc).__name__}: {exc}"
            result.stores[store.name] += f"; {failure}"
            unavailable[f"{store.name} ({PROCESSES} processes)"] = failure
            _progress(f"{store.name}: {failure}")
            continue
        result.processes += rows
        result.holds.append(holds)


async def run(settings: Settings, names: list[str]) -> Run:
    """Measure `names` (stores, in that order) with `settings`."""
    started = time.time()
    stores = [STORES[name]() for name in names]
    result = Run(_meta(settings, started), {})
    unavailable = {}
    try:
        for store in stores:
            result.stores[store.name] = await _open(store)
            if not store.available:
                unavailable[store.name] = result.stores[store.name]
                _progress(f"{store.name}: {result.stores[store.name]}")
                continue
            for workload in WORKLOADS:
                label = workload.label(settings.keys)
                _progress(f"{store.name}: {label}")
                try:
                    rows, counts = await run_scenario(store, workload, settings)
                except Exception as exc:
                    failure = f"failed during '{label}': {type(exc).__name__}: {exc}"
                    result.stores[store.name] += f"; {failure}"
                    unavailable[f"{store.name} ({label} and after)"] = failure
                    _progress(f"{store.name}: {failure}")
                    break
                result.rows += rows
                result.counts += counts
        if "memory" in names:
            _progress(f"memory: bytes per key over {settings.memory_keys:,} keys")
            result.memory = await bytes_per_key(settings.memory_keys)
        await _several_processes(result, stores, settings, unavailable)
    finally:
        for store in stores:
            await store.close()
    result.meta["sequential_on_one_cpu"] = [
        store.name for store in stores if store.sequential_cpu is not None
    ]
    result.comparisons = compare_sqlite(result.rows, result.processes)
    result.checks = checks(result.rows, result.counts, unavailable, result.comparisons)
    result.meta["seconds"] = time.time() - started
    return result
