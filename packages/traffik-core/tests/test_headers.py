"""`Header`, `Headers` and a throttle's headers on responses (spec: integration.md §9.1)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, Response
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle, InMemoryBackend, ManualClock, WebSocketThrottle
from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.headers import (
    DEFAULT_HEADERS_ALWAYS,
    DEFAULT_HEADERS_THROTTLED,
    IETF_HEADERS,
    LEGACY_HEADERS,
    LONGEST_WAIT_MS,
    Header,
    Headers,
    RateLimitField,
    header_setting,
    resolve_headers,
    whole_seconds,
)
from traffik.rates import Rate, parse_rates
from traffik.response_headers import HeaderPlan
from traffik.typing import StrategyStat

pytestmark = pytest.mark.anyio

RATE = Rate.parse("3/min")


def stat(remaining: float, wait_ms: float = 0, reset_ms: float = 0) -> StrategyStat:
    return StrategyStat("api:{c}:GET:/", RATE, remaining, wait_ms, {"reset_ms": reset_ms})


def tier_header(connection: Any, stat: StrategyStat, context: Any) -> str:
    return f"{context['tier']}:{stat.hits_remaining}"


def low(connection: Any, stat: StrategyStat, context: Any) -> bool:
    return bool(stat.hits_remaining < 2)


def spent(connection: Any, stat: StrategyStat, context: Any) -> bool:
    return bool(stat.hits_remaining < 1)


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def app_with(throttle: HTTPThrottle, body: Any = None) -> FastAPI:
    app = FastAPI()

    @app.get("/items")
    async def items(request: Request = Depends(throttle)) -> Any:
        return await body(request) if body else {}

    return app


# -- Header --------------------------------------------------------------------------------


def test_header_conditions() -> None:
    static = Header("v", when="always")
    assert static.is_static and static.check(None, stat(3))
    default = Header("v")  # traffik 1.2: "throttled" unless told otherwise
    assert not default.is_static
    assert not default.check(None, stat(1)) and default.check(None, stat(0))
    predicate = Header("v", when=low)
    assert predicate.check(None, stat(1)) and not predicate.check(None, stat(2))
    assert default.when("always") == static and default.always == static
    assert static.throttled == default
    assert default.condition == "throttled"  # the copy left the original alone


def test_header_builders_resolve_from_the_stat() -> None:
    throttled = stat(0, wait_ms=1500)
    assert Header.LIMIT(when="always").resolve(None, throttled) == "3"
    assert Header.REMAINING(when="always").resolve(None, throttled) == "0"
    assert Header.RESET_MILLISECONDS(when="always").resolve(None, throttled) == "1500"
    assert Header.RESET_SECONDS(when="always").resolve(None, throttled) == "2"
    assert Header.RESET_SECONDS(when="always").resolve(None, stat(2)) == "0"
    with pytest.raises(TypeError):
        Header.LIMIT("always")  # type: ignore[misc]  # `when` is keyword-only


def test_headers_are_immutable_hashable_and_checked() -> None:
    header = Header("v", when="always")
    with pytest.raises(AttributeError, match="immutable"):
        header._value = "w"  # type: ignore[misc]
    assert len({Header("v", when="always"), header, Header("v")}) == 2
    with pytest.raises(ConfigurationError, match="when='sometimes'"):
        Header("v", when="sometimes")
    with pytest.raises(ConfigurationError, match="string or a function"):
        Header(42)  # type: ignore[arg-type]


def test_async_resolvers_and_predicates_are_refused_when_built() -> None:
    # A header is written while the response is built, without awaiting: an async resolver
    # wrote a coroutine (a 500 per request), an async predicate was always true.
    async def plan(connection: Any, stat: Any, context: Any) -> str:
        return "gold"

    async def low(connection: Any, stat: Any, context: Any) -> bool:
        return False

    class Resolver:
        async def __call__(self, connection: Any, stat: Any, context: Any) -> str:
            return "gold"

    for value in (plan, Resolver()):
        with pytest.raises(ConfigurationError, match="sync function"):
            Header(value, when="always")
    with pytest.raises(ConfigurationError, match=r"when=.*sync function"):
        Header("v", when=low)
    with pytest.raises(ConfigurationError, match="sync function"):
        HTTPThrottle("async-header", "1/min", headers={"X-Plan": Header.LIMIT(when=low)})


def test_preset_fields_from_a_stat() -> None:
    allowed, throttled = stat(2, reset_ms=40_500), stat(0, wait_ms=59_001)
    assert RateLimitField("policy")(None, allowed) == '"api";q=3;w=60'
    assert RateLimitField("ratelimit")(None, allowed) == '"api";r=2;t=41'
    assert RateLimitField("ratelimit")(None, throttled) == '"api";r=0;t=60'
    assert RateLimitField("remaining")(None, allowed) == "2"
    assert RateLimitField("reset")(None, throttled) == "60"
    assert RateLimitField("limit")(None, allowed) == "3"
    unlimited = StrategyStat("api", Rate(), float("inf"), 0)
    assert RateLimitField("policy")(None, unlimited) is None
    with pytest.raises(ConfigurationError, match="'size'"):
        RateLimitField("size")


# -- Headers -------------------------------------------------------------------------------


def test_headers_mapping() -> None:
    headers = Headers({"X-A": "1", "X-B": Header("2", when="always"), "X-C": Header("3")})
    assert headers.raw_items() == [("X-A", "1"), ("X-B", "2"), ("X-C", Header("3"))]
    assert headers["X-A"] == Header("1", when="always")
    assert not headers.is_static and len(headers) == 3 and "X-C" in headers
    del headers["X-C"]
    assert headers.is_static and bool(headers) and not Headers()
    headers["X-D"] = Header.LIMIT(when="always")
    assert list(headers) == ["X-A", "X-B", "X-D"]
    with pytest.raises(ConfigurationError, match="use a string or a Header"):
        headers["X-E"] = 5  # type: ignore[assignment]


def test_merging_right_side_wins_and_leaves_operands_alone() -> None:
    left = Headers({"X-A": "1", "X-B": "2"})
    merged = left | {"X-B": "3", "X-C": "4"}
    assert dict(merged.raw_items()) == {"X-A": "1", "X-B": "3", "X-C": "4"}
    assert dict(left.raw_items()) == {"X-A": "1", "X-B": "2"}
    reversed_ = {"X-A": "0", "X-Z": "9"} | left
    assert isinstance(reversed_, Headers) and reversed_.raw_items()[0] == ("X-A", "1")
    left |= {"X-A": "5"}
    assert left["X-A"].value == "5"
    assert left.copy() == left and left.copy() is not left


def test_headers_pickle_and_copy() -> None:
    for headers in (
        DEFAULT_HEADERS_ALWAYS,
        DEFAULT_HEADERS_THROTTLED,
        IETF_HEADERS,
        LEGACY_HEADERS,
    ):
        assert pickle.loads(pickle.dumps(headers)) == headers
        assert copy.deepcopy(headers) == headers
    custom = Headers({"X-Tier": Header(tier_header, when=low)})
    assert pickle.loads(pickle.dumps(custom)) == custom
    assert pickle.loads(pickle.dumps(Header.DISABLE)) == Header.DISABLE


def test_traffik12_presets() -> None:
    assert [(name, header.condition) for name, header in DEFAULT_HEADERS_ALWAYS.items()] == [
        ("X-RateLimit-Limit", "always"),
        ("X-RateLimit-Remaining", "always"),
        ("Retry-After", "always"),
    ]
    assert {header.condition for header in DEFAULT_HEADERS_THROTTLED.values()} == {"throttled"}


# -- on a throttle -------------------------------------------------------------------------


async def test_get_headers_resolves_from_the_clients_state() -> None:
    throttle = HTTPThrottle(
        "hdr-get", rate="3/min", backend=InMemoryBackend(), headers=DEFAULT_HEADERS_THROTTLED
    )
    seen: list[dict[str, str]] = []
    app = app_with(throttle)

    @app.get("/peek")
    async def peek(request: Request) -> dict[str, str]:
        seen.append(await throttle.get_headers(request))
        seen.append(await throttle.get_headers(request, headers=DEFAULT_HEADERS_ALWAYS))
        return {}

    async with client(app) as http:
        for _ in range(3):
            await http.get("/items")
        await http.get("/peek")
    # `/peek` is its own route: the client has its whole budget there.
    assert seen[0] == {}
    assert seen[1] == {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "3", "Retry-After": "0"}


async def test_get_headers_with_overrides_stat_and_disable() -> None:
    throttle = HTTPThrottle(
        "hdr-static",
        rate="3/min",
        backend=InMemoryBackend(),
        headers={"X-Service": "api", "X-Region": "eu"},
    )
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    # All static: no state is read, and DISABLE removes a header instead of being written.
    assert await throttle.get_headers(request) == {"X-Service": "api", "X-Region": "eu"}
    assert await throttle.get_headers(request, headers={"X-Region": Header.DISABLE}) == {
        "X-Service": "api"
    }
    given = stat(0, wait_ms=2500)
    resolved = await throttle.get_headers(
        request, headers={"Retry-After": Header.RESET_SECONDS(when="throttled")}, stat=given
    )
    assert resolved == {"X-Service": "api", "X-Region": "eu", "Retry-After": "3"}


async def test_set_headers_writes_them() -> None:
    throttle = HTTPThrottle("hdr-set", rate="3/min", backend=InMemoryBackend(), headers=None)
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    response = PlainTextResponse("ok", headers={"X-Tier": "old"})
    await throttle.set_headers(
        response, request, headers={"X-Tier": "new", "X-Limit": Header.LIMIT(when="always")}
    )
    assert response.headers.getlist("x-tier") == ["new"]
    assert response.headers["x-limit"] == "3"


async def test_a_mapping_is_written_on_allowed_responses_and_429s() -> None:
    throttle = HTTPThrottle(
        "hdr-auto",
        rate="2/min",
        backend=InMemoryBackend(),
        context={"tier": "free"},
        headers={
            "X-Service": "api",
            "X-Tier": Header(tier_header, when=spent),
            "X-Wait": Header.RESET_SECONDS(when="throttled"),
        },
    )
    async with client(app_with(throttle)) as http:
        first, second, third = [await http.get("/items") for _ in range(3)]
    assert first.headers["x-service"] == "api"
    assert "x-tier" not in first.headers and "x-wait" not in first.headers
    # (the last allowed response: no units left, so the wait is until the limit is whole)
    assert second.headers["x-tier"] == "free:0" and second.headers["x-wait"] == "60"
    assert third.status_code == 429
    assert (third.headers["x-service"], third.headers["x-tier"]) == ("api", "free:0")
    assert third.headers["x-wait"] == third.headers["retry-after"] == "60"
    assert not [name for name in first.headers if name.startswith("ratelimit")]


async def test_presets_and_mappings_combine() -> None:
    throttle = HTTPThrottle(
        "hdr-mix", rate="2/min", backend=InMemoryBackend(), headers=IETF_HEADERS | {"X-Svc": "a"}
    )
    async with client(app_with(throttle)) as http:
        response = await http.get("/items")
    assert response.headers["ratelimit-policy"] == '"hdr-mix";q=2;w=60'
    assert response.headers["ratelimit"] == '"hdr-mix";r=1;t=60'
    assert response.headers["x-svc"] == "a"


async def test_a_header_for_the_on_error_answer_is_only_a_string() -> None:
    from traffik.testing import FailingBackend

    backend = FailingBackend(InMemoryBackend())
    backend.fail()
    throttle = HTTPThrottle(
        "hdr-error",
        rate="2/min",
        backend=backend,
        on_error="allow",
        headers=LEGACY_HEADERS | {"X-Svc": "a", "X-Left": Header.REMAINING(when="always")},
    )
    async with client(app_with(throttle)) as http:
        response = await http.get("/items")
    # The policy answered: nothing is known of the quota, so only the plain string is written.
    assert response.status_code == 200 and response.headers["x-svc"] == "a"
    assert not [name for name in response.headers if name.startswith("x-ratelimit")]
    assert "x-left" not in response.headers


async def test_update_headers_and_a_rate_callable() -> None:
    def rate(connection: Any, context: Any) -> str:
        return "5/min"

    throttle = HTTPThrottle("hdr-update", rate=rate, backend=InMemoryBackend(), headers="legacy")
    async with client(app_with(throttle)) as http:
        legacy = await http.get("/items")
        await throttle.update_headers({"X-Left": Header.REMAINING(when="always")})
        custom = await http.get("/items")
        throttle.update_headers(None)
        bare = await http.get("/items")
    assert legacy.headers["x-ratelimit-limit"] == "5"
    assert custom.headers["x-left"] == "3" and "x-ratelimit-limit" not in custom.headers
    assert not [name for name in bare.headers if name.startswith(("x-left", "x-ratelimit"))]


async def test_a_starlette_endpoint_gets_a_mappings_headers() -> None:
    from traffik import throttled

    throttle = HTTPThrottle(
        "hdr-starlette", rate="2/min", backend=InMemoryBackend(), headers={"X-Svc": "a"}
    )

    @throttled(throttle)
    async def homepage(request: Request) -> Response:
        return PlainTextResponse("ok")

    async with client(Starlette(routes=[Route("/", homepage)])) as http:
        response = await http.get("/")
    assert response.headers["x-svc"] == "a"


def test_bad_header_settings_fail_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="headers=42"):
        HTTPThrottle("hdr-bad", rate="1/min", headers=42)
    with pytest.raises(ConfigurationError, match="use a string or a Header"):
        HTTPThrottle("hdr-bad", rate="1/min", headers={"X-A": 1})
    assert WebSocketThrottle("hdr-ws", rate="1/min", headers={}).headers is None


async def test_the_ietf_preset_on_demand_and_when_throttled_only() -> None:
    throttle = HTTPThrottle(
        "api:v1",
        rate="3/min",
        backend=InMemoryBackend(),
        headers=IETF_HEADERS | {"X-Policy": Header(RateLimitField("policy"))},
    )
    seen: list[dict[str, str]] = []

    async def body(request: Request) -> dict[str, str]:
        seen.append(await throttle.get_headers(request))
        return {}

    async with client(app_with(throttle, body)) as http:
        responses = [await http.get("/items") for _ in range(3)]
    # The policy is named after the uid, ':' and all, whether encoded ahead or resolved.
    assert responses[0].headers["ratelimit-policy"] == '"api:v1";q=3;w=60'
    assert seen[0]["RateLimit-Policy"] == '"api:v1";q=3;w=60'
    assert seen[0]["RateLimit"] == '"api:v1";r=2;t=60'
    assert "x-policy" not in responses[1].headers  # a "throttled" copy of a preset field
    assert responses[2].headers["x-policy"] == '"api:v1";q=3;w=60'


# -- any wait a strategy may answer ----------------------------------------------------------


WEIRD_WAITS = [float("inf"), 1e300, float(2**60), float("nan"), -5.0, float("-inf")]


@pytest.mark.parametrize("wait", WEIRD_WAITS)
def test_headers_are_written_for_any_wait(wait: float) -> None:
    longest = str(LONGEST_WAIT_MS // 1000)
    told = longest if wait > 0 else "1"  # a refused request waits at least a second
    plan = HeaderPlan("api", (RATE,), header_setting("both", "t"))
    refused = dict(plan.text(Decision(False, wait, 0, wait, 3), None, None, None, None))
    assert refused["ratelimit"] == f'"api";r=0;t={told}'
    assert refused["x-ratelimit-reset"] == told
    told = told if wait > 0 else "0"  # an allowed request's reset: 0 when none
    allowed: list[tuple[bytes, bytes]] = []
    plan.admitted(Decision(True, 0, 2, wait, 3), allowed)
    assert (b"ratelimit", f'"api";r=2;t={told}'.encode()) in allowed
    assert (b"x-ratelimit-reset", told.encode()) in allowed
    # traffik 1.2's resolvers too: from a stat, whatever its wait.
    throttled = StrategyStat("api:{c}:GET:/", RATE, 0, wait, {"reset_ms": wait})
    seconds = Header.RESET_SECONDS(when="always").resolve(None, throttled)
    assert seconds == (longest if wait > 0 else "0")
    assert RateLimitField("reset")(None, throttled) == (longest if wait > 0 else "0")
    millis = Header.RESET_MILLISECONDS(when="always").resolve(None, throttled)
    assert millis == (str(LONGEST_WAIT_MS) if wait > 0 else "0")


def test_whole_seconds_is_bounded() -> None:
    assert [whole_seconds(ms) for ms in (0, 1, 999, 1000, 1001)] == [0, 1, 1, 1, 2]
    assert whole_seconds(0, 1) == whole_seconds(float("nan"), 1) == 1
    assert whole_seconds(float(LONGEST_WAIT_MS)) == LONGEST_WAIT_MS // 1000 == 9_007_199_254_740
    assert len(str(whole_seconds(1e300))) == 13


# -- the legacy fields of several rates speak of one rate ------------------------------------


def legacy(response: httpx.Response) -> tuple[str, str, str]:
    headers = response.headers
    return (
        headers["x-ratelimit-limit"],
        headers["x-ratelimit-remaining"],
        headers["x-ratelimit-reset"],
    )


async def test_legacy_fields_of_several_rates_all_speak_of_the_binding_rate() -> None:
    clock = ManualClock(1_700_000_000.0)
    throttle = HTTPThrottle(
        "multi", rate="2/s;3/min", backend=InMemoryBackend(clock=clock), headers="both"
    )
    seen = []
    async with client(app_with(throttle)) as http:
        seen.append(await http.get("/items"))  # 2/s: 1 left (binds); 3/min: 2 left
        seen.append(await http.get("/items"))  # 2/s: 0 left (binds); 3/min: 1 left
        seen.append(await http.get("/items"))  # refused by 2/s, for the rest of its second
        clock.advance(1.5)
        seen.append(await http.get("/items"))  # 2/s: 1 left; 3/min: 0 left (binds)
        clock.advance(1.5)
        seen.append(await http.get("/items"))  # refused by 3/min, for about 57 s
    assert [r.status_code for r in seen] == [200, 200, 429, 200, 429]
    assert seen[0].headers["ratelimit"] == '"multi:2/s";r=1;t=1, "multi:3/min";r=2;t=60'
    assert legacy(seen[0]) == ("2", "1", "1")
    assert legacy(seen[1]) == ("2", "0", "1")
    assert legacy(seen[2]) == ("2", "0", "1") and seen[2].headers["retry-after"] == "1"
    assert seen[3].headers["ratelimit"] == '"multi:2/s";r=1;t=1, "multi:3/min";r=0;t=59'
    assert legacy(seen[3]) == ("3", "0", "59")
    assert legacy(seen[4]) == ("3", "0", "57") and seen[4].headers["retry-after"] == "57"


async def test_traffik12_presets_of_several_rates_speak_of_the_binding_rate() -> None:
    clock = ManualClock(1_700_000_000.0)
    throttle = HTTPThrottle(
        "multi12",
        rate="5/min;2/s",
        backend=InMemoryBackend(clock=clock),
        headers=DEFAULT_HEADERS_ALWAYS,
        min_wait_period=3_000,
    )
    async with client(app_with(throttle)) as http:
        first, second, third = [await http.get("/items") for _ in range(3)]
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == (
        "2",
        "1",
    )
    assert second.headers["x-ratelimit-remaining"] == "0"
    assert third.status_code == 429
    assert (third.headers["x-ratelimit-limit"], third.headers["retry-after"]) == ("2", "3")


def test_a_plan_of_several_rates_names_the_binding_rate_in_its_stat() -> None:
    from traffik.strategies.steps import combine

    rates = parse_rates("2/s;3/min")
    plan = HeaderPlan("api", rates, header_setting("legacy", "t"))
    parts = [Decision(True, 0, 1, 1000, 2), Decision(True, 0, 0, 60_000, 3)]
    stat_ = plan.stat(combine(parts), "api:k")
    assert stat_ is not None
    assert (stat_.rate, stat_.hits_remaining, stat_.metadata) == (
        rates[1],
        0,
        {"reset_ms": 60_000},
    )
    raw = dict(plan.raw(combine(parts)))
    assert (raw[b"x-ratelimit-limit"], raw[b"x-ratelimit-remaining"]) == (b"3", b"0")
    assert raw[b"x-ratelimit-reset"] == b"60"


# -- Hostile values --------------------------------------------------------------------------


def echo(connection: Any, stat: StrategyStat, context: Any) -> str:
    return str(connection.headers.get("x-echo", ""))


async def raw_get(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, list[Any]]:
    """GET /items straight through ASGI: no client library cleans the request's headers."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items",
        "raw_path": b"/items",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), *headers],
        "client": ("203.0.113.7", 5000),
        "server": ("test", 80),
    }
    started: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            started.append(message)

    await app(scope, receive, send)
    return started[0]["status"], list(started[0]["headers"])


