"""The SQLite backend: rate-limit state shared by the worker processes of one host, standard library only."""

from __future__ import annotations

from traffik.backends.sqlite._backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
