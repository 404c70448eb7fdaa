"""`HTTPThrottle` and `WebSocketThrottle` in real FastAPI and Starlette apps."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, WebSocket
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from traffik import (
    EXEMPTED,
    HTTPThrottle,
    InMemoryBackend,
    ManualClock,
    Rate,
    WebSocketThrottle,
    is_throttled,
)
from traffik.exceptions import BackendError, ConfigurationError
from traffik.identity import grouped_address, remote_address
from traffik.keyparts import client_part
from traffik.rules import Bypass
from traffik.strategies import GCRA, TokenBucket
from traffik.testing import FailingBackend

pytestmark = pytest.mark.anyio


def make_app(*throttles: HTTPThrottle, backend: InMemoryBackend | None = None) -> FastAPI:
    app = FastAPI(lifespan=backend.lifespan if backend else None)

    @app.get("/items/{item_id}", dependencies=[Depends(t) for t in throttles])
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/other", dependencies=[Depends(t) for t in throttles])
    async def other() -> dict[str, bool]:
        return {"ok": True}

    return app


def client_for(
    app: Any, client: tuple[str, int] = ("127.0.0.1", 5000), **kwargs: Any
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client, **kwargs)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def backend(clock: ManualClock) -> InMemoryBackend:
    return InMemoryBackend(namespace="throttles", clock=clock)


async def statuses(client: httpx.AsyncClient, path: str, n: int, **kwargs: Any) -> list[int]:
    return [(await client.get(path, **kwargs)).status_code for _ in range(n)]


async def test_two_throttles_with_one_uid_share_counters(backend: InMemoryBackend) -> None:
    first = HTTPThrottle("shared", rate="3/min", backend=backend)
    second = HTTPThrottle("shared", rate="3/min", backend=backend)
    async with client_for(make_app(first)) as a, client_for(make_app(second)) as b:
        assert await statuses(a, "/other", 2) == [200, 200]
        assert await statuses(b, "/other", 2) == [200, 429]


async def test_route_template_is_one_budget_and_routes_are_separate(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("per-route", rate="2/min", backend=backend)
    async with client_for(make_app(throttle)) as client:
        assert [
            (await client.get(p)).status_code for p in ("/items/1", "/items/2", "/items/3")
        ] == [200, 200, 429]
        assert await statuses(client, "/other", 1) == [200]


async def test_per_route_false_counts_across_routes(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("global", rate="2/min", backend=backend, per_route=False)
    async with client_for(make_app(throttle)) as client:
        assert [(await client.get(p)).status_code for p in ("/items/1", "/other", "/items/9")] == [
            200,
            200,
            429,
        ]


async def test_each_new_client_of_a_route_gets_the_key_key_for_composes(
    backend: InMemoryBackend,
) -> None:
    """New clients of a known route get their keys from the route's prepared ends: the
    same keys as composed in full, per client and per route, and a subclass's own
    `compose_key` still composes each."""

    class Hashed(HTTPThrottle):
        def compose_key(self, client: str, route: Any, context: Any) -> str:
            return f"hashed:{len(client)}:{route}"

    plain = HTTPThrottle("plain", rate="10/min", backend=backend)
    hashed = Hashed("hashed", rate="10/min", backend=backend)
    hosts = ("10.0.0.1", "10.0.0.22", "2001:db8::1")
    for path in ("/items/1", "/other", "/items/2"):
        for host in hosts:
            async with client_for(make_app(plain, hashed), client=(host, 1)) as client:
                assert (await client.get(path)).status_code == 200
    keys = sorted(await backend.keys())
    expected = sorted(
        f"throttles:{plain.key_for(None, grouped_address(host), {}, route=route)}:fw"
        for route in ("GET:/items/%7Bitem_id%7D", "GET:/other")
        for host in hosts
    )
    hashed_keys = [key for key in keys if key.startswith("throttles:hashed:")]
    assert [key for key in keys if not key.startswith("throttles:hashed:")] == expected
    assert sorted(hashed_keys) == sorted(
        f"throttles:hashed:{len(client_part(grouped_address(host)))}:{route}:fw"
        for route in ("GET:/items/%7Bitem_id%7D", "GET:/other")
        for host in hosts
    )


async def test_an_identifier_returning_an_object_keyed_by_its_address_is_refused(
    backend: InMemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """An object whose text is its memory address (`request.user`, a Starlette
    `SimpleUser`) was keyed by it: a new client, a fresh budget and a store key per request,
    silently. It is a configuration mistake: loud (a 500, and an ERROR naming the throttle,
    the identifier, the type and what to return), never a budget per request. An object
    with a text of its own is keyed by it, as before."""

    class User:
        def __init__(self, name: str) -> None:
            self.name = name

    class Named(User):
        def __str__(self) -> str:
            return self.name

    def user_of(request: Request) -> User:
        return User("alice")

    throttle = HTTPThrottle("by-user", rate="2/min", backend=backend, identifier=user_of)
    with caplog.at_level(logging.ERROR, logger="traffik"):
        async with client_for(make_app(throttle), raise_app_exceptions=False) as client:
            assert await statuses(client, "/other", 3) == [500, 500, 500]
    assert await backend.keys() == []
    message = caplog.records[-1].getMessage()
    assert "HTTPThrottle('by-user'" in message
    assert "identifier test_an_identifier_returning_an_object" in message
    assert "user_of" in message and "test_throttles.py" in message
    assert ".User, an object with no text of its own" in message
    assert "return a str or int" in message and "request.user.username" in message
    with pytest.raises(ConfigurationError, match=r"an identifier returned a .*\.User, an object"):
        client_part(User("alice"))
    assert client_part(Named("alice")).endswith(".Named=alice")


async def test_a_throttle_with_an_identifier_keys_and_decides_as_composed_in_full(
    backend: InMemoryBackend,
) -> None:
    """A throttle with an identifier of its own (fixed rate and cost) decides in place, on
    keys made from the route's prepared ends around each client's part: the same keys as
    composed in full, and a subclass's own `compose_key` still composes each."""

    def api_key(connection: Any) -> str:
        return str(connection.headers["x-api-key"])

    class Hashed(HTTPThrottle):
        def compose_key(self, client: str, route: Any, context: Any) -> str:
            return f"keyed-hashed:{len(client)}:{route}"

    keyed = HTTPThrottle("keyed", rate="10/min", backend=backend, identifier=api_key)
    hashed = Hashed("keyed-hashed", rate="10/min", backend=backend, identifier=api_key)
    clients = ("k1", "a:b", "x y", "2001:db8::1")
    async with client_for(make_app(keyed, hashed)) as client:
        for path in ("/items/1", "/other", "/items/2"):
            for key in clients:
                response = await client.get(path, headers={"x-api-key": key})
                assert response.status_code == 200
    assert keyed._decider[0] is backend and hashed._decider[0] is backend  # (in place)
    routes = ("GET:/items/%7Bitem_id%7D", "GET:/other")
    keys = sorted(await backend.keys())
    assert [key for key in keys if key.startswith("throttles:keyed:")] == sorted(
        f"throttles:{keyed.key_for(None, key, {}, route=route)}:fw"
        for route in routes
        for key in clients
    )
    assert [key for key in keys if key.startswith("throttles:keyed-hashed:")] == sorted(
        {
            f"throttles:keyed-hashed:{len(client_part(key))}:{route}:fw"
            for route in routes
            for key in clients
        }
    )
    counts = [await backend.get(key) for key in keys if key.startswith("throttles:keyed:")]
    assert sorted(map(int, counts)) == [1] * 4 + [2] * 4  # (two item paths, one template)


