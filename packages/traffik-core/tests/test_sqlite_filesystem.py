"""`SQLiteBackend` when the filesystem misbehaves under a running app: a full disk, the file deleted or replaced, its directory gone.

Each test drives a FastAPI app whose throttles store in the file, as an operator sees it:
what the clients get, what the error says, and that decisions resume once it is fixed,
without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI

from traffik import HTTPThrottle
from traffik.backends.sqlite import SQLiteBackend
from traffik.backends.sqlite._handle import CHECK_EVERY
from traffik.exceptions import BackendConnectionError, BackendError

pytestmark = pytest.mark.anyio


def app_with(*throttles: HTTPThrottle) -> FastAPI:
    """An app with a route per throttle, named after its uid (`/closed`, `/allow`)."""
    app = FastAPI()
    for throttle in throttles:
        app.add_api_route(f"/{throttle.uid}", _ok, dependencies=[Depends(throttle)])
    return app


async def _ok() -> dict[str, bool]:
    return {"ok": True}


@contextlib.asynccontextmanager
async def serving(
    *throttles: HTTPThrottle, client: str = "10.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(
        app=app_with(*throttles), raise_app_exceptions=False, client=(client, 1234)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def statuses(http: httpx.AsyncClient, path: str, n: int) -> list[int]:
    return [(await http.get(path)).status_code for _ in range(n)]


def keys(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [key for (key,) in conn.execute("SELECT key FROM traffik_entries ORDER BY key")]


# -- the file deleted or replaced while workers run ------------------------------------------


def _delete(db: Path, tmp_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):  # as `rm traffik.db*` does
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{db}{suffix}")


def _replace(db: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"  # a file made elsewhere (a restored backup), moved in
    with contextlib.closing(sqlite3.connect(fresh)) as conn:
        conn.execute("CREATE TABLE unrelated (x)")
        conn.commit()
    _delete(db, tmp_path)
    os.replace(fresh, db)


@pytest.mark.parametrize("change", [_delete, _replace], ids=["deleted", "replaced"])
async def test_a_worker_moves_to_the_new_file_within_a_second(tmp_path: Path, change) -> None:
    db = tmp_path / "traffik.db"
    running = SQLiteBackend(db)  # a worker that opened the file before it changed
    old = HTTPThrottle("items", rate="2/min", backend=running)
    async with serving(old) as http:
        assert await statuses(http, "/items", 1) == [200]
        change(db, tmp_path)
        started = SQLiteBackend(db)  # a worker started after: a new file
        new = HTTPThrottle("items", rate="2/min", backend=started)
        async with serving(new) as fresh:
            assert await statuses(fresh, "/items", 2) == [200, 200]
        await asyncio.sleep(CHECK_EVERY + 0.2)
        # The running worker counts in the same file as the new one: the budget is spent.
        assert await statuses(http, "/items", 1) == [429]
    assert len(keys(db)) == 1
    await running.close()
    await started.close()


async def test_a_directory_removed_under_a_running_app_is_an_error_then_recovers(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    db = folder / "traffik.db"
    backend = SQLiteBackend(db, timeout=0.2)
    closed = HTTPThrottle("closed", rate="100/min", backend=backend)
    allow = HTTPThrottle("allow", rate="100/min", backend=backend, on_error="allow")
    async with serving(closed, allow) as http:
        assert await statuses(http, "/closed", 1) == [200]
        shutil.rmtree(folder)
        await asyncio.sleep(CHECK_EVERY + 0.2)
        with pytest.raises(BackendConnectionError) as caught:
            await backend.get("k")
        message = str(caught.value)
        assert f"{str(db)!r}" in message and "directory exists" in message, message
        assert await statuses(http, "/closed", 1) == [429]  # on_error="throttle"
        assert await statuses(http, "/allow", 1) == [200]  # on_error="allow"
        folder.mkdir()  # the operator puts it back
        assert await statuses(http, "/closed", 2) == [200, 200]
    assert len(keys(db)) == 1
    await backend.close()


# -- a full disk -------------------------------------------------------------------------


def _limit_pages(backend: SQLiteBackend, pages: int | None) -> None:
    """Fault injection: the backend's connection may not grow the file past `pages` (the
    current size when None): SQLite then answers SQLITE_FULL, as on a full disk."""
    conn = backend._db._handle().cursor.connection  # type: ignore[union-attr]
    if pages is None:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")


async def test_a_full_disk_follows_on_error_names_the_file_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "traffik.db"
    backend = SQLiteBackend(db)
    closed = HTTPThrottle("closed", rate="1000/min", backend=backend)
    allow = HTTPThrottle("allow", rate="1000/min", backend=backend, on_error="allow")
    raising = HTTPThrottle("raise", rate="1000/min", backend=backend, on_error="raise")
    async with serving(closed, allow, raising) as known:
        assert await statuses(known, "/closed", 1) == [200]
        _limit_pages(backend, None)
        refused: list[int] = []
        for n in range(400):  # new clients until a new row needs a new page
            async with serving(closed, client=f"10.1.{n // 200}.{n % 200}") as new:
                status = (await new.get("/closed")).status_code
            if status != 200:
                refused.append(status)
                break
        assert refused == [429], "a new client on a full disk gets on_error='throttle'"
        with pytest.raises(BackendError) as caught:
            for n in range(400):
                await backend.increment_with_ttl(f"new-{n}", 1, 60)
        message = str(caught.value)
        assert f"{str(db)!r}" in message and "disk is full" in message, message
        assert await statuses(known, "/closed", 3) == [200] * 3, "a known client still counts"
        async with serving(allow, raising, client="10.9.9.9") as stranger:
            assert await statuses(stranger, "/allow", 1) == [200]
            assert await statuses(stranger, "/raise", 1) == [500]  # only on_error="raise"
        _limit_pages(backend, 1_000_000)  # space is back
        async with serving(closed, client="10.9.9.9") as stranger:
            assert await statuses(stranger, "/closed", 1) == [200]
    await backend.close()


def test_an_io_error_names_the_file_and_the_leftover_log() -> None:
    from traffik.backends.sqlite._errors import translate

    error = translate(sqlite3.OperationalError("disk I/O error"), "/srv/traffik.db", "counting")
    message = str(error)
    assert "'/srv/traffik.db'" in message and "disk I/O error" in message, message
    assert "-wal and -shm" in message and "every worker stopped" in message, message
