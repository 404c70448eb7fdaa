"""Decisions use the Redis server's clock, so app hosts whose clocks disagree still agree.

Two backends stand for two app hosts whose clocks are ten minutes apart: each is built
while `traffik.backends.base.system_clock` (the host clock a backend reads when given no
`clock=`) is patched to a skewed wall clock, so `backend.clock` really is skewed. With
`clock=None` the scripts read `TIME` on the server, and the interleaved decisions of the
two hosts are exactly those one host alone would make. The control runs the same hits
with the skewed clocks passed as `clock=`: then the skew does change decisions, which
shows the test would catch a backend that used the host's clock.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import traffik.backends.base
from traffik.backends.redis import RedisBackend
from traffik.decision import Decision
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, Strategy

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

SKEW = 600.0
RATE = Rate.parse("4/5min")
SCRIPTED = [cls() for cls in BUILTIN_STRATEGIES if cls is not FixedWindow]


def _host(redis_url: str, namespace: str, offset: float, monkeypatch: Any) -> RedisBackend:
    with monkeypatch.context() as patch:
        patch.setattr(traffik.backends.base, "system_clock", lambda: time.time() + offset)
        backend = RedisBackend(redis_url, namespace=namespace)
    assert abs(backend.clock() - time.time() - offset) < 5
    return backend


async def _interleave(hosts: list[RedisBackend], strategy: Strategy) -> list[Decision]:
    return [await strategy.decide("user", RATE, hosts[i % 2], 1) for i in range(6)]


@pytest.mark.parametrize("strategy", [cls() for cls in BUILTIN_STRATEGIES], ids=repr)
async def test_skewed_hosts_agree(redis_url: str, monkeypatch: Any, strategy: Strategy) -> None:
    behind = _host(redis_url, "skew", 0.0, monkeypatch)
    ahead = _host(redis_url, "skew", SKEW, monkeypatch)
    alone = RedisBackend(redis_url, namespace="skew-alone")
    try:
        together = await _interleave([behind, ahead], strategy)
        single = await _interleave([alone, alone], strategy)
        assert [d.allowed for d in together] == [True] * 4 + [False] * 2
        assert [d.allowed for d in together] == [d.allowed for d in single]
        assert [d.remaining for d in together] == [d.remaining for d in single]
        for mine, reference in zip(together, single):
            # Server time moves on between the two runs, by far less than a second.
            assert abs(mine.wait_ms - reference.wait_ms) < 1_000
            assert abs(mine.reset_ms - reference.reset_ms) < 1_000
    finally:
        for backend in (behind, ahead, alone):
            await backend.reset()
            await backend.close()


@pytest.mark.parametrize("strategy", SCRIPTED, ids=repr)
async def test_host_clocks_would_disagree(redis_url: str, strategy: Strategy) -> None:
    now = time.time()
    behind = RedisBackend(redis_url, namespace="skew-control", clock=lambda: now)
    ahead = RedisBackend(redis_url, namespace="skew-control", clock=lambda: now + SKEW)
    try:
        decisions = await _interleave([behind, ahead], strategy)
        assert [d.allowed for d in decisions] != [True] * 4 + [False] * 2
    finally:
        await behind.reset()
        await behind.close()
        await ahead.close()
