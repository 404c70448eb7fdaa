"""`python -m traffik` against real memcached servers."""

from __future__ import annotations

import pytest

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
