"""A new user's journeys, end to end: what someone coming from slowapi, fastapi-limiter or
traffik 1.2 builds from the README and docs/, and the mistakes they make on the way.

Each journey is an app as its user would write it, driven through httpx's `ASGITransport`
(or Starlette's `TestClient` for WebSockets) on the in-memory backend; the journey about
scaling out runs on a real Redis server. Time moves by a `ManualClock`, never by sleeping.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from traffik import (
    EXEMPTED,
    HTTPThrottle,
    InMemoryBackend,
    ManualClock,
    ThrottleMiddleware,
    ThrottleRegistry,
    WebSocketThrottle,
    get_remote_address,
    is_throttled,
)
from traffik.backends import _plugins
from traffik.exceptions import BackendError, BackendNotFoundError, ConfigurationError
from traffik.middleware import MiddlewareThrottle
from traffik.strategies import FixedWindow, SlidingWindowLog, TokenBucket
from traffik.strategies.custom import TieredRate
from traffik.testing import FailingBackend, override_rate, reset_client, throttle_disabled

pytestmark = pytest.mark.anyio

START = 1_700_000_040.0  # a minute boundary


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def client(app: Any, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def codes(http: httpx.AsyncClient, path: str, n: int, **kwargs: Any) -> list[int]:
    return [(await http.get(path, **kwargs)).status_code for _ in range(n)]


# -- 1. per-API-key limits, anonymous clients by IP, an admin key exempt ---------------------

ADMIN_KEY = "admin-secret"


def api_client(request: Request) -> Any:
    """The bucket: the API key when there is one, else the caller's address."""
    key = request.headers.get("X-API-Key")
    if key == ADMIN_KEY:
        return EXEMPTED
    if key:
        return f"key:{key}"
    return f"ip:{get_remote_address(request)}"


def per_plan(request: Request, context: Any) -> str:
    return "5/min" if request.headers.get("X-API-Key") else "2/min"


async def test_api_keys_anonymous_ips_and_an_exempt_admin(clock: ManualClock) -> None:
    backend = InMemoryBackend(namespace="keys", clock=clock)
    throttle = HTTPThrottle("api", rate=per_plan, identifier=api_client, backend=backend)
    app = FastAPI()

    @app.get("/reports", dependencies=[Depends(throttle)])
    async def reports() -> list[str]:
        return []

    async with client(app, "203.0.113.1") as one, client(app, "203.0.113.2") as two:
        anonymous = await codes(one, "/reports", 3)
        neighbour = await codes(two, "/reports", 3)
        alice = await codes(one, "/reports", 6, headers={"X-API-Key": "alice"})
        alice_elsewhere = await codes(two, "/reports", 1, headers={"X-API-Key": "alice"})
        admin = await codes(one, "/reports", 20, headers={"X-API-Key": ADMIN_KEY})
        spent = await one.get("/reports", headers={"X-API-Key": "alice"})
        first_admin = await one.get("/reports", headers={"X-API-Key": ADMIN_KEY})
    assert anonymous == [200, 200, 429]  # anonymous callers: 2/min per address
    assert neighbour == [200, 200, 429]  # another address, another budget
    assert alice == [200] * 5 + [429]  # a key: 5/min, whichever address it comes from
    assert alice_elsewhere == [429]
    assert admin == [200] * 20
    assert spent.headers["ratelimit-policy"] == '"api";q=5;w=60'
    assert "ratelimit" not in first_admin.headers  # exempt: nothing counted, nothing told
    assert sorted(await backend.keys()) == [
        "keys:api:{ip%3A203.0.113.1}:GET:/reports:fw",
        "keys:api:{ip%3A203.0.113.2}:GET:/reports:fw",
        "keys:api:{key%3Aalice}:GET:/reports:fw",
    ]


# -- 2. a login endpoint: failed attempts per username and IP -------------------------------


class Credentials(BaseModel):
    username: str
    password: str


async def username_and_ip(request: Request) -> str:
    body = await request.json()
    return f"{body.get('username', '')}@{get_remote_address(request)}"


def failed(outcome: Any) -> bool:
    return outcome.status_code >= 400


