"""`python -m traffik keys` and `inspect` on a SQLite file only read it: no journal mode switched, no table created, no write lock waited for, no write permission needed.

Each command runs in a process of its own, as an operator runs it. File modes do not bind
root, so as root (CI) the commands of a user who may not write run without the capabilities
that let root ignore them, and a probe first checks that the modes bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from traffik.backends.sqlite import SQLiteBackend
from traffik.buckets import bucket_prefix
from traffik.testing.command_line import run_command_line

pytestmark = pytest.mark.slow  # `python -m traffik` processes

_KEY = "{203.0.113.7}:GET:/items"


def _unprivileged(argv: list[str]) -> list[str]:
    """`argv` run so that file modes bind: as root, without the capabilities that bypass them."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *argv]


def _as_reader(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m traffik *args` as a user whose file modes bind."""
    argv = _unprivileged([sys.executable, "-m", "traffik", *args])
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _may_write(path: Path) -> bool:
    """Whether a process whose file modes bind may open `path` to write."""
    probe = f"import os; os.close(os.open({str(path)!r}, os.O_WRONLY))"
    argv = _unprivileged([sys.executable, "-c", probe])
    return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0


def _traffik_file(db: Path) -> None:
    """A file an app counted one client of the throttle `api` in (namespace `app`)."""

    async def fill() -> None:
        backend = SQLiteBackend(db, namespace="app")
        try:
            await backend.set(backend.get_key(bucket_prefix("api", None)) + _KEY, "1", 600)
        finally:
            await backend.close()

    asyncio.run(fill())


def _state(folder: Path, db: Path) -> tuple[list[str], bytes, str, list[str]]:
    """What a command could change: the folder's files, the bytes, the journal mode, the tables."""
    files, content = sorted(os.listdir(folder)), db.read_bytes()  # (before a connection opens)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        tables = sorted(name for (name,) in conn.execute("SELECT name FROM sqlite_master"))
    return files, content, mode, tables


@contextlib.contextmanager
def _read_only(*paths: Path) -> Iterator[None]:
    modes = {path: path.stat().st_mode for path in paths}
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        yield
    finally:
        for path, mode in reversed(modes.items()):
            path.chmod(mode)


def test_keys_and_inspect_leave_another_apps_database_as_they_found_it(tmp_path: Path) -> None:
    db = tmp_path / "app.db"  # the wrong file: the app's own database
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.commit()
    before = _state(tmp_path, db)
    for command in (("keys",), ("inspect", "--throttle", "api")):
        result = run_command_line(*command, f"sqlite:///{db}", "--namespace", "app")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("0 key(s)\n"), result.stdout  # no Traffik tables: no keys
    assert _state(tmp_path, db) == before


def test_keys_and_inspect_read_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    db = tmp_path / "traffik.db"
    _traffik_file(db)
    writer = sqlite3.connect(db, isolation_level=None)  # the app, inside a transaction
    writer.execute("BEGIN IMMEDIATE")
    try:
        scope = ("--namespace", "app", "--throttle", "api")
        listed = run_command_line("keys", f"sqlite:///{db}?timeout=0.1", *scope)
        inspected = run_command_line("inspect", f"sqlite:///{db}?timeout=0.1", *scope)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert listed.returncode == 0 and _KEY in listed.stdout, listed.stderr
    assert inspected.returncode == 0 and f"{_KEY}  '1'" in inspected.stdout, inspected.stderr


def test_a_stopped_apps_file_is_read_and_left_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "traffik.db"
    _traffik_file(db)
    before = _state(tmp_path, db)
    scope = ("--namespace", "app", "--throttle", "api")
    listed = run_command_line("keys", f"sqlite:///{db}", *scope)
    inspected = run_command_line("inspect", f"sqlite:///{db}", *scope)
    assert listed.returncode == 0 and _KEY in listed.stdout, listed.stderr
    assert inspected.returncode == 0 and f"{_KEY}  '1'" in inspected.stdout, inspected.stderr
    assert _state(tmp_path, db) == before  # no -wal or -shm file left beside it


@pytest.mark.parametrize("app", ["stopped", "stopped, directory read-only", "running"])
def test_a_user_who_may_not_write_the_file_lists_and_inspects_it(tmp_path: Path, app: str) -> None:
    db = tmp_path / "traffik.db"
    _traffik_file(db)
    running = sqlite3.connect(db)  # the app: while it has the file open, -wal and -shm exist
    running.execute("SELECT count(*) FROM traffik_entries").fetchone()
    if app != "running":
        running.close()
    read_only = {
        "stopped": [db],
        "stopped, directory read-only": [db, tmp_path],
        "running": [db, Path(f"{db}-wal"), Path(f"{db}-shm"), tmp_path],
    }[app]
    files = sorted(os.listdir(tmp_path))
    scope = ("--namespace", "app", "--throttle", "api")
    try:
        with _read_only(*read_only):
            assert not _may_write(db), "file modes do not bind: the test would prove nothing"
            listed = _as_reader("keys", f"sqlite:///{db}", *scope)
            inspected = _as_reader("inspect", f"sqlite:///{db}", *scope)
    finally:
        running.close()
    assert listed.returncode == 0 and _KEY in listed.stdout, listed.stderr
    assert inspected.returncode == 0 and f"{_KEY}  '1'" in inspected.stdout, inspected.stderr
    if app != "running":
        assert sorted(os.listdir(tmp_path)) == files  # no -wal or -shm the app could not write


def test_a_table_of_traffiks_name_made_by_another_app_is_refused_not_misread(
    tmp_path: Path,
) -> None:
    db = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE traffik_entries (id INTEGER PRIMARY KEY, name TEXT)")
        conn.commit()
    before = _state(tmp_path, db)
    result = run_command_line("keys", f"sqlite:///{db}")
    assert result.returncode == 1 and "not made by Traffik" in result.stderr, result.stderr
    assert _state(tmp_path, db) == before
