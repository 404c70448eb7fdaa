"""The file's tables: created when missing, and checked to be Traffik's own, of this schema version."""

from __future__ import annotations

import sqlite3

from traffik.exceptions import BackendError

__all__ = ["SCHEMA_VERSION", "create"]

SCHEMA_VERSION = 1
"""The layout of the tables below, kept in `traffik_meta` as `schema`: a file written by a
Traffik with another layout is refused rather than misread."""

_TABLES = {
    "traffik_entries": (
        "CREATE TABLE IF NOT EXISTS traffik_entries "
        "(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL, expires_at INTEGER) WITHOUT ROWID",
        ("key", "value", "expires_at"),
    ),
    "traffik_meta": (
        "CREATE TABLE IF NOT EXISTS traffik_meta "
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
    for table, (statement, columns) in _TABLES.items():
        cursor.execute(statement)
        found = tuple(row[1] for row in cursor.execute(f"PRAGMA table_info({table})"))
        if found != columns:
            raise BackendError(
                f"SQLite file {path!r} has a table {table!r} not made by Traffik (columns "
                f"{', '.join(found)}; Traffik's are {', '.join(columns)}): point the backend "
                "at another path, or drop the table if nothing else uses it"
            )
    for statement in _FILL:
        cursor.execute(statement)
    (version,) = cursor.execute("SELECT value FROM traffik_meta WHERE name = 'schema'").fetchone()
    if version != SCHEMA_VERSION:
        raise BackendError(
            f"SQLite file {path!r} has Traffik's schema version {version!r}, and this Traffik "
            f"reads version {SCHEMA_VERSION}: run the Traffik version that wrote it, or point "
            "the backend at another path (rate-limit state can start over in a new file)"
        )
