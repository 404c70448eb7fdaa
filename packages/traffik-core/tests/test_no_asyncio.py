"""Traffik runs on asyncio. Under another event loop library (trio: Starlette and FastAPI
serve on it through anyio, and anyio's pytest plugin runs marked tests on it when it is
installed) there is no asyncio loop: a throttle there must say so, as a `ConfigurationError`,
not answer every request as an outage (`on_error`: a 429 for every client, with advice to
check the store).

The tests drive coroutines with no event loop at all, as trio runs them: from asyncio's
side the state is the same (no running loop)."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.sqlite import SQLiteBackend
from traffik.exceptions import ConfigurationError


def run_without_asyncio(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run `coroutine` to its end with no event loop: it must not suspend."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    finally:
        coroutine.close()
    raise AssertionError("the coroutine waited for an event loop")


def _request() -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/items",
            "headers": [],
            "query_string": b"",
            "client": ("203.0.113.7", 5000),
        }
    )


def _backends(tmp_path: Path) -> list[Any]:
    return [
        InMemoryBackend(namespace="no-loop", persistent=False),
        SQLiteBackend(str(tmp_path / "no-loop.db"), namespace="no-loop"),
    ]


def _says_asyncio(error: ConfigurationError) -> None:
    message = str(error)
    assert "asyncio" in message
    assert "trio" in message
    assert "anyio_backend" in message  # (what to pin in tests)


@pytest.mark.parametrize("on_error", ["throttle", "allow"])
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_hit_outside_asyncio_is_a_configuration_error(
    tmp_path: Path, store: str, on_error: str
) -> None:
    backend = _backends(tmp_path)[0 if store == "memory" else 1]
    throttle = HTTPThrottle("no-loop", rate="3/min", backend=backend, on_error=on_error)
    with pytest.raises(ConfigurationError) as caught:
        run_without_asyncio(throttle.hit(_request()))
    _says_asyncio(caught.value)
    assert repr(backend) in str(caught.value)


def test_initialize_outside_asyncio_is_a_configuration_error(tmp_path: Path) -> None:
    for backend in _backends(tmp_path):
        with pytest.raises(ConfigurationError) as caught:
            run_without_asyncio(backend.initialize())
        _says_asyncio(caught.value)


def test_reading_a_bucket_outside_asyncio_is_a_configuration_error(tmp_path: Path) -> None:
    backend = InMemoryBackend(namespace="no-loop", persistent=False)
    throttle = HTTPThrottle("no-loop", rate="3/min", backend=backend)
    with pytest.raises(ConfigurationError) as caught:
        run_without_asyncio(throttle.stat(_request()))
    _says_asyncio(caught.value)
