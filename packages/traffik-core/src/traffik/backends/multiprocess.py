"""traffik 1.2's `MultiProcessInMemoryBackend` is not part of Traffik; importing it says what to use."""

from __future__ import annotations

__all__: list[str] = []

raise ModuleNotFoundError(
    "traffik.backends.multiprocess (traffik 1.2's experimental MultiProcessInMemoryBackend) is not "
    "part of Traffik: it needed a compiled extension and a start() before the workers fork. For "
    "one limit shared by the worker processes of one host, use SQLiteBackend (standard library "
    "only): `from traffik.backends.sqlite import SQLiteBackend; "
    "backend = SQLiteBackend('sqlite:////var/lib/app/traffik.db')`, or "
    "backend='sqlite:////var/lib/app/traffik.db' (docs/sqlite.md); for several hosts, traffik-redis.",
    name="traffik.backends.multiprocess",
)