@pytest.mark.parametrize(
    ("sent", "written"),
    [
        (b"a\r\nSet-Cookie: session=stolen", b"a__Set-Cookie: session=stolen"),
        (b"a\nb\rc\x00d\x7fe", b"a_b_c_d_e"),
        (b"tab\tand caf\xe9", b"tab\tand caf\xe9"),  # HTAB and obs-text are valid field values
    ],
)
async def test_a_resolved_value_never_writes_a_header_line_of_its_own(
    sent: bytes, written: bytes
) -> None:
    throttle = HTTPThrottle(
        "echo",
        rate="1/min",
        backend=InMemoryBackend(),
        headers={"X-Echo": Header(echo, when="always")},
    )
    app = app_with(throttle)
    answers = [await raw_get(app, [(b"x-echo", sent)]) for _ in range(2)]
    assert [status for status, _ in answers] == [200, 429]
    for _, headers in answers:
        assert [value for name, value in headers if name.lower() == b"x-echo"] == [written]


async def test_a_resolved_value_outside_latin_1_is_written_not_a_500() -> None:
    throttle = HTTPThrottle(
        "wide",
        rate="1/min",
        backend=InMemoryBackend(),
        headers={"X-Plan": Header(lambda c, s, ctx: "caf\xe9 \u2713", when="always")},
    )
    async with client(app_with(throttle)) as http:
        responses = [await http.get("/items") for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 429]
    assert all(r.headers.get("x-plan") == "caf\xe9 _" for r in responses)


