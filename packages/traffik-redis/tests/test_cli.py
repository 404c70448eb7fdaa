"""`python -m traffik` against a real Redis server and a Redis Cluster."""

from __future__ import annotations

import pytest

from traffik.testing.command_line import check_command_line, run_command_line

pytestmark = pytest.mark.redis


def test_keys_inspect_and_reset_on_redis(redis_url: str) -> None:
    check_command_line(redis_url)


def test_keys_inspect_and_reset_on_a_cluster(redis_cluster_url: str) -> None:
    check_command_line(redis_cluster_url)


def test_an_unreachable_server_is_exit_status_1() -> None:
    result = run_command_line("keys", "redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["SlidingWindowCounter", "TokenBucket", "GCRA", "LeakyBucket"])
def test_inspect_shows_packed_state_as_numbers(redis_url: str, name: str) -> None:
    import asyncio
    import uuid

    import traffik.strategies as strategies
    from traffik.backends import from_url
    from traffik.throttles import HTTPThrottle

    namespace = f"inspect-{uuid.uuid4().hex[:8]}"

    async def spend() -> None:
        from starlette.requests import Request

        backend = from_url(redis_url, namespace=namespace)
        throttle = HTTPThrottle(
            "api", rate="3/min", backend=backend, strategy=getattr(strategies, name)()
        )
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("h", 1)}
        try:
            await throttle.hit(Request(scope))
        finally:
            await backend.close()

    asyncio.run(spend())
    result = run_command_line("inspect", redis_url, "--namespace", namespace, "--throttle", "api")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "1 key(s)" in result.stdout and "'" in result.stdout
    value = result.stdout.split("'")[1]
    assert value and all(part.lstrip("-").isdigit() for part in value.split(",")), result.stdout
