"""Points 4 and 5: any identifier has a key on every backend, and identifiers that print alike
stay apart. A lone surrogate (`json.loads('"user-\\ud800"')`) counts like any client instead of
failing every request; `5` and `"5"`, `None` (the anonymous client) and `"None"`, `b"x"` and
`"b'x'"` are different clients. Through real throttles, with `on_error="raise"` so that a key a
store cannot take fails the test."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.memcached import MemcachedBackend
from traffik.backends.redis import RedisBackend
from traffik.backends.sqlite import SQLiteBackend
from traffik.exceptions import ConnectionThrottled
from traffik.strategies import FixedWindow, TokenBucket

pytestmark = pytest.mark.anyio

IDENTIFIERS: list[Any] = [
    json.loads('"user-\\ud800"'),
    "user-\udfff",
    "\ud800",
    5,
    "5",
    None,
    "None",
    b"x",
    "b'x'",
    "a:b",
    "a%3Ab",
    "{tag}",
    "sp ace\n",
    "✓" * 300,
    "k:" * 5_000,  # 10 KB, keyed by a digest: a short key on every store
    "k:" * 4_999 + "k;",  # differs from it in its last character only
    b"\xff" * 5_000,
]


@pytest.fixture(params=["memory", "sqlite", "redis", "memcached"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ThrottleBackend]:
    kind = request.param
    if kind == "memory":
        made: ThrottleBackend = InMemoryBackend(namespace="ids")
    elif kind == "sqlite":
        made = SQLiteBackend(f"sqlite:///{tmp_path / 'ids.db'}", namespace="ids")
    elif kind == "redis":
        made = RedisBackend(request.getfixturevalue("redis_server")().url, namespace="ids")
    else:
        made = MemcachedBackend(request.getfixturevalue("memcached_server")().url, namespace="ids")
    yield made
    await made.close()


def _request() -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    return Request({**scope, "client": ("10.0.0.1", 1234)})


@pytest.mark.parametrize("strategy", [FixedWindow(), TokenBucket()], ids=lambda s: type(s).__name__)
async def test_every_identifier_is_a_client_of_its_own(
    backend: ThrottleBackend, strategy: Any
) -> None:
    current: list[Any] = [None]
    throttle = HTTPThrottle(
        f"ids-{type(strategy).__name__}",
        "1/min",
        backend=backend,
        strategy=strategy,
        identifier=lambda connection: current[0],
        on_error="raise",
    )
    for ident in IDENTIFIERS:
        current[0] = ident
        await throttle.hit(_request())  # the first hit of each is admitted: no one shares its key
        with pytest.raises(ConnectionThrottled):
            await throttle.hit(_request())  # and counted: the second is refused