@pytest.mark.parametrize(
    "value",
    ["a\r\nSet-Cookie: x=1", "\u2713", "a\x00b"],
)
def test_unsafe_characters_in_a_resolved_value_are_replaced(value: str) -> None:
    items = Headers({"X-Who": Header(lambda c, s, ctx: value, when="always")}).raw_items()
    text = resolve_headers(items, None, stat(1))["X-Who"]
    text.encode("latin-1")
    assert "\r" not in text and "\n" not in text and "\x00" not in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-A\r\nSet-Cookie", "v"),
        ("X A", "v"),
        ("X-\u2713", "v"),
        ("X-A", "v\r\nSet-Cookie: x=1"),
        ("X-A", "\u2713"),
    ],
)
def test_a_header_that_cannot_be_written_is_refused_at_construction(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match="header"):
        Headers({name: value})
    with pytest.raises(ConfigurationError):
        HTTPThrottle("bad-header", rate="1/min", headers={name: value})


def test_a_value_that_cannot_be_written_is_named_where_it_was_given() -> None:
    # `Header("v\r\n...")` was told `headers['Header']=...`, as if a header were named so.
    with pytest.raises(ConfigurationError, match=r"^Header\('v\\r\\nx'\): a header value holds"):
        Header("v\r\nx", when="always")
    with pytest.raises(ConfigurationError, match=r"^headers\['X-A'\]='v\\r\\nx': a header value"):
        Headers({"X-A": "v\r\nx"})


