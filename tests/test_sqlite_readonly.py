"""An app whose SQLite file it may not write, or that is no database, at start: an outage it starts through, or a bad setting that stops it.

A read-only file or directory is an outage, as a missing directory is: the app starts (unless
`fail_fast`), requests get their `on_error` answer, and counting resumes once the file may be
written. File modes do not bind root, so as root (CI) each scenario runs in a child process
without the capabilities that let root ignore them, and first checks that they bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from traffik import HTTPThrottle
from traffik.backends.sqlite import SQLiteBackend
from traffik.exceptions import BackendConnectionError, BackendError

pytestmark = pytest.mark.anyio

_TARGETS = ("file", "directory", "-wal and -shm files")
"""What each scenario makes read-only."""


def _unprivileged(argv: list[str]) -> list[str]:
    """`argv` run so that file modes bind: as root, without the capabilities that bypass them."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *argv]


def _in_child(target: str, folder: Path) -> Any:
    """`_start_read_only` in a child process whose file modes bind; what it found."""
    argv = [sys.executable, __file__, target, str(folder)]
    done = subprocess.run(_unprivileged(argv), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _may_write(path: Path) -> bool:
    """Whether this process may write the file `path`, or create a file in the directory."""
    try:
        if path.is_dir():
            (path / "probe").touch()
            (path / "probe").unlink()
        else:
            os.close(os.open(path, os.O_WRONLY))
    except PermissionError:
        return False
    return True


def _app(backend: SQLiteBackend) -> FastAPI:
    throttle = HTTPThrottle("items", rate="2/min", backend=backend)
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/items", dependencies=[Depends(throttle)])
    async def items() -> list[int]:
        return []

    return app


async def _start_read_only(folder: Path, target: str) -> dict[str, Any]:
    """The child's side: an app started on a file whose `target` is read-only, then made
    writable again; and one started with `fail_fast` on it."""
    path = folder / "traffik.db"
    earlier = SQLiteBackend(path)  # an earlier run made the file
    await earlier.initialize()
    await earlier.close()
    if target == "-wal and -shm files":  # left behind by a reader, which cannot delete them
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as reader:
            reader.execute("SELECT count(*) FROM traffik_entries").fetchone()
    locked = {
        "file": [path],
        "directory": [folder],
        "-wal and -shm files": [Path(f"{path}-wal"), Path(f"{path}-shm")],
    }[target]
    modes = {each: each.stat().st_mode for each in locked}
    for each in locked:
        each.chmod(0o555 if each.is_dir() else 0o444)
    seen: dict[str, Any] = {"binds": not any(_may_write(each) for each in locked)}
    try:
        async with SQLiteBackend(path, fail_fast=True).lifespan(None):
            seen["fail_fast"] = "started"
    except BackendError as exc:
        seen["fail_fast"] = [type(exc).__name__, str(exc)]
    app = _app(SQLiteBackend(path))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        seen["read-only"] = (await http.get("/items")).status_code
        for each, mode in modes.items():
            each.chmod(mode)
        seen["writable"] = [(await http.get("/items")).status_code for _ in range(3)]
    return seen


@pytest.mark.parametrize("target", _TARGETS)
def test_a_read_only_file_or_directory_at_start_is_an_outage(tmp_path: Path, target: str) -> None:
    seen = _in_child(target, tmp_path)
    assert seen["binds"], "file modes do not bind the child: the test would prove nothing"
    kind, message = seen["fail_fast"]
    assert kind == "BackendConnectionError", message  # fail_fast refuses to start
    assert repr(str(tmp_path / "traffik.db")) in message and "read-only" in message, message
    assert seen["read-only"] == 429  # started without fail_fast: on_error answers
    assert seen["writable"] == [200, 200, 429]  # counting resumes, no restart


async def test_a_corrupt_file_at_start_is_a_bad_setting_that_stops_the_app(
    tmp_path: Path,
) -> None:
    # Not an outage: something that is no Traffik store sits at the path, as when another
    # server answers at a Redis URL. It fails the start, `fail_fast` or not, naming the path.
    path = tmp_path / "traffik.db"
    path.write_bytes(b"not a database" * 100)
    app = _app(SQLiteBackend(path))
    with pytest.raises(BackendError, match="corrupt or not a database") as caught:
        async with app.router.lifespan_context(app):
            pass
    assert not isinstance(caught.value, BackendConnectionError)
    assert repr(str(path)) in str(caught.value)


if __name__ == "__main__":  # a scenario's child process (`_in_child`)
    print(json.dumps(asyncio.run(_start_read_only(Path(sys.argv[2]), sys.argv[1]))))
