"""`reset()` moves one namespace to a new generation: other namespaces keep their keys, other processes follow."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import aiomcache
import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.backends.memcached import _backend as memcached_backend
from traffik.backends.memcached import _node as memcached_node
from traffik.backends.memcached import _window_counter as memcached_window_counter
from traffik.rates import Rate
from traffik.strategies import FixedWindow, TokenBucket

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]


def _namespace(name: str) -> str:
    return f"{name}-{time.time_ns()}"


async def test_reset_leaves_other_namespaces_alone(memcached_url: str) -> None:
    mine = MemcachedBackend(memcached_url, namespace=_namespace("mine"))
    theirs = MemcachedBackend(memcached_url, namespace=_namespace("theirs"))
    rate = Rate.parse("1/hour")
    try:
        for backend in (mine, theirs):
            await backend.set(backend.get_key("k"), "v")
            await backend.set("raw", "r")
            assert (await TokenBucket().decide("u", rate, backend, 1)).allowed
            assert (await FixedWindow().decide("u", rate, backend, 1)).allowed
        await mine.reset()
        assert await mine.get(mine.get_key("k")) is None
        assert await mine.get("raw") is None
        assert (await TokenBucket().decide("u", rate, mine, 1)).allowed
        assert (await FixedWindow().decide("u", rate, mine, 1)).allowed
        assert await theirs.get(theirs.get_key("k")) == "v"
        assert await theirs.get("raw") == "r"
        assert not (await TokenBucket().decide("u", rate, theirs, 1)).allowed
        assert not (await FixedWindow().decide("u", rate, theirs, 1)).allowed
    finally:
        for backend in (mine, theirs):
            await backend.reset()
            await backend.close()


class _Monotonic:
    """A `time.monotonic` that moves only when told: the generation cache's clock."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


async def test_another_instance_sees_the_reset_within_generation_refresh(
    memcached_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a clock of its own (a real one would let a slow machine stretch `refresh` past the
    default of 1 s, and a b ignoring `generation_refresh` would pass): b sees a's reset once
    `refresh` has passed since it read the generation."""
    monotonic = _Monotonic()
    monkeypatch.setattr(memcached_backend, "monotonic", monotonic)
    monkeypatch.setattr(memcached_window_counter, "monotonic", monotonic)
    monkeypatch.setattr(
        memcached_node, "time", SimpleNamespace(monotonic=monotonic, time=time.time)
    )
    namespace = _namespace("shared")
    refresh = 0.3
    a = MemcachedBackend(memcached_url, namespace=namespace, generation_refresh=refresh)
    b = MemcachedBackend(memcached_url, namespace=namespace, generation_refresh=refresh)
    rate = Rate.parse("1/hour")
    try:
        assert (await FixedWindow().decide("u", rate, a, 1)).allowed
        assert not (await FixedWindow().decide("u", rate, b, 1)).allowed, (
            "a and b share the counter"
        )
        await a.reset()
        assert (await FixedWindow().decide("u", rate, a, 1)).allowed
        monotonic.now += refresh  # b read the generation `refresh` ago: its cache is over
        assert not (await FixedWindow().decide("u", rate, b, 1)).allowed, (
            "b still counts in the old generation"
        )
        # a's hit after the reset and b's rejected one, both in the new generation
        assert await b.get(b.get_key("u") + ":fw") == "2"
    finally:
        await a.reset()
        await a.close()
        await b.close()


async def test_a_lost_generation_key_never_brings_cleared_keys_back(memcached_url: str) -> None:
    namespace = _namespace("evicted")
    backend = MemcachedBackend(memcached_url, namespace=namespace, generation_refresh=0)
    raw = aiomcache.Client("127.0.0.1", int(memcached_url.rsplit(":", 1)[1]))
    try:
        await backend.set("k", "old")
        await backend.reset()
        assert await backend.get("k") is None
        await raw.delete(f"{namespace}:__gen__".encode())  # as if memcached had evicted it
        await asyncio.sleep(0.01)
        assert await backend.get("k") is None
        await backend.set("k", "new")
        assert await backend.get("k") == "new"
    finally:
        await raw.close()
        await backend.reset()
        await backend.close()
