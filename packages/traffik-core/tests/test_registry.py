"""`ThrottleRegistry`: uids, rules attached to them, switching throttles off and on (spec: integration.md §9.5)."""

from __future__ import annotations

import gc
import threading
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from traffik import HTTPThrottle, InMemoryBackend
from traffik.exceptions import ConfigurationError
from traffik.registry import GLOBAL_REGISTRY, Bypass, Rule, ThrottleRegistry

pytestmark = pytest.mark.anyio


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def app_with(*throttles: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.api_route(
        "/{path:path}", methods=["GET", "POST"], dependencies=[Depends(t) for t in throttles]
    )
    async def anything(path: str) -> dict[str, str]:
        return {"path": path}

    return app


async def statuses(http: httpx.AsyncClient, path: str, n: int, method: str = "GET") -> list[int]:
    return [(await http.request(method, path)).status_code for _ in range(n)]


class CountingRegistry(ThrottleRegistry):
    """A registry that counts how often throttles read rules from it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get_rules(self, uid: str) -> list[Any]:
        self.reads += 1
        return super().get_rules(uid)


def test_register_and_look_up() -> None:
    registry = ThrottleRegistry()
    throttle = HTTPThrottle("reg:a", rate="1/min", registry=registry)
    registry.register("reg:bare")
    assert registry.exists("reg:a") and registry.exist("reg:bare") and "reg:a" in registry
    assert (registry.count(), len(registry)) == (2, 2)
    assert registry.get_throttle("reg:a") is throttle and registry.get_throttle("reg:bare") is None
    registry.unregister("reg:a")
    registry.unregister("reg:never")  # no error
    assert not registry.exists("reg:a") and registry.get_throttle("reg:a") is None
    registry.clear()
    assert len(registry) == 0


async def test_a_uid_built_again_replaces_the_registration_and_shares_counters() -> None:
    backend = InMemoryBackend()
    first = HTTPThrottle("reg:shared", rate="2/min", backend=backend)
    second = HTTPThrottle("reg:shared", rate="2/min", backend=backend)  # no ConfigurationError
    assert GLOBAL_REGISTRY.get_throttle("reg:shared") is second
    async with client(app_with(first)) as http:
        assert await statuses(http, "/items", 1) == [200]
    async with client(app_with(second)) as http:
        assert await statuses(http, "/items", 2) == [200, 429]


async def test_registering_again_forgets_the_old_rules() -> None:
    registry = ThrottleRegistry()
    first = HTTPThrottle("reg:rules", rate="1/min", registry=registry)
    registry.add_rules("reg:rules", Bypass(path="/health"))
    assert registry.get_rules("reg:rules") == [Bypass(path="/health")] and first
    again = HTTPThrottle("reg:rules", rate="1/min", registry=registry, backend=InMemoryBackend())
    assert registry.get_rules("reg:rules") == []
    async with client(app_with(again)) as http:
        assert await statuses(http, "/health", 2) == [200, 429]


def test_a_strict_registry_refuses_a_live_uid() -> None:
    registry = ThrottleRegistry(strict=True)
    first = HTTPThrottle("reg:strict", rate="1/min", registry=registry)
    with pytest.raises(ConfigurationError, match="'reg:strict' must be unique"):
        HTTPThrottle("reg:strict", rate="1/min", registry=registry)
    assert registry.get_throttle("reg:strict") is first
    del first
    gc.collect()
    assert HTTPThrottle("reg:strict", rate="1/min", registry=registry) is not None


def test_a_throttle_registers_only_once_built() -> None:
    registry = ThrottleRegistry()
    with pytest.raises(ConfigurationError, match="on_error='ignore'"):
        HTTPThrottle("reg:invalid", rate="1/min", on_error="ignore", registry=registry)
    assert not registry.exists("reg:invalid")
    assert HTTPThrottle("reg:invalid", rate="1/min", registry=registry) is not None
    with pytest.raises(ConfigurationError, match="not a ThrottleRegistry"):
        HTTPThrottle("reg:other", rate="1/min", registry={})  # type: ignore[arg-type]


def test_a_collected_throttle_is_unregistered_but_not_its_successor() -> None:
    registry = ThrottleRegistry()
    HTTPThrottle("reg:gone", rate="1/min", registry=registry)
    gc.collect()
    assert not registry.exists("reg:gone")
    old = HTTPThrottle("reg:next", rate="1/min", registry=registry)
    new = HTTPThrottle("reg:next", rate="1/min", registry=registry)
    del old
    gc.collect()
    assert registry.get_throttle("reg:next") is new


async def test_rules_added_later_apply_from_the_next_hit() -> None:
    registry = ThrottleRegistry()
    throttle = HTTPThrottle("reg:later", rate="2/min", backend=InMemoryBackend(), registry=registry)
    other = HTTPThrottle("reg:other", rate="2/min", backend=InMemoryBackend(), registry=registry)
    async with client(app_with(throttle)) as http:
        assert await statuses(http, "/internal", 1) == [200]
        other.add_rules("reg:later", Bypass(path="/internal"), Rule(methods="GET"))
        assert await statuses(http, "/internal", 3) == [200] * 3
        assert await statuses(http, "/items", 3, method="POST") == [200] * 3  # only GET counts
        # One route (`/{path:path}`): the first GET spent a unit of the same budget.
        assert await statuses(http, "/items", 2) == [200, 429]
    assert set(registry.get_rules("reg:later")) == {Bypass(path="/internal"), Rule(methods="GET")}


def test_add_rules_needs_a_registered_uid() -> None:
    registry = ThrottleRegistry()
    registry.add_rules("reg:nobody")  # no rules: nothing to do
    with pytest.raises(ConfigurationError, match="No throttle registered with UID 'reg:nobody'"):
        registry.add_rules("reg:nobody", Bypass(path="/"))
    HTTPThrottle("reg:some", rate="1/min", registry=registry)
    with pytest.raises(ConfigurationError, match="not a Rule or a Bypass"):
        registry.add_rules("reg:some", "/health")  # type: ignore[arg-type]
    copy = registry.get_rules("reg:some")
    copy.append(Bypass())
    assert registry.get_rules("reg:some") == []


async def test_a_throttle_without_rules_never_reads_them() -> None:
    registry = CountingRegistry()
    throttle = HTTPThrottle(
        "reg:plain", rate="100/min", backend=InMemoryBackend(), registry=registry
    )
    built = registry.reads
    async with client(app_with(throttle)) as http:
        assert await statuses(http, "/", 5) == [200] * 5
    assert registry.reads == built


async def test_dynamic_rules_read_the_registry_on_every_hit() -> None:
    registry = CountingRegistry()
    throttle = HTTPThrottle(
        "reg:dynamic",
        rate="100/min",
        backend=InMemoryBackend(),
        registry=registry,
        dynamic_rules=True,
    )
    built = registry.reads
    async with client(app_with(throttle)) as http:
        assert await statuses(http, "/", 3) == [200] * 3
    assert registry.reads == built + 3


async def test_disable_and_enable_through_the_registry() -> None:
    registry = ThrottleRegistry()
    backend = InMemoryBackend()
    first = HTTPThrottle("reg:one", rate="1/min", backend=backend, registry=registry)
    second = HTTPThrottle("reg:two", rate="1/min", backend=backend, registry=registry)
    registry.register("reg:empty")
    assert await registry.disable("reg:one") and first.is_disabled
    assert not await registry.disable("reg:empty") and not await registry.enable("reg:missing")
    async with client(app_with(first, second)) as http:
        await registry.disable_all()
        assert await statuses(http, "/", 3) == [200] * 3
        await registry.enable_all()
        assert not first.is_disabled and not second.is_disabled
        assert await statuses(http, "/", 2) == [200, 429]
        assert await registry.enable("reg:one")


def test_registering_from_threads() -> None:
    registry = ThrottleRegistry()
    kept: list[HTTPThrottle] = []

    def build(n: int) -> None:
        for i in range(50):
            kept.append(HTTPThrottle(f"reg:thread:{n}:{i}", rate="1/min", registry=registry))

    threads = [threading.Thread(target=build, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(registry) == 200 and all(registry.get_throttle(t.uid) is t for t in kept)
