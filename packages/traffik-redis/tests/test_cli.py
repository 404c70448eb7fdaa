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
