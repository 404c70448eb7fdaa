"""The log line of a SQLite failure says what to check on a file, not on a network store."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI

from traffik import HTTPThrottle
from traffik.backends.sqlite import SQLiteBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_sqlite_failure_asks_to_check_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = SQLiteBackend(tmp_path / "missing" / "traffik.db")
    throttle = HTTPThrottle("items", rate="3/min", backend=backend)
    app = FastAPI()
    app.add_api_route("/items", lambda: [], dependencies=[Depends(throttle)])
    caplog.set_level(logging.WARNING, logger="traffik")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/items")).status_code == 429
    [line] = [r.getMessage() for r in caplog.records if "could not decide" in r.getMessage()]
    assert "its path and directory" in line and "the network" not in line, line
