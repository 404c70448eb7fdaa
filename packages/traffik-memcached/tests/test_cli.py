"""`python -m traffik` against real memcached servers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from traffik.strategies import BUILTIN_STRATEGIES
from traffik.testing.command_line import check_command_line, run_command_line

pytestmark = pytest.mark.memcached


def test_keys_inspect_and_reset_on_memcached(memcached_url: str) -> None:
    check_command_line(memcached_url)


def test_keys_inspect_and_reset_on_two_nodes(memcached_cluster_url: str) -> None:
    check_command_line(memcached_cluster_url)


def test_an_unreachable_server_is_exit_status_1() -> None:
    result = run_command_line("keys", "memcached://127.0.0.1:1")
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr


async def _spend(url: str, namespace: str, name: str) -> tuple[Any, Any, Any]:
    import traffik.strategies as strategies
    from traffik.backends import from_url
    from traffik.throttles import HTTPThrottle

    backend = from_url(url, namespace=namespace)
    throttle = HTTPThrottle(
        "api", rate="3/min", backend=backend, per_route=False, strategy=getattr(strategies, name)()
    )
    request = _request("203.0.113.7")
    for _ in range(3):
        await throttle.hit(request)
    return backend, throttle, request


def _request(client: str) -> Any:
    from starlette.requests import Request

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": (client, 1)}
    return Request(scope)


@pytest.mark.parametrize("name", [cls.__name__ for cls in BUILTIN_STRATEGIES])
def test_reset_forgets_every_strategy_state(memcached_url: str, name: str) -> None:
    async def run() -> None:
        namespace = f"reset-{uuid.uuid4().hex[:8]}"
        backend, throttle, request = await _spend(memcached_url, namespace, name)
        try:
            assert (await throttle.stat(request)).hits_remaining == 0
            assert await throttle.reset(request) is True
            assert (await throttle.stat(request)).hits_remaining == 3
            await throttle.hit(request)  # spend again, for the command line
        finally:
            await backend.close()
        scope = ("--namespace", namespace, "--throttle", "api")
        listed = run_command_line("keys", memcached_url, *scope)
        assert "1 key(s)" in listed.stdout, listed.stdout + listed.stderr
        inspected = run_command_line("inspect", memcached_url, *scope)
        assert inspected.returncode == 0 and "Traceback" not in inspected.stderr
        assert "(no expiry)" not in inspected.stdout, inspected.stdout
        reset = run_command_line("reset", memcached_url, *scope)
        assert "removed 1 key(s)" in reset.stdout, reset.stdout + reset.stderr
        backend, throttle, request = await _spend(memcached_url, namespace, name)
        try:  # the budget is whole again: three hits spent it, not one
            assert (await throttle.stat(request)).hits_remaining == 0
            assert await throttle.reset(request) is True
        finally:
            await backend.close()

    asyncio.run(run())


def test_hashed_keys_are_said_to_be_unlisted(memcached_url: str) -> None:
    async def spend() -> str:
        namespace = f"hashed-{uuid.uuid4().hex[:8]}"
        _, _, _ = backend_and = await _spend(memcached_url, namespace, "FixedWindow")
        from traffik.throttles import HTTPThrottle

        backend = backend_and[0]
        # A key over memcached's 250 bytes (a long uid: a long identifier is keyed by a
        # digest), which the backend stores under a hash of it.
        long = HTTPThrottle("api" + "x" * 300, rate="3/min", backend=backend, per_route=False)
        await long.hit(_request("203.0.113.8"))
        await backend.close()
        return namespace

    namespace = asyncio.run(spend())
    listed = run_command_line("keys", memcached_url, "--namespace", namespace)
    assert "1 key(s)" in listed.stdout and "1 more key(s) may match" in listed.stdout, listed.stdout