def login_app(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.post("/login")
    async def login(
        credentials: Credentials, request: Request = Depends(throttle.charge_by_outcome)
    ) -> dict[str, str]:
        if credentials.password != "secret":
            raise HTTPException(401, "wrong username or password")
        return {"token": "t"}

    return app


async def test_a_login_counts_failed_attempts_per_username_and_ip(clock: ManualClock) -> None:
    attempts = HTTPThrottle(
        "login",
        rate="5/min",
        identifier=username_and_ip,
        backend=InMemoryBackend(clock=clock),
        charge_when=failed,
    )
    ann = {"username": "ann", "password": "secret"}
    wrong = {"username": "ann", "password": "guess"}
    async with client(login_app(attempts), "198.51.100.4") as http:
        good = [(await http.post("/login", json=ann)).status_code for _ in range(7)]
        clock.advance(5)
        bad = [await http.post("/login", json=wrong) for _ in range(6)]
        after = await http.post("/login", json=ann)  # the right password, but too late
        bob = await http.post("/login", json={"username": "bob", "password": "guess"})
        clock.advance(55)
        next_minute = await http.post("/login", json=wrong)
    assert good == [200] * 7  # successes never count
    assert [r.status_code for r in bad] == [401] * 5 + [429]
    assert after.status_code == 429  # refused before the password is checked
    assert bob.status_code == 401  # another username from the same address
    assert next_minute.status_code == 401

    refused = bad[-1]
    assert refused.json() == {"detail": "Too many requests. Retry in 55 seconds."}
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["retry-after"] == "55"
    assert refused.headers["ratelimit-policy"] == '"login";q=5;w=60'
    assert refused.headers["ratelimit"] == '"login";r=0;t=55'


async def test_a_login_throttle_with_charge_when_is_not_a_plain_dependency(
    clock: ManualClock,
) -> None:
    """`Depends(throttle)` never sees the outcome, so `charge_when` would never apply and every
    login would count: defining such a route fails at once, naming what to write instead."""
    attempts = HTTPThrottle(
        "login:plain", rate="5/min", backend=InMemoryBackend(clock=clock), charge_when=failed
    )
    app = FastAPI()
    with pytest.raises(ConfigurationError, match=r"Depends\(throttle.charge_by_outcome\)"):

        @app.post("/login", dependencies=[Depends(attempts)])
        async def login() -> dict[str, str]:
            return {}

    with pytest.raises(ConfigurationError, match="charge_when"):

        @app.post("/signin")
        async def signin(request: Request = Depends(attempts)) -> dict[str, str]:
            return {}

    # Where the outcome is seen, the same throttle is welcome.
    from traffik.fastapi import throttled

    @app.post("/token")
    @throttled(attempts)
    async def token(password: str) -> dict[str, str]:
        if password != "secret":
            raise HTTPException(401)
        return {"token": "t"}

    app.add_middleware(ThrottleMiddleware, middleware_throttles=[attempts])
    async with client(app) as http:
        ok = [
            (await http.post("/token", params={"password": "secret"})).status_code for _ in range(6)
        ]
    assert ok == [200] * 6


async def test_a_login_under_the_middleware_cannot_key_on_the_body(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """`ThrottleMiddleware` decides before the app has read the body: an identifier reading
    it is a configuration mistake, named as one (it was Starlette's "Receive channel has not
    been made available", which `on_error` turned into a 429 for everyone)."""

    def by_header(request: Request) -> str:
        return f"{request.headers.get('x-username', '')}@{get_remote_address(request)}"

    def app_with(identifier: Any) -> FastAPI:
        attempts = HTTPThrottle(
            "login:mw",
            rate="3/min",
            identifier=identifier,
            backend=InMemoryBackend(clock=clock),
            charge_when=failed,
        )
        app = FastAPI()
        app.add_middleware(
            ThrottleMiddleware,
            middleware_throttles=[MiddlewareThrottle(attempts, path="/login$", methods="POST")],
        )

        @app.post("/login")
        async def login(credentials: Credentials) -> dict[str, str]:
            if credentials.password != "secret":
                raise HTTPException(401, "wrong username or password")
            return {"token": "t"}

        return app

    wrong = {"username": "ann", "password": "guess"}
    with caplog.at_level(logging.ERROR, logger="traffik"):
        async with client(app_with(username_and_ip)) as http:
            answer = await http.post("/login", json=wrong)
    assert answer.status_code == 500
    assert (
        "HTTPThrottle('login:mw', rate='3/min') is misconfigured: under ThrottleMiddleware, a "
        "throttle's identifier, rules, rate and cost callables cannot read the request body"
    ) in caplog.text

    async with client(app_with(by_header)) as http:
        ann = {"x-username": "ann"}
        good = [
            (await http.post("/login", json={**wrong, "password": "secret"}, headers=ann))
            for _ in range(4)
        ]
        bad = [(await http.post("/login", json=wrong, headers=ann)).status_code for _ in range(4)]
    assert [r.status_code for r in good] == [200] * 4
    assert bad == [401, 401, 401, 429]


# -- 3. plans: free and pro, and a change of plan mid-window --------------------------------


PLANS: dict[str, str] = {}


def data_app(throttle: HTTPThrottle) -> FastAPI:
    """An app whose one route, `/data`, the throttle guards as a dependency."""
    app = FastAPI()

    @app.get("/data", dependencies=[Depends(throttle)])
    async def data() -> dict[str, str]:
        return {}

    return app


def plan_rate(request: Request, context: Any) -> str:
    return {"free": "2/min", "pro": "5/min"}[PLANS.get(request.headers["x-user"], "free")]


@pytest.fixture
def plans() -> Iterator[dict[str, str]]:
    PLANS.clear()
    yield PLANS
    PLANS.clear()


@pytest.mark.parametrize("strategy", [TokenBucket(), SlidingWindowLog()], ids=repr)
async def test_an_upgrade_mid_window_keeps_what_was_spent(
    strategy: Any, plans: dict[str, str], clock: ManualClock
) -> None:
    throttle = HTTPThrottle(
        "plans", rate=plan_rate, strategy=strategy, backend=InMemoryBackend(clock=clock)
    )
    ann = {"headers": {"x-user": "ann"}}
    async with client(data_app(throttle)) as http:
        free = await codes(http, "/data", 3, **ann)
        plans["ann"] = "pro"
        pro = [await http.get("/data", **ann) for _ in range(4)]
    assert free == [200, 200, 429]
    # Two of five already spent: three more under the pro limit, then refused.
    assert [r.status_code for r in pro] == [200, 200, 200, 429]
    assert pro[0].headers["ratelimit-policy"] == '"plans";q=5;w=60'
    assert pro[0].headers["ratelimit"].startswith('"plans";r=2;')


async def test_a_fixed_window_counts_the_refused_hit_across_an_upgrade(
    plans: dict[str, str], clock: ManualClock
) -> None:
    """With `FixedWindow` (the default) the refused third hit of the free plan is counted too
    (the README's strategy table: "rejected hits count"), so the upgrade leaves two."""
    throttle = HTTPThrottle("plans:fixed", rate=plan_rate, backend=InMemoryBackend(clock=clock))
    ann = {"headers": {"x-user": "ann"}}
    async with client(data_app(throttle)) as http:
        free = await codes(http, "/data", 3, **ann)
        plans["ann"] = "pro"
        pro = await codes(http, "/data", 3, **ann)
    assert free == [200, 200, 429]
    assert pro == [200, 200, 429]


async def test_tiers_with_tiered_rate(plans: dict[str, str], clock: ManualClock) -> None:
    def by_plan(request: Request) -> str:
        user = request.headers["x-user"]
        return f"tier:{plans.get(user, 'free')}:user:{user}"

    throttle = HTTPThrottle(
        "tiers",
        rate="2/min",
        identifier=by_plan,
        strategy=TieredRate({"free": 1, "pro": 2.5}),
        backend=InMemoryBackend(clock=clock),
    )
    app = FastAPI()

    @app.get("/data", dependencies=[Depends(throttle)])
    async def data() -> dict[str, str]:
        return {}

    ann = {"headers": {"x-user": "ann"}}
    async with client(app) as http:
        free = await codes(http, "/data", 3, **ann)
        plans["ann"] = "pro"  # one count per client, whatever its tier
        pro = [await http.get("/data", **ann) for _ in range(4)]
    assert free == [200, 200, 429]
    assert [r.status_code for r in pro] == [200, 200, 200, 429]
    assert pro[0].headers["ratelimit-policy"] == '"tiers";q=5;w=60'


# -- 4. routers, prefixes, mounts, and one throttle in two places ----------------------------


async def test_a_router_throttle_per_route_or_shared() -> None:
    backend = InMemoryBackend(namespace="routers")
    each = HTTPThrottle("each", rate="2/min", backend=backend)
    shared = HTTPThrottle("shared", rate="3/min", backend=backend, per_route=False)
    items = APIRouter(prefix="/items", dependencies=[Depends(each)])
    admin = APIRouter(dependencies=[Depends(shared)])

    @items.get("")
    async def listing() -> list[int]:
        return []

    @items.get("/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @admin.get("/users")
    async def users() -> list[str]:
        return []

    @admin.get("/audit")
    async def audit() -> list[str]:
        return []

    app = FastAPI()
    app.include_router(items)
    app.include_router(items, prefix="/v2")
    app.include_router(admin, prefix="/admin")
    sub = FastAPI()
    sub.include_router(items)
    app.mount("/legacy", sub)

    async with client(app) as http:
        listed = await codes(http, "/items", 3)
        by_id = [(await http.get(f"/items/{n}")).status_code for n in range(3)]
        v2 = await codes(http, "/v2/items/1", 3)
        legacy = await codes(http, "/legacy/items/1", 3)
        admins = [
            (await http.get(path)).status_code for path in ("/admin/users", "/admin/audit") * 2
        ]
    assert listed == [200, 200, 429]  # each route of the router has its own budget
    assert by_id == [200, 200, 429]  # /items/0, /items/1 and /items/2: one template
    assert v2 == [200, 200, 429]  # the router included again: budgets of its own
    assert legacy == [200, 200, 429]  # under a mount: its own too
    assert admins == [200, 200, 200, 429]  # per_route=False: one budget for the section
    assert sorted(await backend.keys()) == [
        "routers:each:{127.0.0.1}:GET:/items/%7Bitem_id%7D:fw",
        "routers:each:{127.0.0.1}:GET:/items:fw",
        "routers:each:{127.0.0.1}:GET:/legacy/items/%7Bitem_id%7D:fw",
        "routers:each:{127.0.0.1}:GET:/v2/items/%7Bitem_id%7D:fw",
        "routers:shared:{127.0.0.1}:fw",
    ]


async def test_a_mounted_sub_app_finds_the_backend_of_the_app_served() -> None:
    throttle = HTTPThrottle("mounted", rate="2/min")  # no backend of its own
    backend = InMemoryBackend(namespace="mounted")
    sub = FastAPI()

    @sub.get("/ping", dependencies=[Depends(throttle)])
    async def ping() -> str:
        return "pong"

    app = FastAPI(lifespan=backend.lifespan)
    app.mount("/sub", sub)
    with TestClient(app) as http:
        statuses = [http.get("/sub/ping").status_code for _ in range(3)]
        keys = await backend.keys()
    assert statuses == [200, 200, 429]
    assert keys == ["mounted:mounted:{testclient}:GET:/sub/ping:fw"]


async def test_one_throttle_on_a_route_and_in_the_middleware() -> None:
    backend = InMemoryBackend(namespace="twice")
    throttle = HTTPThrottle("both", rate="3/min", backend=backend)
    app = FastAPI()
    app.add_middleware(
        ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(throttle, path="/api/")]
    )

    @app.get("/route", dependencies=[Depends(throttle)])
    async def route() -> dict[str, str]:
        return {}

    @app.get("/api/{name}")
    async def api(name: str) -> dict[str, str]:
        return {}

    async with client(app) as http:
        routed = [await http.get("/route") for _ in range(4)]
        guarded = [await http.get(f"/api/{n}") for n in range(4)]
    # Two buckets: the route's template, and the middleware's path pattern.
    assert [r.status_code for r in routed] == [200, 200, 200, 429]
    assert [r.status_code for r in guarded] == [200, 200, 200, 429]
    assert routed[0].headers["ratelimit"] == guarded[0].headers["ratelimit"] == '"both";r=2;t=60'
    assert sorted(await backend.keys()) == [
        "twice:both:{127.0.0.1}:GET:/api/:fw",
        "twice:both:{127.0.0.1}:GET:/route:fw",
    ]


# -- 5. a WebSocket chat: handshakes and messages ---------------------------------------------


def test_a_chat_limits_handshakes_and_messages(clock: ManualClock) -> None:
    backend = InMemoryBackend(namespace="chat", clock=clock)
    handshakes = WebSocketThrottle("chat:connect", rate="2/min", backend=backend)
    messages = WebSocketThrottle("chat:messages", rate="3/10s", backend=backend)
    app = FastAPI()

    @app.websocket("/rooms/{room}", dependencies=[Depends(handshakes)])
    async def room(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                await messages.hit(websocket)
                if not is_throttled(websocket):
                    await websocket.send_json({"room": room, "text": text})
        except WebSocketDisconnect:
            pass

    chat = TestClient(app)
    with chat.websocket_connect("/rooms/a") as ws:
        replies = []
        for n in range(4):
            ws.send_text(f"m{n}")
            replies.append(ws.receive_json())
        clock.advance(10)
        ws.send_text("later")
        after_the_wait = ws.receive_json()
    assert replies == [
        {"room": "a", "text": "m0"},
        {"room": "a", "text": "m1"},
        {"room": "a", "text": "m2"},
        {"type": "rate_limit", "error": "Too many messages", "retry_after": 10},
    ]
    assert after_the_wait == {"room": "a", "text": "later"}  # the socket stayed open

    with chat.websocket_connect("/rooms/b") as ws:  # the second handshake of the minute
        ws.send_text("hi")
        assert ws.receive_json() == {"room": "b", "text": "hi"}
    with pytest.raises(WebSocketDenialResponse) as refused, chat.websocket_connect("/rooms/c"):
        pass
    denial = refused.value  # an HTTP answer to the handshake, before any accept
    assert isinstance(denial, WebSocketDisconnect)
    assert denial.status_code == 429
    assert denial.json() == {"detail": "Too many requests. Retry in 50 seconds."}
    assert denial.headers["retry-after"] == "50"
    assert denial.headers["ratelimit"] == '"chat:connect";r=0;t=50'


# -- 6. testing one's own app with traffik.testing ---------------------------------------------


search = HTTPThrottle("journey:search", rate="2/min")  # the app's, at module level


def create_app(backend: InMemoryBackend) -> FastAPI:
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/search/{term}", dependencies=[Depends(search)])
    async def run_search(term: str) -> dict[str, str]:
        return {"term": term}

    return app


async def test_my_app_with_the_fixtures(traffik_backend: Any, traffik_clock: ManualClock) -> None:
    async with client(create_app(traffik_backend)) as http:
        assert await codes(http, "/search/a", 3) == [200, 200, 429]
        traffik_clock.advance(60)
        assert await codes(http, "/search/b", 3) == [200, 200, 429]


async def test_my_app_with_the_kit(traffik_backend: Any) -> None:
    async with client(create_app(traffik_backend)) as http:
        with throttle_disabled(search):
            assert await codes(http, "/search/a", 5) == [200] * 5
        with override_rate(search, "4/min"):
            assert await codes(http, "/search/a", 5) == [200] * 4 + [429]
        assert await codes(http, "/search/a", 1) == [429]  # 2/min again, 4 spent
        # `search` has no backend of its own (the app's lifespan gives it one): name it.
        forgotten = await reset_client(
            search, "127.0.0.1", path="/search/{term}", backend=traffik_backend
        )
        assert forgotten
        assert await codes(http, "/search/a", 3) == [200, 200, 429]


def test_my_app_under_the_test_client(traffik_backend: Any) -> None:
    with TestClient(create_app(traffik_backend)) as http:
        assert [http.get("/search/a").status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize(("on_error", "status"), [("allow", 200), ("throttle", 429)])
async def test_my_app_when_the_store_fails(
    traffik_backend: Any, on_error: str, status: int
) -> None:
    store = FailingBackend(traffik_backend)
    guarded = HTTPThrottle("journey:store", rate="10/min", backend=store, on_error=on_error)
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(guarded)])
    async def items() -> list[int]:
        return []

    async with client(app) as http:
        with store.failing(BackendError("store down")):
            answer = await http.get("/items")
        assert (await http.get("/items")).status_code == 200  # the store is back
    assert answer.status_code == status
    assert "ratelimit" not in answer.headers  # nothing claims r=0 during the outage


# -- 7. a newcomer's mistakes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ("5/fortnight", "rate '5/fortnight': unknown unit 'fortnight'; use ms, s, min, h, d"),
        ("5/mins", "unknown unit 'mins'; use ms, s, min, h, d"),
        ("5/week", "a week is '7d'"),
        ("5r/s", "limit '5r' is not a whole number"),
        ("5.5/s", "limit '5.5' is not a whole number"),
        ("5/60", "period '60' is not '[n]unit'"),
        ("5", "expected '<limit>/<period>' or '<limit> per <period>'"),
        ("0/min", "a limit of 0 admits nothing; write 'unlimited' for no limit"),
        ("-5/min", "limit '-5' is negative"),
        ("5/min,100/day", "several rates are joined by ';'"),
        ("", "rate '': empty"),
        (0, "rate=0; use a string like '100/min'"),
        (-5, "rate=-5; use a string like '100/min'"),
        (None, "rate=None; use a string like '100/min'"),
    ],
)
def test_rate_typos_fail_at_construction(rate: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        HTTPThrottle("typo", rate=rate)
    assert message in str(error.value)


@pytest.mark.parametrize("rate", ["5/minutes", "5 per minute", "5/Minute", "5 / min", "5/1 minute"])
def test_rate_spellings_that_work(rate: str) -> None:
    assert str(HTTPThrottle("spelling", rate=rate).rate) == "5/min"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cost": -1}, "cost=-1 is negative; use 0 (free) or more"),
        ({"cost": 1.5}, "cost=1.5 must be a whole number >= 0"),
        ({"cost": 5, "rate": "2/min"}, "cost=5 exceeds what rate '2/min'"),
        (
            {"on_error": "ignore"},
            "on_error='ignore' is not valid; use 'throttle', 'allow', 'raise'",
        ),
        ({"headers": "IETF"}, "use 'ietf', 'legacy', 'both', None"),
        (
            {"strategy": "fixed"},
            "strategy='fixed' is not a strategy; pass one such as TokenBucket()",
        ),
        (
            {"strategy": FixedWindow},
            "strategy=FixedWindow is a class; pass an instance: FixedWindow()",
        ),
        ({"strategy": TokenBucket}, "pass an instance: TokenBucket()"),
        ({"backend": InMemoryBackend}, "is not a ThrottleBackend or a backend URL"),
        ({"backend": "localhost:6379"}, "has no scheme; write it like 'memory://'"),
        ({"backend": "memcache://localhost"}, "no Traffik backend is registered as 'memcache'"),
        ({"identifier": "ip"}, "identifier='ip' must be a function called as (connection)"),
        ({"context": ["a"]}, "context=['a'] must be a mapping"),
    ],
)
def test_option_mistakes_fail_at_construction(options: dict[str, Any], message: str) -> None:
    options.setdefault("rate", "5/min")
    with pytest.raises(ConfigurationError) as error:
        HTTPThrottle("mistake", **options)
    assert message in str(error.value)


