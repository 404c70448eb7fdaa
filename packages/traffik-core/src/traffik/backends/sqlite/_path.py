"""Where the database is: a filesystem path, or `:memory:`, from a path or a `sqlite:` URL."""

from __future__ import annotations

import os
from typing import Any

from traffik.exceptions import ConfigurationError

__all__ = ["MEMORY", "database_path"]

MEMORY = ":memory:"

_FORMS = (
    "use 'sqlite:////absolute/path.db' (four slashes), 'sqlite:///relative/path.db' (three), "
    "'sqlite:///:memory:', or a filesystem path"
)


def database_path(connection: Any) -> str:
    """The path in `connection`: `sqlite:///relative.db`, `sqlite:////absolute.db` (as
    SQLAlchemy writes them), `sqlite:///:memory:`, a plain path or an `os.PathLike`."""
    if isinstance(connection, os.PathLike):
        connection = os.fspath(connection)
    if not isinstance(connection, str) or not connection:
        raise ConfigurationError(f"SQLiteBackend: connection={connection!r}; {_FORMS}")
    if "://" not in connection:
        return connection
    scheme, _, rest = connection.partition("://")
    if scheme.lower() != "sqlite" or not rest.startswith("/") or rest == "/":
        raise ConfigurationError(
            f"SQLiteBackend: URL {connection!r} names no database file; {_FORMS}"
        )
    if "?" in rest:
        raise ConfigurationError(
            f"SQLiteBackend: URL {connection!r} has a query string; build it with "
            "from_url(url), which reads the settings in SQLiteBackend.url_options from it, "
            "or give them as keywords (SQLiteBackend(path, timeout=2.0, max_keys=100_000))"
        )
    return rest[1:]
