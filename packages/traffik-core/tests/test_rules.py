"""`Rule` and `Bypass`: which connections a throttle counts (spec: integration.md §9.7, §1.7)."""

from __future__ import annotations

import copy
import logging
import pickle
import re
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.websockets import WebSocket

from traffik import HTTPThrottle, InMemoryBackend
from traffik.exceptions import BackendError, ConfigurationError, ConnectionThrottled
from traffik.registry import (
    Bypass,
    BypassThrottleRule,
    Rule,
    ThrottleRegistry,
    ThrottleRule,
    bypass_if,
    throttle_if,
)
from traffik.rules import glob, sort_rules
from traffik.testing import FailingBackend

pytestmark = pytest.mark.anyio


def request(method: str = "GET", path: str = "/", **headers: str) -> Request:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": method, "path": path, "headers": raw})


def websocket(path: str = "/ws") -> WebSocket:
    async def never() -> Any:
        raise AssertionError("not used")

    return WebSocket({"type": "websocket", "path": path, "headers": []}, never, never)


def is_internal(connection: Any) -> bool:
    return connection.headers.get("x-internal") == "yes"


async def tier_is(connection: Any, context: Any) -> bool:
    return bool(connection.headers.get("x-tier", context.get("tier")) == "free")


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def app_with(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "OPTIONS"])
    async def anything(path: str, request: Request = Depends(throttle)) -> dict[str, str]:
        return {"path": path}

    return app


async def statuses(
    http: httpx.AsyncClient, path: str, n: int, method: str = "GET", **kw: Any
) -> list[int]:
    return [(await http.request(method, path, **kw)).status_code for _ in range(n)]


# -- matching ------------------------------------------------------------------------------


async def test_a_rule_applies_to_what_it_matches_a_bypass_to_the_rest() -> None:
    rule, bypass = Rule(path="/api/", methods="post"), Bypass(path="/api/", methods="post")
    for connection, matches in [
        (request("POST", "/api/items"), True),
        (request("post", "/api/items"), True),
        (request("GET", "/api/items"), False),
        (request("POST", "/other"), False),
    ]:
        assert await rule.check(connection) is matches
        assert await bypass.check(connection) is not matches
        assert await rule(connection) is matches  # calling is `check`
    assert rule.methods == frozenset({"POST", "post"})


async def test_a_rule_for_get_matches_head_as_starlette_routes_do() -> None:
    # HEAD runs the GET endpoint: a rule or bypass for GET covers it, one for POST does not.
    for method in ("HEAD", "head"):
        assert await Rule(methods="GET").check(request(method))
        assert not await Bypass(methods=["get"]).check(request(method))
        assert not await Rule(methods="POST").check(request(method))
    assert await Rule(methods="HEAD").check(request("HEAD"))
    assert not await Rule(methods="HEAD").check(request("GET"))
    assert Rule(methods="GET").methods == frozenset({"GET", "get"})


async def test_methods_are_ignored_for_websockets() -> None:
    assert await Rule(path="/ws", methods=["GET"]).check(websocket())
    assert not await Bypass(methods="GET").check(websocket("/other"))


async def test_predicates_sync_or_async_with_or_without_context() -> None:
    assert await Rule(predicate=is_internal).check(request(x_internal="yes"))
    assert not await Rule(predicate=is_internal).check(request())
    assert await Rule(predicate=tier_is).check(request(), context={"tier": "free"})
    assert not await Rule(predicate=tier_is).check(request(x_tier="paid"), context={"tier": "free"})
    assert await Bypass(path="/health", predicate=is_internal).check(request(path="/health"))


async def test_compiled_patterns_and_globs() -> None:
    assert await Rule(path=re.compile(r"/users/\d+$")).check(request(path="/users/12"))
    assert not await Rule(path=re.compile(r"/users/\d+$")).check(request(path="/users/12/x"))
    assert await Rule(path=glob("/files/*.txt")).check(request(path="/files/a.txt"))
    assert not await Rule(path=glob("/files/*.txt")).check(request(path="/files/a/b.txt"))
    with pytest.raises(ConfigurationError, match="glob"):
        glob("")


def test_helpers_and_deprecated_names() -> None:
    assert throttle_if(path="/a") == Rule(path="/a")
    assert bypass_if(methods="GET") == Bypass(methods="GET")
    with pytest.warns(DeprecationWarning, match="use Rule"):
        assert isinstance(ThrottleRule(path="/a"), Rule)
    with pytest.warns(DeprecationWarning, match="use Bypass"):
        legacy = BypassThrottleRule(path="/a")
    assert isinstance(legacy, Bypass)


async def test_bypass_throttle_rule_bypasses() -> None:
    # traffik 1.2 made it a Rule by mistake, so it gated instead of letting through.
    with pytest.warns(DeprecationWarning):
        legacy = BypassThrottleRule(path="/health")
    assert not await legacy.check(request(path="/health"))
    assert await legacy.check(request(path="/items"))