def test_a_backend_url_of_a_package_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from traffik import backends

    installed = {k: v for k, v in _plugins.discover().items() if not k.startswith("redis")}
    monkeypatch.setattr(backends, "discover", lambda: installed)
    with pytest.raises(BackendNotFoundError, match=r"pip install traffik-redis"):
        HTTPThrottle("needs-redis", rate="5/min", backend="redis://localhost:6379/0")


async def fastapi_limiter_callback(request: Any, response: Any, pexpire: int) -> None:
    """fastapi-limiter's `http_callback(request, response, pexpire)`, ported as is."""
    raise HTTPException(429, "Too Many Requests")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"identifier": lambda: "everyone"},
            "is called as (connection); it must take one positional argument, "
            "e.g. def identifier(connection): ...",
        ),
        (
            {"identifier": lambda request, context: "x"},
            "is called as (connection); it must take one positional argument",
        ),
        (
            {"handle_throttled": fastapi_limiter_callback},
            "is called as (connection, wait_ms, throttle, context)",
        ),
        (
            {"charge_when": lambda: True},
            "is called as (outcome); it must take one positional argument",
        ),
    ],
)
def test_callables_of_the_wrong_shape_fail_at_construction(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as error:
        HTTPThrottle("shapes", rate="5/min", **options)
    assert message in str(error.value)


def test_callables_of_every_right_shape_are_accepted() -> None:
    class ByHeader:
        def __call__(self, request: Request, *extra: Any) -> str:
            return request.headers.get("x-user", "")

    async def handler(connection: Any, wait_ms: float, *rest: Any) -> None: ...

    throttle = HTTPThrottle(
        "shapes:ok",
        rate="5/min",
        identifier=ByHeader(),
        handle_throttled=handler,
        charge_when=lambda outcome, *_: True,
    )
    throttle.update_identifier(get_remote_address)
    with pytest.raises(ConfigurationError, match=r"is called as \(connection\)"):
        throttle.update_identifier(lambda: "x")
    with pytest.raises(ConfigurationError, match=r"\(connection, wait_ms, throttle, context\)"):
        throttle.update_handle_throttled(lambda connection: None)


async def test_no_backend_anywhere_says_where_one_comes_from() -> None:
    throttle = HTTPThrottle("nowhere", rate="5/min")
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(throttle)])
    async def items() -> list[int]:
        return []

    async with client(app) as http:
        answer = await http.get("/items")
    assert answer.status_code == 500 and answer.text == "Internal Server Error"  # no traceback
    transport = httpx.ASGITransport(app=app)  # the server's log: the error, named
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with pytest.raises(ConfigurationError) as error:
            await http.get("/items")
    assert str(error.value) == (
        "HTTPThrottle('nowhere', rate='5/min') has no backend: pass backend=, use "
        "FastAPI(lifespan=backend.lifespan), or run inside `async with backend:`"
    )


