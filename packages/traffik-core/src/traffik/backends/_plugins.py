"""Backend discovery through the `traffik.backends` entry-point group; the one user of `importlib.metadata`."""

from __future__ import annotations

import functools
import importlib
from importlib import metadata
from typing import Any

__all__ = ["GROUP", "Plugin", "discover", "refresh"]

GROUP = "traffik.backends"

_BUILTIN = {
    "memory": "traffik.backends.inmemory:InMemoryBackend",
    "inmemory": "traffik.backends.inmemory:InMemoryBackend",
    "sqlite": "traffik.backends.sqlite:SQLiteBackend",
}

KNOWN_DISTRIBUTIONS = {
    "redis": "traffik-redis",
    "rediss": "traffik-redis",
    "unix": "traffik-redis",
    "redis+cluster": "traffik-redis",
    "redis+sentinel": "traffik-redis",
    "memcached": "traffik-memcached",
}


class Plugin:
    """One registered backend: its name, `module:attr` target and distribution."""

    __slots__ = ("distribution", "name", "target")

    def __init__(self, name: str, target: str, distribution: str) -> None:
        self.name = name
        self.target = target
        self.distribution = distribution

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
        return obj


def _entry_points() -> list[Any]:
    found: Any = metadata.entry_points()
    if hasattr(found, "select"):  # Python 3.10+
        return list(found.select(group=GROUP))
    return list(found.get(GROUP, ()))


def _distribution_of(entry_point: Any) -> str:
    dist = getattr(entry_point, "dist", None)
    name = (
        getattr(dist, "name", None) or getattr(dist, "metadata", {}).get("Name")
        if dist is not None
        else None
    )
    return str(name) if name else KNOWN_DISTRIBUTIONS.get(entry_point.name.lower(), "traffik-core")


@functools.lru_cache(maxsize=1)
def discover() -> dict[str, Plugin]:
    """Every backend name to its plugin; built-ins resolve even without package metadata."""
    plugins = {name: Plugin(name, target, "traffik-core") for name, target in _BUILTIN.items()}
    for entry_point in _entry_points():
        name = entry_point.name.lower()
        plugins[name] = Plugin(name, entry_point.value, _distribution_of(entry_point))
    return plugins


def refresh() -> None:
    """Forget the cached entry points (after installing a plugin at run time, or in tests)."""
    discover.cache_clear()