async def test_429_has_retry_after_and_fastapi_body(
    backend: InMemoryBackend, clock: ManualClock
) -> None:
    throttle = HTTPThrottle("body", rate="1/min", backend=backend)
    async with client_for(make_app(throttle)) as client:
        await client.get("/other")
        clock.advance(59.5)
        response = await client.get("/other")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"detail": "Too many requests. Retry in 1 seconds."}


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("ietf", {"ratelimit-policy": '"hdr";q=3;w=60', "ratelimit": '"hdr";r=1;t=60'}),
        (
            "legacy",
            {"x-ratelimit-limit": "3", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "60"},
        ),
    ],
)
async def test_headers_on_allowed_responses(
    backend: InMemoryBackend, style: str, expected: dict[str, str]
) -> None:
    throttle = HTTPThrottle("hdr", rate="3/min", backend=backend, headers=style)
    app = FastAPI()

    @app.get("/r")
    async def route(request: Request = Depends(throttle)) -> dict[str, str]:
        return {"path": request.url.path}

    async with client_for(app) as client:
        await client.get("/r")
        response = await client.get("/r")
        other = {"ratelimit", "ratelimit-policy"} if style == "legacy" else {"x-ratelimit-limit"}
        assert response.status_code == 200 and response.json() == {"path": "/r"}
        for name, value in expected.items():
            assert response.headers[name] == value
        assert not other & set(response.headers)
        await client.get("/r")
        rejected = await client.get("/r")
    assert rejected.status_code == 429
    if style == "ietf":
        assert rejected.headers["ratelimit"] == '"hdr";r=0;t=60'
    else:
        assert rejected.headers["x-ratelimit-remaining"] == "0"