@pytest.mark.parametrize("given", ["127.0.0.1", {"type": "http"}, 42])
async def test_hit_given_something_else_than_a_connection(given: Any, caplog: Any) -> None:
    throttle = HTTPThrottle("direct", rate="5/min", backend=InMemoryBackend())
    with pytest.raises(ConfigurationError) as error:
        await throttle.hit(given)
    assert (
        f"HTTPThrottle('direct', rate='5/min') was given {given!r}, not a connection: "
        "call it with the request or websocket it limits" in str(error.value)
    )
    assert "could not decide" not in caplog.text  # not a store failure: no on_error
    with pytest.raises(ConfigurationError, match="got no connection"):
        await throttle.hit()


async def test_forgetting_to_await_hit_is_flagged_by_python() -> None:
    throttle = HTTPThrottle("no-await", rate="1/min", backend=InMemoryBackend())
    app = FastAPI()

    @app.get("/items")
    async def items(request: Request) -> list[int]:
        throttle.hit(request)  # type: ignore[unused-coroutine]  # the mistake
        return []

    with pytest.warns(RuntimeWarning, match="coroutine 'Throttle.hit' was never awaited"):
        async with client(app) as http:
            statuses = await codes(http, "/items", 2)
        gc.collect()
    assert statuses == [200, 200]  # nothing counted: the warning is the only sign


