"""The command line against a real backend: written once, run by each backend's suite.

`check_command_line(url)` spends some budget through a throttle on the backend at `url`, then
runs `python -m traffik keys|inspect|reset` in a subprocess, as an operator would, and checks
what it lists and that a reset gives exactly one client a fresh budget. Needs Starlette.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import Any

__all__ = ["check_command_line", "run_command_line"]

_UID = "cli:api"


def run_command_line(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m traffik *args` in a subprocess, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "traffik", *args], capture_output=True, text=True, timeout=60
    )


def _request(client: str) -> Any:
    from starlette.requests import Request

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": (client, 1)}
    return Request(scope)


async def _hits(url: str, namespace: str, counts: dict[str, int]) -> list[bool]:
    """Hit the throttle `counts[client]` times per client; whether each last hit passed."""
    from traffik.backends import from_url
    from traffik.responses import is_throttled
    from traffik.throttles import HTTPThrottle

    backend = from_url(url, namespace=namespace)
    throttle = HTTPThrottle(
        _UID, rate="2/hour", backend=backend, per_route=False, skip_handler=True
    )
    passed = []
    try:
        for client, count in counts.items():
            request = _request(client)
            for _ in range(count):
                await throttle.hit(request)
            passed.append(not is_throttled(request))
    finally:
        await backend.close()
    return passed


def check_command_line(url: str) -> None:
    """Spend budget on `url`, list, inspect and reset one client with `python -m traffik`."""
    namespace = f"cli-{uuid.uuid4().hex[:8]}"
    assert asyncio.run(_hits(url, namespace, {"203.0.113.7": 3, "198.51.100.2": 1})) == [
        False,
        True,
    ]
    listed = run_command_line("keys", url, "--namespace", namespace)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("cli%3Aapi:{") == 2 and "2 key(s)" in listed.stdout
    scope = ("--namespace", namespace, "--throttle", _UID, "--client", "203.0.113.7")
    inspected = run_command_line("inspect", url, *scope)
    assert inspected.returncode == 0, inspected.stderr
    assert "{203.0.113.7}" in inspected.stdout and "1 key(s)" in inspected.stdout
    assert "198.51.100.2" not in inspected.stdout
    reset = run_command_line("reset", url, *scope)
    assert reset.returncode == 0 and "removed 1 key(s)" in reset.stdout, reset.stdout + reset.stderr
    # the reset client has a fresh budget; the other keeps what it spent
    assert asyncio.run(_hits(url, namespace, {"203.0.113.7": 2, "198.51.100.2": 2})) == [
        True,
        False,
    ]
    usage = run_command_line("reset", url)
    assert usage.returncode == 2 and "--throttle" in usage.stderr