async def test_headers_can_be_turned_off(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("quiet", rate="3/min", backend=backend, headers=None)
    async with client_for(make_app(throttle)) as client:
        response = await client.get("/other")
    assert "ratelimit" not in response.headers


async def test_spoofed_forwarded_for_is_ignored_without_a_trusted_proxy(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("spoof", rate="2/min", backend=backend)
    async with client_for(make_app(throttle)) as client:
        codes = [
            (await client.get("/other", headers={"X-Forwarded-For": f"203.0.113.{i}"})).status_code
            for i in range(3)
        ]
    assert codes == [200, 200, 429]


async def test_forwarded_for_believed_from_a_trusted_proxy_only(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle(
        "proxied",
        rate="1/min",
        backend=backend,
        identifier=remote_address(trusted_proxies=["10.0.0.0/8"]),
    )
    app = make_app(throttle)
    async with client_for(app, client=("10.1.2.3", 80)) as via_proxy:
        assert await statuses(
            via_proxy, "/other", 1, headers={"X-Forwarded-For": "198.51.100.1"}
        ) == [200]
        assert await statuses(
            via_proxy, "/other", 1, headers={"X-Forwarded-For": "198.51.100.2"}
        ) == [200]
        # a client prepending a fake address is still identified by the address the proxy saw
        spoof = {"X-Forwarded-For": "198.51.100.2, 198.51.100.1"}
        assert await statuses(via_proxy, "/other", 1, headers=spoof) == [429]
        assert await statuses(
            via_proxy, "/other", 1, headers={"Forwarded": "for=198.51.100.3"}
        ) == [200]
    async with client_for(app, client=("192.0.2.9", 80)) as untrusted:
        assert await statuses(
            untrusted, "/other", 2, headers={"X-Forwarded-For": "198.51.100.7"}
        ) == [200, 429]


async def test_exempted_clients_cost_no_backend_call(backend: InMemoryBackend) -> None:
    async def identify(connection: Any) -> Any:
        return EXEMPTED if connection.headers.get("x-key") == "internal" else "someone"

    failing = FailingBackend(backend)
    throttle = HTTPThrottle("exempt", rate="1/min", backend=failing, identifier=identify)
    async with client_for(make_app(throttle)) as client:
        with failing.failing(AssertionError("backend called")):
            assert await statuses(client, "/other", 3, headers={"x-key": "internal"}) == [
                200,
                200,
                200,
            ]
        assert await statuses(client, "/other", 2) == [200, 429]
    assert failing.failures == 0


@pytest.mark.parametrize(
    ("on_error", "status"),
    [("throttle", 429), ("allow", 200), ("raise", 500)],
)
async def test_backend_failure_follows_on_error(
    backend: InMemoryBackend, on_error: str, status: int
) -> None:
    failing = FailingBackend(backend)
    throttle = HTTPThrottle("fails", rate="5/min", backend=failing, on_error=on_error)
    async with client_for(make_app(throttle), raise_app_exceptions=False) as client:
        with failing.failing(ConnectionError("store down")):
            response = await client.get("/other")
    assert response.status_code == status
    assert "Traceback" not in response.text and "store down" not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "1"


async def test_on_error_handler_and_backend_default(clock: ManualClock) -> None:
    calls: list[dict[str, Any]] = []

    async def handler(connection: Any, exc_info: dict[str, Any]) -> float:
        calls.append(exc_info)
        return 0.0

    backend = FailingBackend(InMemoryBackend(namespace="h", clock=clock, on_error="allow"))
    inherits = HTTPThrottle("inherits", rate="5/min", backend=backend)
    custom = HTTPThrottle("custom", rate="5/min", backend=backend, on_error=handler)
    async with client_for(make_app(inherits, custom)) as client:
        with backend.failing(BackendError("down")):
            assert await statuses(client, "/other", 1) == [200]
    assert len(calls) == 1
    info = calls[0]
    assert isinstance(info["exception"], BackendError) and info["throttle"] is custom
    assert (
        info["key"] == "custom:{127.0.0.1}:GET:/other"
        and info["rate"] == Rate.parse("5/min")
        and info["cost"] == 1
    )


async def test_a_failing_error_handler_is_a_server_error_not_a_traceback(
    backend: InMemoryBackend,
) -> None:
    async def broken(connection: Any, exc_info: Any) -> float:
        raise RuntimeError("handler bug")

    failing = FailingBackend(backend)
    throttle = HTTPThrottle("broken", rate="5/min", backend=failing, on_error=broken)
    async with client_for(make_app(throttle), raise_app_exceptions=False) as client:
        with failing.failing(BackendError("down")):
            response = await client.get("/other")
    assert response.status_code == 500
    assert "handler bug" not in response.text and "Traceback" not in response.text


async def test_dynamic_rate_and_cost_sync_or_async(backend: InMemoryBackend) -> None:
    def rate(connection: Any, context: Any) -> str:
        return "10/min" if connection.headers.get("x-plan") == "pro" else "2/min"

    async def cost(connection: Any, context: Any) -> int:
        return 2 if connection.url.path == "/other" else 1

    throttle = HTTPThrottle("dyn", rate=rate, backend=backend, cost=cost, strategy=TokenBucket())
    app = make_app(throttle)
    async with client_for(app) as client:
        assert await statuses(client, "/other", 2) == [200, 429]
    async with client_for(app, client=("127.0.0.2", 1)) as pro:
        assert await statuses(pro, "/other", 6, headers={"x-plan": "pro"}) == [200] * 5 + [429]
        assert await statuses(pro, "/items/1", 1, headers={"x-plan": "pro"}) == [200]


async def test_bad_configuration_fails_at_construction(backend: InMemoryBackend) -> None:
    with pytest.raises(ConfigurationError, match="cost=-1"):
        HTTPThrottle("x", rate="1/min", cost=-1)
    with pytest.raises(ConfigurationError, match="cost=5 exceeds"):
        HTTPThrottle("x", rate="2/min", cost=5)
    with pytest.raises(ConfigurationError, match="on_error='ignore'"):
        HTTPThrottle("x", rate="1/min", on_error="ignore")
    with pytest.raises(ConfigurationError, match="headers='html'"):
        HTTPThrottle("x", rate="1/min", headers="html")
    with pytest.raises(ValueError, match="unknown unit 'fortnight'"):
        HTTPThrottle("x", rate="5/fortnight")
    with pytest.raises(ConfigurationError, match="uid"):
        HTTPThrottle("", rate="1/min")
    with pytest.raises(ConfigurationError, match="cost=3 exceeds"):
        HTTPThrottle("x", rate="2/min", strategy=GCRA(burst_tolerance_ms=0), cost=3)


async def test_backend_from_url_and_from_lifespan(clock: ManualClock) -> None:
    by_url = HTTPThrottle("url", rate="1/min", backend="memory://url-ns")
    assert isinstance(by_url.backend, InMemoryBackend) and by_url.backend.namespace == "url-ns"

    backend = InMemoryBackend(namespace="life", clock=clock)
    unbound = HTTPThrottle("unbound", rate="1/min")
    app = make_app(unbound, backend=backend)
    async with app.router.lifespan_context(app), client_for(app) as client:
        assert await statuses(client, "/other", 2) == [200, 429]
    assert unbound.backend is None  # resolved per connection, never cached on the throttle


async def test_missing_backend_is_a_clear_error() -> None:
    throttle = HTTPThrottle("nobackend", rate="1/min")
    async with client_for(make_app(throttle)) as client:
        with pytest.raises(ConfigurationError, match="has no backend"):
            await client.get("/other")


async def test_disable_stat_and_check(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("stat", rate="2/min", backend=backend)
    app = FastAPI()

    @app.get("/s")
    async def route(request: Request = Depends(throttle)) -> dict[str, Any]:
        stat = await throttle.stat(request)
        assert stat is not None
        return {"remaining": stat.hits_remaining, "check": await throttle.check(request)}

    async with client_for(app) as client:
        assert (await client.get("/s")).json() == {"remaining": 1, "check": True}
        assert (await client.get("/s")).json() == {"remaining": 0, "check": False}
        await throttle.disable()
        assert throttle.is_disabled and await statuses(client, "/s", 3) == [200] * 3
        await throttle.enable()
        assert await statuses(client, "/s", 1) == [429]


async def test_skip_handler_marks_and_continues(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("skip", rate="1/min", backend=backend, skip_handler=True)
    app = FastAPI()

    @app.get("/m")
    async def route(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"throttled": is_throttled(request)}

    async with client_for(app) as client:
        assert [(await client.get("/m")).json()["throttled"] for _ in range(2)] == [False, True]


async def test_custom_throttled_handler(backend: InMemoryBackend) -> None:
    async def teapot(connection: Any, wait_ms: float, throttle: Any, context: Any) -> None:
        from starlette.exceptions import HTTPException

        raise HTTPException(418, detail=f"wait {wait_ms:.0f}ms", headers=context.get("headers"))

    throttle = HTTPThrottle("tea", rate="1/min", backend=backend, handle_throttled=teapot)
    async with client_for(make_app(throttle)) as client:
        await client.get("/other")
        response = await client.get("/other")
    assert response.status_code == 418 and response.json() == {"detail": "wait 60000ms"}
    assert response.headers["ratelimit"] == '"tea";r=0;t=60'


async def test_starlette_direct_use(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("starlette", rate="1/min", backend=backend)

    async def endpoint(request: Any) -> JSONResponse:
        await throttle.hit(request)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/s", endpoint)])
    async with client_for(app) as client:
        first, second = await client.get("/s"), await client.get("/s")
    assert first.status_code == 200
    assert second.status_code == 429 and second.headers["retry-after"] == "60"
    assert second.text == "Too many requests. Retry in 60 seconds."


def test_websocket_throttled_before_accept(backend: InMemoryBackend) -> None:
    throttle = WebSocketThrottle("ws-connect", rate="1/min", backend=backend)
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket = Depends(throttle)) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    client = TestClient(app)
    with client.websocket_connect("/ws") as connection:
        assert connection.receive_text() == "hi"
    from starlette.testclient import WebSocketDenialResponse

    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
        pass
    assert denied.value.status_code == 429 and denied.value.headers["retry-after"] == "60"


def test_websocket_throttled_after_accept_stays_open(backend: InMemoryBackend) -> None:
    throttle = WebSocketThrottle("ws-msg", rate="2/min", backend=backend)
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                await throttle.hit(websocket)
                if not is_throttled(websocket):
                    await websocket.send_text(f"echo: {text}")
        except WebSocketDisconnect:
            pass

    with TestClient(app).websocket_connect("/ws") as connection:
        for word in ("a", "b"):
            connection.send_text(word)
            assert connection.receive_text() == f"echo: {word}"
        connection.send_text("c")
        assert connection.receive_json() == {
            "type": "rate_limit",
            "error": "Too many messages",
            "retry_after": 60,
        }
        connection.send_text("d")
        assert connection.receive_json()["type"] == "rate_limit"


def test_import_without_starlette_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "import traffik\n"
        "try:\n    traffik.HTTPThrottle\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert 'pip install "traffik-core[starlette]"' in out and "traffik-fastapi" in out


@pytest.mark.parametrize(
    "module",
    [
        "traffik.throttles",
        "traffik.middleware",
        "traffik.middleware_answers",
        "traffik.middleware_sends",
        "traffik.middleware_throttle",
        "traffik.decorators",
        "traffik.responses",
    ],
)
def test_importing_a_starlette_module_without_starlette_says_what_to_install(module: str) -> None:
    # traffik 1.2's import paths (`from traffik.throttles import HTTPThrottle`) name the
    # module and the install command too, not only `No module named 'starlette'`.
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith(f"{module} needs Starlette"), out
    assert 'pip install "traffik-core[starlette]"' in out and "traffik-fastapi" in out


@pytest.fixture
async def lifespan_backend() -> AsyncIterator[InMemoryBackend]:
    backend = InMemoryBackend(namespace="ctx")
    async with backend:
        yield backend


async def test_context_backend(lifespan_backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("ctx", rate="1/min")
    assert throttle.get_backend() is lifespan_backend


@pytest.mark.parametrize(
    ("argument", "value", "valid"),
    [
        ("context", 5, "mapping"),
        ("context", ["tier"], "mapping"),
        ("rules", 5, "list of Rule"),
        ("rules", "/api/", "list of Rule"),
    ],
)
def test_context_and_rules_of_the_wrong_type_name_themselves(
    argument: str, value: Any, valid: str
) -> None:
    with pytest.raises(ConfigurationError, match=rf"HTTPThrottle\('typed'\): {argument}=") as info:
        HTTPThrottle("typed", "5/s", **{argument: value})
    assert repr(value) in str(info.value) and valid in str(info.value)


async def test_test_is_check(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("test-alias", rate="2/min", backend=backend)
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    assert await throttle.test(request) is True
    assert await throttle.test(request, cost=3) is False  # more than the limit
    await throttle.hit(request)
    await throttle.hit(request)
    assert await throttle.test(request) is False
    assert await throttle.test(request, 1, {"scope": "other"}) is True  # another budget


@pytest.mark.parametrize("cost", [-1, 1.5, "2", True])
async def test_check_takes_the_costs_hit_takes(backend: InMemoryBackend, cost: Any) -> None:
    # A negative or fractional cost answered True: a bad input read as "it would pass".
    throttle = HTTPThrottle("check-cost", rate="2/min", backend=backend)
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    with pytest.raises(ConfigurationError, match=r"cost=.* (must be a whole number|negative)"):
        await throttle.check(request, cost=cost)
    assert await throttle.check(request, cost=0) is True


@pytest.mark.parametrize("wait", [float("inf"), 1e300, 2.0**60, float("nan")])
async def test_a_strategys_endless_or_odd_wait_is_a_bounded_429(wait: float) -> None:
    # A plain strategy (traffik 1.2's contract) may answer any float: the client still gets
    # a 429 whose Retry-After is a whole number of seconds it can read.
    async def refuse(key: str, rate: Any, backend: Any, cost: int = 1) -> float:
        return wait

    throttle = HTTPThrottle("odd-wait", rate="5/min", backend=InMemoryBackend(), strategy=refuse)
    app = FastAPI()

    @app.get("/", dependencies=[Depends(throttle)])
    async def root() -> str:
        return "ok"

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    assert response.status_code == 429
    seconds = int(response.headers["retry-after"])
    assert seconds == 1 if wait != wait else 1 <= seconds <= 2**53 // 1000


# -- a WebSocket message let through after a refused one ----------------------------------


def echo_app(hit: Any) -> FastAPI:
    """The echo endpoint of docs/testing.md (`hit(websocket)` per message, then the
    documented `is_throttled` check), closing each message's replies with an "end" frame so
    a test reads every reply without waiting forever for one that never comes."""
    app = FastAPI()

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                data = await websocket.receive_text()
                await hit(websocket)
                if not is_throttled(websocket):
                    await websocket.send_text(f"echo: {data}")
                await websocket.send_text("end")
        except WebSocketDisconnect:
            pass

    return app


def replies(ws: Any, text: str) -> list[str]:
    """Send `text`, then read the replies up to the endpoint's "end": the echo, or the
    throttle's frame as its `type` (`rate_limit`)."""
    ws.send_text(text)
    got = []
    while True:
        reply = ws.receive_text()
        if reply == "end":
            return got
        got.append(reply if reply.startswith("echo") else json.loads(reply)["type"])


@pytest.mark.parametrize("let_through", ["disabled", "unlimited", "bypass", "exempted", "cost0"])
def test_a_message_let_through_after_a_refusal_is_not_throttled(let_through: str) -> None:
    # Each way a hit returns without a decision marks the connection not throttled, as an
    # admitted hit does: the endpoint answers the message instead of staying silent.
    free = {"on": False}
    throttle = WebSocketThrottle(
        "ws:through:" + let_through,
        rate="2/min",
        backend=InMemoryBackend(),
        identifier=lambda ws: EXEMPTED if free["on"] and let_through == "exempted" else "me",
        rules=[Bypass(predicate=lambda ws: free["on"] and let_through == "bypass")],
        cache_ids=False,  # (the identifier is asked again for every message)
    )

    async def hit(websocket: WebSocket) -> None:
        cost = 0 if free["on"] and let_through == "cost0" else None
        await throttle.hit(websocket, cost=cost)

    with TestClient(echo_app(hit)).websocket_connect("/ws") as ws:
        assert [replies(ws, word) for word in ("1", "2", "3")] == [
            ["echo: 1"],
            ["echo: 2"],
            ["rate_limit"],
        ]
        free["on"] = True
        if let_through == "disabled":
            throttle._disabled = True
        elif let_through == "unlimited":
            throttle.update_rate("unlimited")
        assert replies(ws, "again") == ["echo: again"]


def test_several_limits_on_each_message_are_one_throttle_with_several_rates() -> None:
    # The supported way to apply two limits to every message: one answer per message, and a
    # refused message charges no rate.
    clock = ManualClock()
    throttle = WebSocketThrottle(
        "ws:both", rate="2/10s;3/min", backend=InMemoryBackend(clock=clock)
    )
    with TestClient(echo_app(throttle.hit)).websocket_connect("/ws") as ws:
        assert [replies(ws, word) for word in "1234"] == [
            ["echo: 1"],
            ["echo: 2"],
            ["rate_limit"],
            ["rate_limit"],
        ]
        clock.advance(10)
        assert replies(ws, "5") == ["echo: 5"]  # the minute's third: 3 and 4 took nothing
        assert replies(ws, "6") == ["rate_limit"]  # the minute's limit now


async def test_a_websocket_throttle_asks_for_the_path_alone() -> None:
    throttle = WebSocketThrottle("ws-path", rate="2/min", backend=InMemoryBackend())
    with pytest.raises(ConfigurationError, match="WebSocket routes have no method"):
        await throttle.reset("testclient")
    with pytest.raises(ConfigurationError, match="WebSocket routes have no method"):
        await throttle.stat("testclient")


@pytest.mark.parametrize("strategy", ["token_bucket", 5])
def test_a_strategy_that_is_no_strategy_says_what_is(strategy: object) -> None:
    with pytest.raises(
        ConfigurationError, match=r"is not a strategy; pass one such as TokenBucket\(\)"
    ):
        HTTPThrottle("no-strategy", rate="5/min", strategy=strategy)