async def test_two_throttles_with_one_uid_share_their_counters() -> None:
    """A uid built again (a fresh app per test builds its throttles again) replaces the old
    registration instead of raising, and the two count in the same buckets."""
    registry = ThrottleRegistry()
    backend = InMemoryBackend()
    first = HTTPThrottle("dup", rate="3/min", backend=backend, registry=registry)
    second = HTTPThrottle("dup", rate="3/min", backend=backend, registry=registry)
    assert registry.get_throttle("dup") is second
    app = FastAPI()

    @app.get("/a", dependencies=[Depends(first)])
    async def a() -> list[int]:
        return []

    @app.get("/b", dependencies=[Depends(second)])
    async def b() -> list[int]:
        return []

    @app.get("/both", dependencies=[Depends(first), Depends(second)])
    async def both() -> list[int]:
        return []

    async with client(app) as http:
        assert await codes(http, "/a", 2) == [200, 200]
        assert await codes(http, "/b", 4) == [200, 200, 200, 429]  # route /b: its own bucket
        assert await codes(http, "/both", 2) == [200, 429]  # two units a request, one bucket


async def test_the_starlette_decorator_on_a_fastapi_route_says_which_to_use() -> None:
    from traffik import throttled  # Starlette's: it looks for the Request among the arguments

    throttle = HTTPThrottle("wrong-decorator", rate="2/min", backend=InMemoryBackend())
    app = FastAPI()

    @app.get("/items")
    @throttled(throttle)
    async def items(page: int = 0) -> list[int]:
        return []

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with pytest.raises(
            TypeError, match=r"for FastAPI endpoints use traffik\.fastapi\.throttled"
        ):
            await http.get("/items")