@pytest.mark.parametrize("headers", ["ietf", "legacy"])
async def test_a_tier_s_limit_is_the_policy_its_client_is_told(headers: str) -> None:
    """A `TieredRate` client is told its tier's quota (`q`, `X-RateLimit-Limit`), not the base
    rate's: a premium client at 5x of `2/min` saw `q=2` beside `r=9`."""
    from traffik.strategies import TieredRate

    async def identifier(connection: Any) -> str:
        return f"tier:{connection.headers['x-tier']}:{connection.headers['x-user']}"

    throttle = HTTPThrottle(
        "tiers",
        rate="2/min",
        backend=InMemoryBackend(),
        strategy=TieredRate(tier_multipliers={"free": 1, "premium": 5}),
        identifier=identifier,
        headers=headers,
    )
    app = FastAPI()

    @app.get("/")
    async def route(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        premium = await http.get("/", headers={"x-tier": "premium", "x-user": "a"})
        free = await http.get("/", headers={"x-tier": "free", "x-user": "b"})
        for _ in range(9):
            last = await http.get("/", headers={"x-tier": "premium", "x-user": "a"})
        refused = await http.get("/", headers={"x-tier": "premium", "x-user": "a"})
    assert last.status_code == 200 and refused.status_code == 429
    if headers == "ietf":
        assert premium.headers["ratelimit-policy"] == '"tiers";q=10;w=60'
        assert premium.headers["ratelimit"].startswith('"tiers";r=9;')
        assert free.headers["ratelimit-policy"] == '"tiers";q=2;w=60'
        assert refused.headers["ratelimit-policy"] == '"tiers";q=10;w=60'
    else:
        assert premium.headers["x-ratelimit-limit"] == "10"
        assert premium.headers["x-ratelimit-remaining"] == "9"
        assert free.headers["x-ratelimit-limit"] == "2"
        assert refused.headers["x-ratelimit-limit"] == "10"


def test_a_plan_of_several_rates_tells_each_rate_s_own_limit() -> None:
    """With several rates, each policy's quota is the limit its own part was decided under."""
    plan = HeaderPlan("api", parse_rates("2/s;100/min"), header_setting("ietf", "t"))
    parts = [Decision(True, 0, 9, 1000, 10), Decision(True, 0, 499, 60000, 500)]
    from traffik.strategies.steps import combine

    raw = dict(plan.raw(combine(parts)))
    assert raw[b"ratelimit-policy"] == b'"api:2/s";q=10;w=1, "api:100/min";q=500;w=60'


@pytest.mark.parametrize("preset", ["ietf", "legacy", "both"])
def test_an_admitted_decision_of_several_rates_writes_what_raw_writes(preset: str) -> None:
    """`admitted`'s shortcut for several rates writes exactly `raw`'s headers, for any
    parts: whole units or not, a tier's own limit, resets of every size."""
    import random

    from traffik.strategies.steps import combine

    rates = parse_rates("2/s;100/min;5000/d")
    plan = HeaderPlan("api", rates, header_setting(preset, "t"))
    draw = random.Random(preset)
    lefts: list[Any] = [0, 1, 9, 499, 4999, 2.5, -1, None, float("inf")]
    resets: list[Any] = [0, 1, 999, 1000, 1001, 60_000, 86_400_000, 2.5, float(LONGEST_WAIT_MS)]
    for _ in range(500):
        parts = [
            Decision(
                True,
                0,
                draw.choice(lefts),
                draw.choice(resets),
                rate.limit if draw.random() < 0.9 else rate.limit * 2,
            )
            for rate in rates
        ]
        decision = combine(parts)
        written: list[tuple[bytes, bytes]] = []
        plan.admitted(decision, written)
        assert written == plan.raw(decision), parts


@pytest.mark.parametrize("order", ["loose first", "tight first"])
@pytest.mark.parametrize("attached", ["dependencies", "throttled", "middleware"])
@pytest.mark.anyio
async def test_two_throttles_send_the_single_valued_fields_once(attached: str, order: str) -> None:
    # `X-RateLimit-*` fields hold one value each: two throttles on one route (each with
    # headers="legacy") send them once, those of the throttle with fewer units left; the
    # IETF fields are lists, so each throttle's is sent.
    from traffik.fastapi import throttled
    from traffik.middleware import ThrottleMiddleware

    backend = InMemoryBackend()
    loose = HTTPThrottle("loose", rate="10/min", backend=backend, headers="both")
    tight = HTTPThrottle("tight", rate="3/min", backend=backend, headers="both")
    pair = (loose, tight) if order == "loose first" else (tight, loose)
    app = FastAPI()
    if attached == "dependencies":

        @app.get("/x", dependencies=[Depends(pair[0]), Depends(pair[1])])
        async def x() -> dict[str, bool]:
            return {"ok": True}

    elif attached == "throttled":

        @app.get("/x")
        @throttled(*pair)
        async def x() -> dict[str, bool]:
            return {"ok": True}

    else:
        app.add_middleware(ThrottleMiddleware, middleware_throttles=list(pair))

        @app.get("/x")
        async def x() -> dict[str, bool]:
            return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = await client.get("/x")
        second = await client.get("/x")
    assert first.status_code == second.status_code == 200
    for response, left in ((first, "2"), (second, "1")):
        fields = response.headers
        assert fields.get_list("x-ratelimit-limit") == ["3"]
        assert fields.get_list("x-ratelimit-remaining") == [left]
        assert len(fields.get_list("x-ratelimit-reset")) == 1
        assert sorted(fields.get_list("ratelimit-policy")) == [
            '"loose";q=10;w=60',
            '"tight";q=3;w=60',
        ]