def test_rules_are_immutable_and_hashed_by_value() -> None:
    rule = Rule(path="/a", methods=["GET", "post"], predicate=is_internal)
    with pytest.raises(AttributeError, match="immutable"):
        rule.path = "/b"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del rule.methods
    twin = Rule(path="/a", methods=["post", "GET"], predicate=is_internal)
    assert rule == twin and hash(rule) == hash(twin) and len({rule, twin}) == 1
    assert Rule(path="/a") != Bypass(path="/a")
    assert Rule(predicate=lambda c: True) != Rule(predicate=lambda c: True)  # by identity
    assert pickle.loads(pickle.dumps(rule)) == rule and copy.copy(rule) == rule


def test_evaluation_order() -> None:
    rules = [
        Rule(predicate=is_internal),
        Bypass(predicate=is_internal),
        Rule(path="/a"),
        Bypass(path="/b"),
        Rule(path="/a"),  # a duplicate
    ]
    assert sort_rules(rules) == (
        Bypass(path="/b"),
        Rule(path="/a"),
        Bypass(predicate=is_internal),
        Rule(predicate=is_internal),
    )


def test_bad_rules_fail_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="not a Rule or a Bypass"):
        HTTPThrottle("rules:bad", rate="1/min", rules=["/health"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="not callable"):
        Bypass(predicate="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["GET POST", "GET,POST", "", "/items"])
def test_a_method_that_is_no_http_token_fails_at_construction(name: str) -> None:
    """A request's method is one HTTP token, so such a name could never match: it was
    accepted. A method of the app's own stays allowed (a mounted app's PROPFIND)."""
    for build in (lambda: Rule(methods=[name]), lambda: Bypass(methods=name)):
        with pytest.raises(ConfigurationError) as caught:
            build()
        message = str(caught.value)
        assert f"{name!r} is not an HTTP method name" in message
        assert "GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE" in message
        assert "['GET', 'POST']" in message
    assert Rule(methods=["propfind", "PURGE"]).methods == frozenset(
        {"PROPFIND", "propfind", "PURGE", "purge"}
    )


# -- on a throttle -------------------------------------------------------------------------


async def test_a_throttles_rules() -> None:
    throttle = HTTPThrottle(
        "rules:own",
        rate="1/min",
        backend=InMemoryBackend(),
        registry=ThrottleRegistry(),
        rules=[Rule(path="/api/"), Bypass(methods="OPTIONS"), Bypass(predicate=is_internal)],
    )
    async with client(app_with(throttle)) as http:
        assert await statuses(http, "/health", 3) == [200] * 3
        assert await statuses(http, "/api/items", 2, method="OPTIONS") == [200] * 2
        assert await statuses(http, "/api/items", 2, headers={"x-internal": "yes"}) == [200] * 2
        assert await statuses(http, "/api/items", 2) == [200, 429]


async def test_rules_run_before_rate_cost_identity_and_store() -> None:
    calls: list[str] = []

    def rate(connection: Any, context: Any) -> str:
        calls.append("rate")
        return "1/min"

    def cost(connection: Any, context: Any) -> int:
        calls.append("cost")
        return 1

    def identify(connection: Any) -> str:
        calls.append("identifier")
        return "client"

    store = FailingBackend(InMemoryBackend())
    store.fail(BackendError("store down"))
    throttle = HTTPThrottle(
        "rules:order",
        rate=rate,
        cost=cost,
        identifier=identify,
        backend=store,
        on_error="raise",
        registry=ThrottleRegistry(),
        rules=[Bypass(path="/health")],
    )
    async with client(app_with(throttle)) as http:
        assert await statuses(http, "/health", 2) == [200, 200]
    assert calls == []


async def test_a_failing_rule_lets_the_throttle_apply(caplog: pytest.LogCaptureFixture) -> None:
    def broken(connection: Any) -> bool:
        raise RuntimeError("rule bug")

    throttle = HTTPThrottle(
        "rules:broken",
        rate="1/min",
        backend=InMemoryBackend(),
        registry=ThrottleRegistry(),
        rules=[Bypass(predicate=broken)],
    )
    with caplog.at_level(logging.ERROR, logger="traffik"):
        async with client(app_with(throttle)) as http:
            assert await statuses(http, "/", 2) == [200, 429]
    assert "rule bug" in caplog.text


async def test_rules_see_the_merged_context() -> None:
    throttle = HTTPThrottle(
        "rules:context",
        rate="1/min",
        backend=InMemoryBackend(),
        registry=ThrottleRegistry(),
        context={"tier": "paid"},
        rules=[Rule(predicate=tier_is)],
    )
    connection = request(path="/x")
    connection.scope["client"] = ("1.2.3.4", 1)
    for _ in range(3):
        await throttle.hit(connection)  # paid: not counted
    await throttle.hit(connection, context={"tier": "free"})
    with pytest.raises(ConnectionThrottled, match="Too many requests"):
        await throttle.hit(connection, context={"tier": "free"})