async def test_depends_as_a_parameter_or_in_dependencies() -> None:
    throttle = HTTPThrottle("spellings", rate="2/min", backend=InMemoryBackend())
    app = FastAPI()

    @app.get("/param")
    async def param(request: Request = Depends(throttle)) -> dict[str, str]:
        return {"path": request.url.path}  # the throttle gives the Request back

    @app.get("/list", dependencies=[Depends(throttle)])
    async def listed() -> dict[str, str]:
        return {}

    async with client(app) as http:
        first = await http.get("/param")
        assert await codes(http, "/param", 2) == [200, 429]
        assert await codes(http, "/list", 3) == [200, 200, 429]
    assert first.json() == {"path": "/param"}
    assert first.headers["ratelimit"] == '"spellings";r=1;t=60'


# -- scaling out: two instances of the app on one Redis -----------------------------------------


@pytest.mark.redis
async def test_two_instances_share_one_limit_on_redis(redis_url: str) -> None:
    """Two workers (two apps, two backend objects, as two processes would have) on one Redis:
    one budget per client; one worker shutting down resets nothing."""
    from traffik.backends.redis import RedisBackend

    namespace = "journey-scale"

    def worker() -> tuple[FastAPI, RedisBackend]:
        backend = RedisBackend(redis_url, namespace=namespace)
        throttle = HTTPThrottle("api:items", rate="5/h", backend=backend)
        app = FastAPI(lifespan=backend.lifespan)

        @app.get("/items", dependencies=[Depends(throttle)])
        async def items() -> list[int]:
            return []

        return app, backend

    (one, _), (two, _) = worker(), worker()
    cleaner = RedisBackend(redis_url, namespace=namespace)
    try:
        async with one.router.lifespan_context(one), client(one) as a:
            async with two.router.lifespan_context(two), client(two) as b:
                answers = [await (a if n % 2 else b).get("/items") for n in range(6)]
            # `two` shut down (its lifespan ended): the counters it shared stay.
            assert (await a.get("/items")).status_code == 429
        assert [r.status_code for r in answers] == [200] * 5 + [429]
        assert answers[0].headers["ratelimit-policy"] == '"api:items";q=5;w=3600'
        assert 3500 < int(answers[-1].headers["retry-after"]) <= 3600
    finally:
        await cleaner.reset()
        await cleaner.close()


