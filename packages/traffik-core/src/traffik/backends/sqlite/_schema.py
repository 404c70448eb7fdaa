"""The file's tables: created when missing (stood in, for a reader), and checked to be Traffik's own, of this schema version."""

from __future__ import annotations

import sqlite3

from traffik.exceptions import BackendError

__all__ = ["SCHEMA_VERSION", "create", "readable"]

SCHEMA_VERSION = 1
"""The layout of the tables below, kept in `traffik_meta` as `schema`: a file written by a
Traffik with another layout is refused rather than misread."""

_TABLES = {
    "traffik_entries": (
        "(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL, expires_at INTEGER) WITHOUT ROWID",
        ("key", "value", "expires_at"),
    ),
    "traffik_meta": (
        "(name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID",
        ("name", "value"),
    ),
}
_FILL = (
    "INSERT OR IGNORE INTO traffik_meta (name, value) SELECT 'rows', count(*) FROM traffik_entries",
    f"INSERT OR IGNORE INTO traffik_meta (name, value) VALUES ('schema', {SCHEMA_VERSION})",
    "CREATE TRIGGER IF NOT EXISTS traffik_entries_added AFTER INSERT ON traffik_entries "
    "BEGIN UPDATE traffik_meta SET value = value + 1 WHERE name = 'rows'; END",
    "CREATE TRIGGER IF NOT EXISTS traffik_entries_removed AFTER DELETE ON traffik_entries "
    "BEGIN UPDATE traffik_meta SET value = value - 1 WHERE name = 'rows'; END",
)


def create(cursor: sqlite3.Cursor, path: str) -> None:
    """Create the tables that are missing (inside the caller's transaction); raise a
    `BackendError` naming `path` when a table of ours has other columns (another app's) or
    the file has another schema version."""
    for table, (columns, names) in _TABLES.items():
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {table} {columns}")
        _is_ours(cursor, path, table, names)
    for statement in _FILL:
        cursor.execute(statement)
    _refuse_another_version(cursor, path)


def readable(cursor: sqlite3.Cursor, path: str) -> None:
    """`create`'s checks for a connection that only reads, which then writes nothing
    (`query_only`). A table the file lacks (no app has used it) stands in empty, in the
    connection's own temporary database, so that every read finds no key."""
    for table, (columns, names) in _TABLES.items():
        if not _is_ours(cursor, path, table, names):
            cursor.execute(f"CREATE TEMP TABLE {table} {columns}")
    _refuse_another_version(cursor, path)
    cursor.execute("PRAGMA query_only = ON")


def _is_ours(cursor: sqlite3.Cursor, path: str, table: str, names: tuple[str, ...]) -> bool:
    """Whether the file has `table`; a `BackendError` when its columns are not `names`."""
    found = tuple(row[1] for row in cursor.execute(f"PRAGMA table_info({table})"))
    if found and found != names:
        raise BackendError(
            f"SQLite file {path!r} has a table {table!r} not made by Traffik (columns "
            f"{', '.join(found)}; Traffik's are {', '.join(names)}): point the backend "
            "at another path, or drop the table if nothing else uses it"
        )
    return bool(found)


def _refuse_another_version(cursor: sqlite3.Cursor, path: str) -> None:
    """A `BackendError` when the file's tables are of another schema version."""
    row = cursor.execute("SELECT value FROM traffik_meta WHERE name = 'schema'").fetchone()
    if row is not None and row[0] != SCHEMA_VERSION:
        raise BackendError(
            f"SQLite file {path!r} has Traffik's schema version {row[0]!r}, and this Traffik "
            f"reads version {SCHEMA_VERSION}: run the Traffik version that wrote it, or point "
            "the backend at another path (rate-limit state can start over in a new file)"
        )