@pytest.mark.redis
async def test_a_backend_given_by_url(redis_url: str) -> None:
    throttle = HTTPThrottle(
        "by-url", rate="2/h", backend=f"{redis_url}?namespace=journey-url&command_timeout=2"
    )
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(throttle)])
    async def items() -> list[int]:
        return []

    backend = throttle.backend
    try:
        async with client(app) as http:
            assert await codes(http, "/items", 3) == [200, 200, 429]
        assert await backend.scan("") == ["journey-url:by-url:{127.0.0.1}:GET:/items:fw"]
    finally:
        await backend.reset()
        await backend.close()


async def test_an_admin_endpoint_resets_a_client_by_address_under_a_server() -> None:
    """`throttle.reset(client_ip, path=...)` in an endpoint, for a throttle with no
    `backend=` in an app whose lifespan set up the backend. A server (uvicorn) runs the
    lifespan in a task of its own, so the request's task never sees the context it entered:
    the throttle finds the backend of the app being served (it answered 500, "has no
    backend", where the same app tested in one task passed)."""
    import asyncio
    import contextvars

    from fastapi import FastAPI

    backend = InMemoryBackend(namespace="admin")
    throttle = HTTPThrottle("admin-api", rate="2/min")
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/items", dependencies=[Depends(throttle)])
    async def items() -> list[int]:
        return []

    @app.post("/unblock/{ip}")
    async def unblock(ip: str) -> dict[str, bool]:
        return {"reset": await throttle.reset(ip, path="/items")}

    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:  # (the server's lifespan task)
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    async def requests() -> list[Any]:  # (a request task: a context of its own)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            codes = [(await client.get("/items")).status_code for _ in range(3)]
            unblocked = await client.post("/unblock/10.0.0.7")
            after = await client.get("/items")
            return [codes, unblocked.status_code, unblocked.json(), after.status_code]

    served = asyncio.create_task(lifespan())
    await started.wait()
    # (a fresh, empty context, as a server's request task has: `create_task(context=)` is
    # Python 3.11's)
    answers = await contextvars.Context().run(asyncio.ensure_future, requests())
    stop.set()
    await served
    assert answers == [[200, 200, 429], 200, {"reset": True}, 200]


async def test_a_reset_by_address_with_two_apps_running_says_to_choose() -> None:
    """Two apps of one process run their lifespans on two backends: a throttle with no
    `backend=`, asked without a request, cannot know which; the error names both."""
    import asyncio
    import contextvars

    from fastapi import FastAPI

    first, second = InMemoryBackend(namespace="first"), InMemoryBackend(namespace="second")
    throttle = HTTPThrottle("two-apps", rate="2/min")
    apps = [FastAPI(lifespan=first.lifespan), FastAPI(lifespan=second.lifespan)]

    def in_a_request_task() -> Any:  # (a fresh context: the lifespans' are not its own)
        return contextvars.Context().run(
            asyncio.ensure_future, throttle.reset("10.0.0.7", path="/items")
        )

    async with apps[0].router.lifespan_context(apps[0]):
        assert await in_a_request_task() is False  # (the one running: nothing to forget)
        async with apps[1].router.lifespan_context(apps[1]):
            with pytest.raises(ConfigurationError, match="several") as raised:
                await in_a_request_task()
    assert "first" in str(raised.value) and "second" in str(raised.value)
