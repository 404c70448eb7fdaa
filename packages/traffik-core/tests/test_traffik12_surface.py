"""traffik 1.2's public surface: every name its code imports resolves, and every object builds
with the arguments traffik 1.2 took (spec: integration.md §0-§1, core.md §3, §5, §11)."""

from __future__ import annotations

import asyncio
import importlib
import math
import subprocess
import sys
import time
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.websockets import WebSocket

import traffik
from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.locks import LocalLockTable
from traffik.exceptions import BackendConnectionError, BackendError
from traffik.rates import Rate
from traffik.registry import ThrottleRegistry

pytestmark = pytest.mark.anyio

TOP_LEVEL = [
    "HTTPThrottle",
    "RequestThrottle",
    "WebSocketThrottle",
    "Throttle",
    "ThrottleExceptionInfo",
    "throttled",
    "websocket_throttled",
    "is_throttled",
    "get_wait",
    "EXEMPTED",
    "ANONYMOUS_IDENTIFIER",
    "Rate",
    "Header",
    "Headers",
    "DEFAULT_HEADERS_ALWAYS",
    "DEFAULT_HEADERS_THROTTLED",
    "Rule",
    "Bypass",
    "throttle_if",
    "bypass_if",
    "ThrottleRegistry",
    "ProxyHeaders",
    "get_remote_address",
    "default_identifier",
    "connection_throttled",
    "get_throttle_backend",
    "ThrottleBackend",
    "InMemoryBackend",
    "CircuitBreaker",
    "CircuitState",
    "get_lock_ttl",
    "set_lock_ttl",
    "get_lock_blocking",
    "set_lock_blocking",
    "get_lock_blocking_timeout",
    "set_lock_blocking_timeout",
]

MODULE_NAMES = {
    "traffik.throttles": [
        "HTTPThrottle",
        "RequestThrottle",
        "WebSocketThrottle",
        "Throttle",
        "ThrottleStrategy",
        "ThrottleExceptionInfo",
        "throttled",
        "get_wait",
        "is_throttled",
        "MiddlewareThrottle",
    ],
    "traffik.middleware": ["MiddlewareThrottle", "ThrottleMiddleware"],
    "traffik.registry": [
        "Rule",
        "Bypass",
        "ThrottleRule",
        "BypassThrottleRule",
        "throttle_if",
        "bypass_if",
        "ThrottleRegistry",
        "GLOBAL_REGISTRY",
    ],
    "traffik.headers": [
        "Header",
        "Headers",
        "DEFAULT_HEADERS_ALWAYS",
        "DEFAULT_HEADERS_THROTTLED",
    ],
    "traffik.exceptions": [
        "TraffikException",
        "ConfigurationError",
        "BackendError",
        "BackendConnectionError",
        "LockError",
        "LockAcquisitionError",
        "LockReleaseError",
        "LockTimeoutError",
        "LockPoolError",
        "QuotaError",
        "QuotaAppliedError",
        "QuotaCancelledError",
        "ConnectionThrottled",
    ],
    "traffik.error_handlers": [
        "fallback",
        "backend_fallback",
        "retry",
        "failover",
        "CircuitBreaker",
        "ThrottleExceptionInfo",
        "ExceptionInfo",
    ],
    "traffik.backoff": [
        "ConstantBackoff",
        "LinearBackoff",
        "ExponentialBackoff",
        "LogarithmicBackoff",
        "DEFAULT_BACKOFF",
        "JitterType",
    ],
    "traffik.typing": ["StrategyStat", "EXEMPTED", "WaitPeriod", "LockConfig"],
    "traffik.types": ["StrategyStat", "EXEMPTED"],
    "traffik.utils": [
        "time",
        "CircuitBreaker",
        "CircuitState",
        "ProxyHeaders",
        "get_remote_address",
    ],
    "traffik.config": [
        "ANONYMOUS_IDENTIFIER",
        "BACKEND_APP_CONTEXT_KEY",
        "APP_CONTEXT_ATTR",
        "THROTTLED_STATE_KEY",
        "CONNECTION_IDS_CONTEXT_KEY",
        "THROTTLE_DEFAULT_SCOPE",
        "DEFAULT_LOCK_TTL_ENV_VAR",
        "DEFAULT_BLOCKING_ENV_VAR",
        "DEFAULT_BLOCKING_TIMEOUT_ENV_VAR",
        "get_lock_ttl",
        "set_lock_ttl",
        "get_lock_blocking",
        "set_lock_blocking",
        "get_lock_blocking_timeout",
        "set_lock_blocking_timeout",
    ],
    "traffik.strategies": [
        "FixedWindow",
        "SlidingWindowCounter",
        "SlidingWindowLog",
        "TokenBucket",
        "TokenBucketWithDebt",
        "LeakyBucket",
        "LeakyBucketWithQueue",
        "GCRA",
        "DEFAULT_STRATEGY",
    ],
    "traffik.strategies.custom": ["GCRA", "GCRAStrategy"],
    "traffik.backends.base": ["ThrottleBackend", "get_throttle_backend"],
    "traffik.backends.inmemory": ["InMemoryBackend"],
}


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_names(name: str) -> None:
    assert name in traffik.__all__
    assert getattr(traffik, name) is not None


@pytest.mark.parametrize(
    ("module", "name"), [(module, name) for module, names in MODULE_NAMES.items() for name in names]
)
def test_module_names(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


def test_names_mean_what_they_meant() -> None:
    from traffik.decorators import starlette_throttled
    from traffik.middleware import MiddlewareThrottle
    from traffik.strategies import GCRA
    from traffik.strategies.custom import GCRA as CustomGCRA
    from traffik.strategies.custom import GCRAStrategy

    # The Starlette decorator at the top and in traffik.throttles; the FastAPI one in decorators.
    assert traffik.throttled is starlette_throttled
    assert importlib.import_module("traffik.throttles").throttled is starlette_throttled
    assert importlib.import_module("traffik.throttles").MiddlewareThrottle is MiddlewareThrottle
    assert CustomGCRA is GCRA and GCRAStrategy is GCRA
    assert importlib.import_module("traffik.backends.base").get_throttle_backend is (
        traffik.get_throttle_backend
    )
    assert importlib.import_module("traffik.types").StrategyStat is traffik.StrategyStat
    # 1.2's docs import `traffik.utils`, its source `traffik._utils`: one set of names.
    assert (
        importlib.import_module("traffik.utils").time
        is importlib.import_module("traffik._utils").time
    )
    assert traffik.ANONYMOUS_IDENTIFIER == "__anonymous__"


def test_throttle_strategy_covers_plain_functions_and_built_ins() -> None:
    from traffik.strategies import FixedWindow
    from traffik.throttles import ThrottleStrategy
    from traffik.typing import FullThrottleStrategy, SimpleThrottleStrategy

    async def plain(key: Any, rate: Rate, backend: Any, cost: int = 1) -> float:
        return 0.0

    assert set(ThrottleStrategy.__args__) == {SimpleThrottleStrategy, FullThrottleStrategy}
    assert isinstance(plain, SimpleThrottleStrategy)
    assert isinstance(FixedWindow(), FullThrottleStrategy)


def test_throttle_backend_is_generic_over_client_and_connection() -> None:
    class ClientBackend(ThrottleBackend[dict, Request]):  # type: ignore[type-arg]
        """A user's backend written against traffik 1.2's generic base."""

    backend = ClientBackend(namespace="generic")
    assert isinstance(backend, ThrottleBackend)
    assert ThrottleBackend[Any, WebSocket] is not None


def test_inmemory_backend_takes_traffik12_arguments() -> None:
    backend = InMemoryBackend(
        namespace="legacy",
        identifier=None,
        persistent=False,
        handle_throttled=None,
        on_error="allow",
        lock_blocking=True,
        lock_ttl=5.0,
        lock_blocking_timeout=1.0,
        number_of_shards=8,
        cleanup_frequency=2.5,
        lock_kind="fair",
        lock_pool_size=16,
        lock_pool_headroom=2,
        prepopulate_lock_pool=False,
    )
    assert backend.sweep_interval == 2.5  # cleanup_frequency is the sweep interval
    assert (backend.on_error, backend.lock_ttl, backend.lock_blocking_timeout) == (
        "allow",
        5.0,
        1.0,
    )
    with pytest.raises(ValueError, match="number_of_shards=0"):
        InMemoryBackend(number_of_shards=0)


async def test_inmemory_backend_with_traffik12_arguments_counts() -> None:
    from traffik.strategies import FixedWindow

    backend = InMemoryBackend(number_of_shards=3, lock_kind="unfair", prepopulate_lock_pool=True)
    rate = Rate.parse("2/min")
    waits = [await FixedWindow()("client", rate, backend, 1) for _ in range(3)]
    assert waits[:2] == [0, 0] and waits[2] > 0


def test_throttles_take_every_traffik12_argument() -> None:
    from traffik import HTTPThrottle, WebSocketThrottle
    from traffik.headers import DEFAULT_HEADERS_THROTTLED, Header
    from traffik.registry import Bypass, Rule
    from traffik.strategies import TokenBucket

    backend = InMemoryBackend(namespace="surface")
    registry = ThrottleRegistry()

    async def identifier(connection: Any) -> str:
        return "id"

    async def handler(connection: Any, wait_ms: float, throttle: Any, context: Any) -> None:
        return None

    async def on_error(connection: Any, exc_info: Any) -> float:
        return 0.0

    http = HTTPThrottle(
        "surface:http",
        "10/min",
        identifier,
        handler,
        TokenBucket(),
        backend,
        2,
        dynamic_backend=False,
        min_wait_period=500,
        headers={"X-Limit": Header.LIMIT(when="always")},
        on_error=on_error,
        context={"scope": "tenant"},
        registry=registry,
        rules=[Rule(path="/api/"), Bypass(methods=["OPTIONS"])],
        cache_ids=False,
        dynamic_rules=True,
        skip_handler=True,
        use_method=False,
    )
    assert (http.uid, http.cost, http.min_wait_period, http.cache_ids) == (
        "surface:http",
        2,
        500,
        False,
    )
    assert (http.use_method, http.dynamic_rules, http.skip_handler) == (False, True, True)
    assert http.registry is registry and registry.get_throttle("surface:http") is http
    assert http.use_fixed_backend and not http.is_dynamic
    assert repr(http).startswith("HTTPThrottle('surface:http'")

    websocket = WebSocketThrottle(
        "surface:ws",
        rate=Rate(limit=5, seconds=10),
        headers=DEFAULT_HEADERS_THROTTLED,
        registry=registry,
        dynamic_backend=True,
        on_error="raise",
    )
    assert websocket.is_dynamic and not websocket.use_fixed_backend
    assert websocket.backend is None


def test_middleware_objects_take_traffik12_arguments() -> None:
    from traffik import HTTPThrottle
    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware

    backend = InMemoryBackend(namespace="surface-mw")
    throttle = HTTPThrottle("surface:mw", "5/min", backend=backend, registry=ThrottleRegistry())
    guarded = MiddlewareThrottle(
        throttle,
        path="/api/",
        methods={"GET", "post"},
        predicate=lambda connection: True,
        cost=2,
        context={"detail": "slow"},
        skip_handler=False,
    )
    middleware = ThrottleMiddleware(
        Starlette(),
        middleware_throttles=[guarded, throttle],
        backend=backend,
        exception_handler_getter=lambda exc: None,
        context={"tier": "free"},
        sort="cheap_last",
        skip_handler=None,
    )
    assert middleware.http_throttles[0] is guarded  # cost 2 before cost 1
    assert guarded.connection_type is Request


def test_error_handlers_and_breaker_take_traffik12_arguments() -> None:
    from traffik.backoff import DEFAULT_BACKOFF, ExponentialBackoff, JitterType
    from traffik.error_handlers import CircuitBreaker, backend_fallback, failover, fallback, retry
    from traffik.exceptions import BackendError

    spare = InMemoryBackend(namespace="spare")
    assert callable(fallback(spare, on=(BackendError,), initialized=True))
    assert callable(backend_fallback(backend=spare, fallback_on=(BackendError,)))
    assert callable(
        retry(max_retries=3, retry_delay=0.1, backoff_multiplier=2.0, retry_on=(BackendError,))
    )
    assert callable(retry(backoff=ExponentialBackoff(2.0, max_delay=1.0, jitter=JitterType.FULL)))
    breaker = CircuitBreaker(failure_threshold=5, recovery_timeout=60.0, success_threshold=2)
    assert callable(
        failover(
            spare,
            breaker=breaker,
            max_retries=2,
            retry_delay=0.05,
            backoff=DEFAULT_BACKOFF,
            initialized=True,
        )
    )


def test_headers_and_rules_build_as_in_traffik12() -> None:
    from traffik.headers import DEFAULT_HEADERS_ALWAYS, Header, Headers
    from traffik.registry import Bypass, Rule, bypass_if, throttle_if

    headers = Headers({"X-Static": "1", "X-Limit": Header.LIMIT(when="always")})
    headers |= {"X-Wait": Header.RESET_SECONDS(when="throttled")}
    assert set(headers | DEFAULT_HEADERS_ALWAYS) == {
        "X-Static",
        "X-Limit",
        "X-Wait",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "Retry-After",
    }
    assert Header("100;w=60").condition == "throttled"  # traffik 1.2's default
    assert Header.DISABLE == ":___disabled___:"
    assert isinstance(throttle_if(path="/api/"), Rule)
    assert isinstance(bypass_if(methods="GET"), Bypass)


async def test_backend_context_exposes_resolved_settings() -> None:
    backend = InMemoryBackend(namespace="ctx", persistent=False)
    outer = backend()
    assert (outer.persistent, outer.close_on_exit) == (False, True)
    async with outer:
        nested = backend()
        assert (nested.persistent, nested.close_on_exit) == (True, False)
        explicit = backend(persistent=False, close_on_exit=True)
        assert (explicit.persistent, explicit.close_on_exit) == (False, True)
    assert backend(persistent=True).persistent is True
    assert backend.closed()  # the outer context closed it on exit


async def test_gcra_stat_metadata_has_traffik12_keys() -> None:
    from traffik.strategies.custom import GCRA

    backend = InMemoryBackend(namespace="gcra")
    rate = Rate.parse("2/min")
    strategy = GCRA(burst_tolerance_ms=0)
    fresh = await strategy.get_stat("client", rate, backend)
    assert fresh.metadata is not None
    assert fresh.metadata["strategy"] == "gcra"
    assert fresh.metadata["emission_interval_ms"] == 30_000
    assert fresh.metadata["burst_tolerance_ms"] == 0
    assert fresh.metadata["conformant"] is True
    now = backend.now_ms()
    assert await strategy("client", rate, backend, 1) == 0
    spent = await strategy.get_stat("client", rate, backend)
    assert spent.metadata is not None and spent.metadata["conformant"] is False
    assert math.isclose(spent.metadata["tat_ms"], now + 30_000, abs_tol=1_000)


def test_traffik12_fastapi_decorator_says_where_it_lives() -> None:
    code = (
        "import sys; sys.modules['traffik.fastapi'] = None\n"
        "try:\n"
        "    from traffik.decorators import throttled\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "pip install traffik-fastapi" in result.stdout
    assert "traffik.throttled" in result.stdout  # and where the Starlette one is


def test_the_new_core_modules_need_no_starlette() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "import traffik.config, traffik.registry, traffik.rules, traffik.headers\n"
        "from traffik import Header, ThrottleRegistry, Bypass, set_lock_ttl\n"
        "print(sorted(m for m, v in sys.modules.items() if m.startswith(('starlette', 'fastapi')) and v))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_throttles_have_traffik12_as_middleware_and_test() -> None:
    import inspect

    from starlette.middleware import Middleware

    from traffik import HTTPThrottle
    from traffik.middleware import ThrottleMiddleware

    throttle = HTTPThrottle("surface:methods", "5/min", registry=ThrottleRegistry())
    parameters = inspect.signature(throttle.as_middleware).parameters.values()
    assert [(p.name, p.kind.name, p.default) for p in parameters] == [
        ("backend", "KEYWORD_ONLY", None),
        ("exception_handler_getter", "KEYWORD_ONLY", None),
        ("context", "KEYWORD_ONLY", None),
        ("throttle_kwargs", "VAR_KEYWORD", inspect.Parameter.empty),
    ]
    middleware = throttle.as_middleware()
    assert isinstance(middleware, Middleware) and middleware.cls is ThrottleMiddleware
    check = inspect.signature(throttle.check).parameters
    assert inspect.signature(throttle.test).parameters == check


def test_throttle_middleware_takes_traffik12_positional_order() -> None:
    import inspect

    from traffik.middleware import ThrottleMiddleware

    parameters = inspect.signature(ThrottleMiddleware).parameters.values()
    positional = [p.name for p in parameters if p.kind.name == "POSITIONAL_OR_KEYWORD"]
    assert positional == [
        "app",
        "middleware_throttles",
        "backend",
        "exception_handler_getter",
        "context",
        "sort",
        "skip_handler",
    ]


# -- ConnectionThrottled in traffik 1.2's positional order --------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "status", "wait", "detail", "headers"),
    [
        # traffik 1.2's order: (wait_period, status_code, detail, headers)
        ((30,), {}, 429, 30, "Too Many Requests. Retry after 30 second(s).", {"Retry-After": "30"}),
        ((30, 503, "slow"), {}, 503, 30, "slow", {"Retry-After": "30"}),
        ((30, 503, "slow", {"X-A": "1"}), {}, 503, 30, "slow", {"X-A": "1", "Retry-After": "30"}),
        ((None, 503), {}, 503, None, "Service Unavailable", {}),
        ((None,), {}, 429, None, "Too Many Requests", {}),
        ((0,), {}, 429, 0, "Too Many Requests. Retry after 0 second(s).", {"Retry-After": "0"}),
        ((2.5,), {}, 429, 2.5, "Too Many Requests. Retry after 3 second(s).", {"Retry-After": "3"}),
        (
            (3600,),
            {},
            429,
            3600,
            "Too Many Requests. Retry after 3600 second(s).",
            {"Retry-After": "3600"},
        ),
        ((120, 429, "wait"), {}, 429, 120, "wait", {"Retry-After": "120"}),
        (
            (503,),
            {"status_code": 503},
            503,
            503,
            "Service Unavailable. Retry after 503 second(s).",
            {"Retry-After": "503"},
        ),
        (
            (300,),
            {"status_code": 503},
            503,
            300,
            "Service Unavailable. Retry after 300 second(s).",
            {"Retry-After": "300"},
        ),
        (
            (30,),
            {"detail": "slow", "headers": {"X-A": "1"}},
            429,
            30,
            "slow",
            {"X-A": "1", "Retry-After": "30"},
        ),
        # ours: Starlette's HTTPException order, wait_period by keyword
        ((), {}, 429, None, "Too Many Requests", {}),
        ((429,), {}, 429, None, "Too Many Requests", {}),
        ((503, "slow"), {}, 503, None, "slow", {}),
        (
            (503, "slow", {"X-A": "1"}),
            {"wait_period": 5},
            503,
            5,
            "slow",
            {"X-A": "1", "Retry-After": "5"},
        ),
        (
            (),
            {"wait_period": 30, "status_code": 503, "detail": "slow"},
            503,
            30,
            "slow",
            {"Retry-After": "30"},
        ),
    ],
)
def test_connection_throttled_takes_both_orders(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    status: int,
    wait: Any,
    detail: str,
    headers: dict[str, str],
) -> None:
    from traffik.exceptions import ConnectionThrottled

    exc = ConnectionThrottled(*args, **kwargs)
    assert (exc.status_code, exc.wait_period, exc.detail, exc.headers) == (
        status,
        wait,
        detail,
        headers,
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "fragment"),
    [
        ((), {"status_code": 30}, ValueError, r"status_code=30.*100 to 599.*wait_period="),
        ((30, 7), {}, ValueError, r"status_code=7"),
        (("slow",), {}, ValueError, r"status_code='slow'"),
        ((30, 503, "slow", {}, "extra"), {}, TypeError, r"at most 4 positional"),
        ((503, "a", {}, "extra"), {}, TypeError, r"at most 3 positional"),
        ((503, "slow"), {"detail": "slow"}, TypeError, r"multiple values for 'detail'"),
        ((), {"retry_after": 5}, TypeError, r"unexpected keyword 'retry_after'"),
    ],
)
def test_connection_throttled_refuses_what_neither_order_means(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    from traffik.exceptions import ConnectionThrottled

    with pytest.raises(error, match=fragment):
        ConnectionThrottled(*args, **kwargs)


async def test_a_traffik12_throttled_handler_answers_429_with_retry_after() -> None:
    import httpx
    from fastapi import Depends, FastAPI

    from traffik import HTTPThrottle
    from traffik.exceptions import ConnectionThrottled

    async def handler(connection: Any, wait_ms: float, throttle: Any, context: Any) -> None:
        raise ConnectionThrottled(math.ceil(wait_ms / 1000))  # as traffik 1.2's docs wrote it

    throttle = HTTPThrottle(
        "legacy:handler", rate="1/min", backend=InMemoryBackend(), handle_throttled=handler
    )
    app = FastAPI()

    @app.get("/")
    async def index(request: Request = Depends(throttle)) -> dict[str, str]:
        return {}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        await http.get("/")
        refused = await http.get("/")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert refused.json() == {"detail": "Too Many Requests. Retry after 60 second(s)."}


# -- strategies take traffik 1.2's lock_config ---------------------------------------------------


def _built_ins() -> list[tuple[str, tuple[Any, ...]]]:
    """Each built-in strategy with traffik 1.2's positional arguments before `lock_config`."""
    return [
        ("FixedWindow", ()),
        ("SlidingWindowCounter", ()),
        ("SlidingWindowLog", ()),
        ("TokenBucket", (None,)),
        ("TokenBucketWithDebt", (None, 0)),
        ("LeakyBucket", ()),
        ("LeakyBucketWithQueue", ()),
        ("GCRA", (None,)),
    ]


@pytest.mark.parametrize(("name", "before"), _built_ins())
async def test_built_in_strategies_take_lock_config_and_change_nothing(
    name: str, before: tuple[Any, ...]
) -> None:
    import traffik.strategies

    cls = getattr(traffik.strategies, name)
    config = {"ttl": 5.0, "blocking": True, "blocking_timeout": 1.0}
    by_keyword = cls(lock_config=config)
    by_position = cls(*before, config)
    plain = cls()
    assert by_keyword.lock_config == config and by_position.lock_config == config
    assert plain.lock_config == {}
    assert by_keyword == plain and hash(by_keyword) == hash(plain)
    assert repr(by_keyword) == repr(plain)
    config["ttl"] = 1.0  # a copy is kept
    assert by_keyword.lock_config["ttl"] == 5.0
    rate = Rate.parse("2/min")
    waits = [await by_keyword("client", rate, InMemoryBackend(), 1) for _ in range(1)]
    assert waits == [0]


@pytest.mark.parametrize(
    "name",
    [
        "TieredRate",
        "AdaptiveThrottle",
        "PriorityQueue",
        "QuotaWithRollover",
        "TimeOfDay",
        "CostBasedTokenBucket",
    ],
)
def test_advanced_strategies_keep_lock_config_too(name: str) -> None:
    import traffik.strategies

    cls = getattr(traffik.strategies, name)
    configured = cls(lock_config={"ttl": 5.0})
    assert configured.lock_config == {"ttl": 5.0} and configured == cls()
    with pytest.raises(ValueError, match=r"lock_config.*'tll'"):
        cls(lock_config={"tll": 5.0})


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("ttl=5", r"FixedWindow\(lock_config='ttl=5'\): must be a mapping"),
        ({"tll": 5.0}, r"FixedWindow\(lock_config=\{'tll': 5.0\}\): unknown key 'tll'; use"),
    ],
)
def test_lock_config_is_checked(value: Any, fragment: str) -> None:
    from traffik.exceptions import ConfigurationError
    from traffik.strategies import FixedWindow

    with pytest.raises(ConfigurationError, match=fragment):
        FixedWindow(lock_config=value)


# -- traffik 1.2's import paths ----------------------------------------------------------------


def test_traffik12_import_paths_resolve() -> None:
    from traffik.backends.base import connection_throttled, default_identifier
    from traffik.throttles import FullThrottleStrategy, SimpleThrottleStrategy
    from traffik.typing import FullThrottleStrategy as TypingFull
    from traffik.typing import SimpleThrottleStrategy as TypingSimple

    assert connection_throttled is traffik.connection_throttled
    assert default_identifier is traffik.default_identifier
    assert (SimpleThrottleStrategy, FullThrottleStrategy) == (TypingSimple, TypingFull)
    with pytest.raises(AttributeError, match=r"traffik\.backends\.base.*no_such_name"):
        importlib.import_module("traffik.backends.base").no_such_name  # noqa: B018


async def test_traffik_utils_keeps_traffik12_names() -> None:
    import time

    import traffik._utils as utils
    from traffik.error_handlers import CircuitBreaker, CircuitState
    from traffik.identity import ProxyHeaders, get_remote_address

    assert abs(utils.time() - time.time()) < 5  # seconds since the epoch, the wall clock
    assert utils.CircuitBreaker is CircuitBreaker and utils.CircuitState is CircuitState
    assert utils.get_remote_address is get_remote_address and utils.ProxyHeaders is ProxyHeaders
    assert await utils.CircuitBreaker(failure_threshold=1).allow_execution()


def test_traffik12_multiprocess_backend_says_what_to_use() -> None:
    with pytest.raises(ImportError, match=r"MultiProcessInMemoryBackend.*SQLiteBackend") as caught:
        importlib.import_module("traffik.backends.multiprocess")
    assert isinstance(caught.value, ModuleNotFoundError)  # what code probing for it expects
    assert "sqlite:///" in str(caught.value)
    with pytest.raises(ImportError, match="SQLiteBackend"):  # every time, not only the first
        importlib.import_module("traffik.backends.multiprocess")


@pytest.mark.parametrize(
    ("module", "instead"),
    [
        ("traffik.backends.redis.coredis", "from traffik.backends.redis import RedisBackend"),
        (
            "traffik.backends.memcached.emcache",
            "from traffik.backends.memcached import MemcachedBackend",
        ),
    ],
)
def test_traffik12_other_client_backends_say_what_to_use(module: str, instead: str) -> None:
    """traffik 1.2's backends on coredis and emcache: importing one names the backend that
    takes the same URLs (when its distribution is installed)."""
    pytest.importorskip(module.rsplit(".", 1)[0])
    with pytest.raises(ModuleNotFoundError) as caught:
        importlib.import_module(module)
    assert instead in str(caught.value) and caught.value.name == module


def test_traffik12_type_aliases_are_importable_and_take_their_parameters() -> None:
    """The type aliases traffik 1.2 exported from `traffik.typing`, as annotations written
    against it use them (`RateFunc[Request]`, evaluated at run time)."""
    from traffik import typing as aliases

    names = [
        "Matchable",
        "ExceptionHandler",
        "ThrottleErrorHandler",
        "ConnectionIdentifier",
        "ConnectionThrottledHandler",
        "RateFunc",
        "CostFunc",
        "RateType",
        "CostType",
        "BackoffStrategy",
        "RetryOn",
        "ApplyOnError",
        "HTTPConnectionT",
    ]
    assert all(name in aliases.__all__ and getattr(aliases, name) is not None for name in names)
    for generic in ("RateFunc", "CostFunc", "RateType", "CostType", "ConnectionIdentifier"):
        assert getattr(aliases, generic)[Request] is not None
    assert aliases.ThrottleErrorHandler[Request, dict] is not None
    assert aliases.ExceptionHandler[WebSocket] is not None


def test_traffik12_aliases_need_no_starlette() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "import traffik._utils, traffik.strategies\n"
        "from traffik.backends.base import default_identifier\n"
        "from traffik.strategies import FixedWindowStatMetadata, FixedWindow\n"
        "FixedWindow(lock_config={'ttl': 1.0})\n"
        "try:\n"
        "    from traffik.backends.base import connection_throttled\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "print(sorted(m for m, v in sys.modules.items() if m.startswith(('starlette', 'fastapi')) and v))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    hint, loaded = result.stdout.strip().splitlines()
    assert "traffik-core[starlette]" in hint and loaded == "[]"


STAT_METADATA = [
    ("FixedWindow", "k"),
    ("SlidingWindowCounter", "k"),
    ("SlidingWindowLog", "k"),
    ("TokenBucket", "k"),
    ("TokenBucketWithDebt", "k"),
    ("LeakyBucket", "k"),
    ("LeakyBucketWithQueue", "k"),
    ("GCRA", "k"),
    ("TieredRate", "tier:premium:k"),
    ("AdaptiveThrottle", "k"),
    ("PriorityQueue", "k"),
    ("QuotaWithRollover", "k"),
    ("TimeOfDay", "k"),
    ("CostBasedTokenBucket", "k"),
]


@pytest.mark.parametrize(("name", "key"), STAT_METADATA)
async def test_each_strategy_has_a_stat_metadata_typed_dict_describing_get_stat(
    name: str, key: str
) -> None:
    import traffik.strategies

    typed_dict = getattr(traffik.strategies, f"{name}StatMetadata")
    assert f"{name}StatMetadata" in traffik.strategies.__all__
    strategy = getattr(traffik.strategies, name)()
    backend, rate = InMemoryBackend(), Rate.parse("5/min")
    for _ in range(2):  # a fresh key, then one with state
        stat = await strategy.get_stat(key, rate, backend)
        assert stat.metadata is not None
        assert set(stat.metadata) == set(typed_dict.__annotations__), name
        assert stat.metadata["strategy"] == strategy.name
        await strategy(key, rate, backend, 1)


async def test_throttle_test_is_check() -> None:
    from traffik import HTTPThrottle

    throttle = HTTPThrottle("legacy:test", rate="1/min", backend=InMemoryBackend())
    connection = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    assert await throttle.test(connection) is True
    await throttle.hit(connection)
    assert await throttle.test(connection) is False
    assert await throttle.check(connection) is False


# -- a backend written to traffik 1.2's protocol (core.md §3.2, §3.3) -------------------------


class DictBackend(ThrottleBackend):
    """A custom backend as traffik 1.2's docs tell authors to write one: `initialize` opens
    the client (here a dict), `close` drops it, and no operation initialises by itself."""

    def __init__(self, namespace: str = "dict", **kwargs: Any) -> None:
        super().__init__(None, namespace=namespace, **kwargs)
        self.opened = 0
        self._locks = LocalLockTable(time.monotonic)

    async def initialize(self) -> None:
        if self.connection is None:
            await asyncio.sleep(0.01)  # a real client connects
            self.opened += 1
            self.connection = {}

    async def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
        return self.connection.get(key)

    async def set(self, key: str, value: str, expire: Any = None) -> None:
        self.connection[key] = value

    async def delete(self, key: str, *args: Any, **kwargs: Any) -> bool:
        return self.connection.pop(key, None) is not None

    async def increment(self, key: str, amount: int = 1) -> int:
        value = int(self.connection.get(key, 0)) + amount
        self.connection[key] = str(value)
        return value

    async def expire(self, key: str, seconds: Any) -> bool:
        return key in self.connection

    def get_lock(self, name: str, ttl: Any = None, reentrant: bool = False) -> Any:
        return self._locks.get(name, ttl, reentrant)

    async def reset(self) -> None:
        self.connection.clear()

    async def close(self) -> None:
        self.connection = None


def items_app(throttle: Any) -> Any:
    from fastapi import Depends, FastAPI

    app = FastAPI()  # no lifespan: httpx's ASGITransport would not run it anyway

    @app.get("/items", dependencies=[Depends(throttle)])
    async def items() -> list[int]:
        return []

    return app


async def codes(app: Any, hits: int) -> list[int]:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [(await client.get("/items")).status_code for _ in range(hits)]


async def test_a_traffik12_backend_initialises_itself_on_first_use() -> None:
    from traffik import HTTPThrottle

    backend = DictBackend()
    throttle = HTTPThrottle("dict:items", "2/min", backend=backend, registry=ThrottleRegistry())
    assert await codes(items_app(throttle), 3) == [200, 200, 429]
    assert backend.opened == 1 and backend.initialized


async def test_a_traffik12_backend_initialises_once_for_concurrent_first_uses() -> None:
    backend = DictBackend()
    counts = await asyncio.gather(*(backend.increment("k") for _ in range(20)))
    assert sorted(counts) == list(range(1, 21))
    assert backend.opened == 1


async def test_a_traffik12_backend_is_ready_once_initialised_and_closed_after_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = DictBackend()
    assert not await backend.ready() and backend.closed()
    await backend.initialize()
    assert await backend.ready() and not backend.closed()
    with caplog.at_level("WARNING", logger="traffik"):
        async with backend() as entered:
            await entered.set("k", "v")
    assert not caplog.records  # no "cannot be reached at start-up"
    assert backend.closed() and backend.connection is None
    with pytest.raises(BackendConnectionError, match="closed"):
        await backend.get("k")
    await backend.initialize()  # reopens
    assert await backend.get("k") is None and backend.opened == 2


async def test_a_subclass_initialize_may_call_the_parents() -> None:
    class Prepared(InMemoryBackend):
        async def initialize(self) -> None:
            await super().initialize()
            await self.set("prepared", "yes")  # an operation while opening

    backend = Prepared(namespace="prepared")
    assert await backend.get("prepared") == "yes"
    assert await backend.ready()


async def test_a_subclass_close_may_call_the_parents() -> None:
    class Closing(InMemoryBackend):
        closes = 0

        async def close(self) -> None:
            type(self).closes += 1
            await super().close()

    backend = Closing(namespace="closing", persistent=True)
    await backend.set("k", "v")
    await backend.close()
    await backend.close()
    assert backend.closed() and backend.connection is None and Closing.closes == 1
    with pytest.raises(BackendConnectionError):
        await backend.get("k")


class RawErrors(DictBackend):
    """Its client raises its own errors, which traffik 1.2 re-raised as `BackendError`."""

    base_exception_type = Exception

    async def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
        raise KeyError("raw")

    async def increment(self, key: str, amount: int = 1) -> int:
        raise ConnectionError("store down")


async def test_errors_of_base_exception_type_become_backend_errors() -> None:
    backend = RawErrors()
    with pytest.raises(
        BackendError, match=r"Error occurred in backend operation\. 'raw'"
    ) as caught:
        await backend.get("x")
    assert isinstance(caught.value.cause, KeyError)
    assert caught.value.__cause__ is caught.value.cause
    await backend.close()
    with pytest.raises(BackendConnectionError):  # a BackendError passes through unchanged
        await backend.get("x")


async def test_a_traffik12_backend_wraps_every_error_by_default() -> None:
    class Defaulted(DictBackend):
        async def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
            raise KeyError("raw")

    assert Defaulted.base_exception_type is BaseException  # as in traffik 1.2
    with pytest.raises(BackendError) as caught:
        await Defaulted().get("x")
    assert isinstance(caught.value.cause, KeyError)


async def test_wrapped_errors_reach_a_fallback_on_backend_error() -> None:
    from traffik import HTTPThrottle
    from traffik.error_handlers import fallback

    spare = InMemoryBackend(namespace="spare")
    throttle = HTTPThrottle(
        "raw:items",
        "2/min",
        backend=RawErrors(),
        on_error=fallback(spare, on=(BackendError,)),
        registry=ThrottleRegistry(),
    )
    assert await codes(items_app(throttle), 3) == [200, 200, 429]  # decided by the spare
    assert await spare.keys()


async def test_wrap_methods_guards_more_methods() -> None:
    class Extra(DictBackend):
        wrap_methods = ("size",)

        async def size(self) -> int:
            return len(self.connection)  # needs the client: initialised first

        def broken(self) -> None:
            raise KeyError("not listed")

    backend = Extra()
    assert await backend.size() == 0 and backend.opened == 1
    with pytest.raises(KeyError):
        backend.broken()


async def test_cancellation_is_never_wrapped() -> None:
    class Slow(DictBackend):
        base_exception_type = BaseException

        async def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(10)

    task = asyncio.ensure_future(Slow().get("x"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- locks (core.md §4.2) ------------------------------------------------------------------


def test_lock_config_has_every_traffik12_key() -> None:
    from traffik.typing import LockConfig

    assert set(LockConfig.__optional_keys__) == {
        "ttl",
        "blocking",
        "blocking_timeout",
        "reentrant",
        "enforce_ttl_locally",
        "local_ttl_factor",
    }


LOCK_BACKENDS = [
    pytest.param(lambda: InMemoryBackend(namespace="locks"), id="memory"),
    pytest.param(lambda: DictBackend(namespace="locks"), id="traffik12-custom"),
]


@pytest.mark.parametrize("make", LOCK_BACKENDS)
async def test_a_lock_enforcing_its_ttl_locally_stops_its_body(make: Any) -> None:
    from traffik.exceptions import LockTimeoutError
    from traffik.typing import LockConfig

    backend = make()
    config = LockConfig(ttl=0.2, enforce_ttl_locally=True, local_ttl_factor=0.5)
    started = time.monotonic()
    reached = []
    with pytest.raises(LockTimeoutError, match=r"0\.1s .*ttl=0\.2.*local_ttl_factor=0\.5"):
        async with backend.lock("slow", **config):
            await asyncio.sleep(5)
            reached.append(True)
    assert 0.09 <= time.monotonic() - started < 1 and not reached
    task = asyncio.current_task()
    assert task is not None and (sys.version_info < (3, 11) or task.cancelling() == 0)
    await asyncio.sleep(0)  # the task is not left cancelled
    async with backend.lock("slow", blocking=False):  # released before the error was raised
        pass


@pytest.mark.parametrize("make", LOCK_BACKENDS)
async def test_a_lock_enforcing_its_ttl_locally_lets_a_quick_body_finish(make: Any) -> None:
    backend = make()
    async with backend.lock("quick", ttl=5, enforce_ttl_locally=True):
        await asyncio.sleep(0.01)
    with pytest.raises(ValueError, match="the body's"):
        async with backend.lock("quick", ttl=5, enforce_ttl_locally=True):
            raise ValueError("the body's")
    async with backend.lock("quick", ttl=0.05):  # not enforced: the body runs to its end
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("factor", [0, 1, 1.5, -0.2])
def test_a_local_ttl_factor_must_be_between_0_and_1(factor: float) -> None:
    backend = InMemoryBackend(namespace="locks")
    with pytest.raises(ValueError, match=f"local_ttl_factor={factor!r}.*between 0 and 1"):
        backend.lock("x", ttl=1, enforce_ttl_locally=True, local_ttl_factor=factor)


# -- InMemoryBackend's positional arguments (core.md §5.1) --------------------------------


def test_inmemory_backend_takes_traffik12_positional_arguments() -> None:
    async def identify(connection: Any) -> str:
        return "id"

    assert InMemoryBackend("ns", None).namespace == "ns"
    backend = InMemoryBackend(
        "legacy", identify, True, None, "allow", True, 5.0, 1.0, 8, 2.5, "fair", 16, 2, False
    )
    assert (backend.namespace, backend.identifier, backend.persistent) == (
        "legacy",
        identify,
        True,
    )
    assert (backend.on_error, backend.lock_blocking, backend.lock_ttl) == ("allow", True, 5.0)
    assert (backend.lock_blocking_timeout, backend.sweep_interval) == (1.0, 2.5)
    with pytest.raises(TypeError):
        InMemoryBackend(*["x"] * 15)  # no sixteenth positional argument


def test_a_strategy_subclass_may_declare_lock_config_as_a_field() -> None:
    import dataclasses

    from traffik.strategies import Strategy
    from traffik.typing import LockConfig

    @dataclasses.dataclass(frozen=True, eq=False)
    class Custom(Strategy):
        """A traffik 1.2-style strategy: a frozen dataclass with a `lock_config` field."""

        lock_config: LockConfig = dataclasses.field(default_factory=dict)  # type: ignore[assignment]

    assert Custom(lock_config={"ttl": 1.0}).lock_config == {"ttl": 1.0}
    assert Custom().lock_config == {}


def test_a_backend_context_per_tenant_inside_a_running_app_keeps_each_tenants_state() -> None:
    """traffik 1.2's README pattern: a `dynamic_backend` throttle hit inside `async with
    tenant_backend(request.app):` on each request, the app served by another backend. Each
    tenant's context is nested in the app's (as in 1.2): it neither resets nor closes its
    backend on exit, so each tenant's limit holds, and the app's other throttles go on."""
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from traffik import HTTPThrottle

    backend = InMemoryBackend(namespace="global")
    app = FastAPI(lifespan=backend.lifespan)
    per_tenant = HTTPThrottle("tenant12:api", rate="1/min", dynamic_backend=True)
    plain = HTTPThrottle("tenant12:plain", rate="5/min")
    tenants = {name: InMemoryBackend(namespace=f"tenant-{name}") for name in "ab"}

    @app.get("/data")
    async def data(request: Request) -> dict[str, bool]:
        async with tenants[request.headers["x-tenant"]](request.app):
            await per_tenant.hit(request)
        return {"ok": True}

    @app.get("/plain")
    async def other(request: Request) -> dict[str, bool]:
        await plain.hit(request)
        return {"ok": True}

    with TestClient(app) as client:
        codes = [client.get("/data", headers={"x-tenant": t}).status_code for t in "aabb"]
        after = client.get("/plain").status_code
    assert codes == [200, 429, 200, 429]
    assert after == 200
    assert all(not tenant.closed() for tenant in tenants.values())


# -- traffik 1.2's names at every path it exported them from -----------------------------------
# traffik 1.2's `traffik` and `traffik.backends` star-imported their submodules, so what those
# imported (a type alias, an exception) was importable from them too.

TYPING_ALIASES = [
    "AsyncLock",
    "ConnectionIdentifier",
    "ConnectionThrottledHandler",
    "Dependency",
    "ExceptionHandler",
    "HTTPConnectionT",
    "HTTPConnectionTcon",
    "LockConfig",
    "Matchable",
    "Network",
    "Stringable",
    "ThrottleErrorHandler",
    "TrustedProxy",
    "WaitPeriod",
]

TRAFFIK12_PATHS = [
    *(("traffik", name, "traffik.typing", name) for name in TYPING_ALIASES),
    ("traffik", "BackendConnectionError", "traffik.exceptions", "BackendConnectionError"),
    ("traffik", "LockAcquisitionError", "traffik.exceptions", "LockAcquisitionError"),
    ("traffik", "time", "traffik._utils", "time"),
    ("traffik.backends", "InMemoryBackend", "traffik.backends.inmemory", "InMemoryBackend"),
    ("traffik.backends", "connection_throttled", "traffik", "connection_throttled"),
    ("traffik.backends", "default_identifier", "traffik", "default_identifier"),
    ("traffik.backends", "BackendConnectionError", "traffik.exceptions", "BackendConnectionError"),
    ("traffik.backends", "LockAcquisitionError", "traffik.exceptions", "LockAcquisitionError"),
    *(
        ("traffik.backends", name, "traffik.typing", name)
        for name in (
            "ConnectionIdentifier",
            "ConnectionThrottledHandler",
            "HTTPConnectionT",
            "ThrottleErrorHandler",
        )
    ),
    ("traffik.throttles", "websocket_throttled", "traffik", "websocket_throttled"),
    ("traffik.throttles", "ExceptionInfo", "traffik.error_handlers", "ThrottleExceptionInfo"),
    *(
        (
            f"traffik.strategies.{module}",
            f"{name}StatMetadata",
            "traffik.strategies",
            f"{name}StatMetadata",
        )
        for module, names in {
            "fixed_window": ["FixedWindow"],
            "sliding_window": ["SlidingWindowCounter", "SlidingWindowLog"],
            "token_bucket": ["TokenBucket", "TokenBucketWithDebt"],
            "leaky_bucket": ["LeakyBucket", "LeakyBucketWithQueue"],
        }.items()
        for name in names
    ),
]


@pytest.mark.parametrize(("module", "name", "home", "same_as"), TRAFFIK12_PATHS)
def test_traffik12_names_import_from_where_traffik12_had_them(
    module: str, name: str, home: str, same_as: str
) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from {module} import {name}", namespace)  # (the statement 1.2 code runs)
    assert namespace[name] is getattr(importlib.import_module(home), same_as)


def test_traffik12_public_lists_keep_their_names() -> None:
    """The names in traffik 1.2's `__all__` of `traffik.typing`, `traffik.throttles` and each
    strategy module are in ours (so `from traffik.typing import *` gives them too)."""
    listed = {
        "traffik.typing": ["Dependency", "HTTPConnectionTcon", "Network", "TrustedProxy"],
        "traffik.throttles": ["websocket_throttled"],
        "traffik.backends": ["InMemoryBackend"],
        "traffik.strategies.fixed_window": ["FixedWindowStatMetadata"],
        "traffik.strategies.sliding_window": [
            "SlidingWindowCounterStatMetadata",
            "SlidingWindowLogStatMetadata",
        ],
        "traffik.strategies.token_bucket": [
            "TokenBucketStatMetadata",
            "TokenBucketWithDebtStatMetadata",
        ],
        "traffik.strategies.leaky_bucket": [
            "LeakyBucketStatMetadata",
            "LeakyBucketWithQueueStatMetadata",
        ],
    }
    for module, names in listed.items():
        assert set(names) <= set(importlib.import_module(module).__all__), module


def test_traffik12_typing_additions_keep_their_meaning() -> None:
    import ipaddress
    import sys
    import typing

    from traffik import typing as aliases

    if sys.version_info >= (3, 10):  # (parameters as a list, result)
        assert aliases.Dependency[[Request], Request] is not None
    else:  # (no ParamSpec before Python 3.10: the parameters are one type)
        assert aliases.Dependency[Request, Request] is not None
    assert aliases.HTTPConnectionTcon.__contravariant__
    assert set(typing.get_args(aliases.Network)) == {ipaddress.IPv4Network, ipaddress.IPv6Network}
    assert set(typing.get_args(aliases.TrustedProxy)) == {
        ipaddress.IPv4Address,
        ipaddress.IPv6Address,
        ipaddress.IPv4Network,
        ipaddress.IPv6Network,
    }


def test_traffik12_names_need_no_starlette() -> None:
    names = ", ".join(TYPING_ALIASES)
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        f"from traffik import {names}, BackendConnectionError, LockAcquisitionError, time\n"
        "from traffik.backends import InMemoryBackend, default_identifier, ConnectionIdentifier\n"
        "from traffik.strategies.fixed_window import FixedWindowStatMetadata\n"
        "from traffik.backends import *\n"
        "try:\n"
        "    from traffik.backends import connection_throttled\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "print(sorted(m for m, v in sys.modules.items() if m.startswith(('starlette', 'fastapi')) and v))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    hint, loaded = result.stdout.strip().splitlines()
    assert "traffik-core[starlette]" in hint and loaded == "[]"


@pytest.mark.parametrize("module", ["traffik", "traffik.backends"])
def test_traffik12_multiprocess_backend_name_says_what_to_use(module: str) -> None:
    with pytest.raises(ImportError, match=r"MultiProcessInMemoryBackend.*SQLiteBackend"):
        exec(f"from {module} import MultiProcessInMemoryBackend", {})
    with pytest.raises(AttributeError, match="NoSuchName"):
        importlib.import_module(module).NoSuchName  # noqa: B018


# -- Rate with a fraction of a unit -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expire"),
    [
        ({"seconds": 1.5}, 1500),
        ({"minutes": 0.5}, 30_000),
        ({"hours": 0.25}, 900_000),
        ({"days": 0.5}, 43_200_000),
        ({"seconds": 0.1}, 100),  # (0.1 as written, not the binary double's expansion)
        ({"seconds": 2.5e-3}, 2.5),
    ],
)
def test_a_fractional_rate_unit_says_the_milliseconds_to_write(
    given: dict[str, float], expire: float
) -> None:
    """traffik 1.2 took `Rate(limit=5, seconds=1.5)`; Traffik refuses it (a period is whole
    milliseconds) with the whole milliseconds that mean the same, when there are any."""
    import re

    from traffik.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        Rate(limit=5, **given)  # type: ignore[arg-type]
    message = str(caught.value)
    ((name, value),) = given.items()
    assert message.startswith(f"Rate {name}={value!r}: must be a whole number (int), not float")
    if expire == int(expire):
        written = re.search(r"milliseconds=(\d+)", message)
        assert written is not None, message
        assert Rate(limit=5, milliseconds=int(written.group(1))).expire == expire
    else:
        assert "milliseconds=" not in message
        assert "a period is a whole number of milliseconds" in message


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ({"seconds": 2.0}, "write seconds=2"),
        ({"milliseconds": 1500.0}, "write milliseconds=1500"),
        ({"limit": 5.0, "seconds": 1}, "write limit=5"),
        ({"limit": 5.5, "seconds": 1}, "a limit is a whole number of units"),
        ({"milliseconds": 1.5}, "a period is a whole number of milliseconds"),
        ({"seconds": -1.5}, "zero or positive"),
        ({"seconds": float("nan")}, "a period is a whole number of milliseconds"),
        ({"seconds": float("inf")}, "a period is a whole number of milliseconds"),
        ({"seconds": 1 + 2j}, "a period is a whole number of milliseconds"),
    ],
)
def test_a_rate_argument_that_is_not_an_int_says_what_is_valid(
    given: dict[str, float], fragment: str
) -> None:
    from traffik.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="must be a whole number") as caught:
        Rate(**{"limit": 5, **given})  # type: ignore[arg-type]
    assert fragment in str(caught.value)


def test_other_numbers_for_a_rate_unit_get_the_same_advice() -> None:
    from decimal import Decimal
    from fractions import Fraction

    from traffik.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"not Decimal; .*milliseconds=1500\b"):
        Rate(limit=5, seconds=Decimal("1.5"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"not Fraction; .*whole number of milliseconds"):
        Rate(limit=5, seconds=Fraction(1, 3))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"not str$"):
        Rate(limit=5, seconds="1.5")  # type: ignore[arg-type]


# -- ThrottleMiddleware's traffik 1.2 attributes ------------------------------------------------


def test_throttle_middleware_keeps_traffik12_attribute_names() -> None:
    from traffik import HTTPThrottle, WebSocketThrottle
    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware

    backend = InMemoryBackend(namespace="surface-mw-attrs")
    http = HTTPThrottle("surface:mw-attrs", "5/min", backend=backend, registry=ThrottleRegistry())
    socket = WebSocketThrottle(
        "surface:mw-ws", "5/min", backend=backend, registry=ThrottleRegistry()
    )
    guarded = MiddlewareThrottle(http, path="/api/")

    def getter(exc: Exception) -> None:
        return None

    middleware = ThrottleMiddleware(
        Starlette(), middleware_throttles=[guarded, socket], exception_handler_getter=getter
    )
    by_kind = middleware.middleware_throttles
    assert set(by_kind) == {"http", "websocket"}
    assert list(by_kind["http"]) == [guarded]
    assert [t.throttle for t in by_kind["websocket"]] == [socket]  # (a plain throttle, wrapped)
    assert middleware.get_exception_handler is getter
    assert ThrottleMiddleware(Starlette(), [guarded]).get_exception_handler is None
    with pytest.raises(AttributeError):
        middleware.middleware_throttles = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        by_kind["http"] = []  # type: ignore[index]


@pytest.mark.parametrize("how", ["hit", "together", "middleware"])
async def test_a_subclass_get_backend_decides_where_hits_count(how: str) -> None:
    # traffik 1.2's `hit` asked `self.get_backend(connection)`: a subclass naming a tenant's
    # backend there has its hits counted on it, even with a `backend=` of its own.
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from traffik import HTTPThrottle, throttled
    from traffik.middleware import ThrottleMiddleware

    default, tenant = InMemoryBackend(namespace="default"), InMemoryBackend(namespace="acme")

    class PerTenant(HTTPThrottle):
        def get_backend(self, connection: Any = None) -> ThrottleBackend:
            if connection is not None and connection.headers.get("x-tenant") == "acme":
                return tenant
            return super().get_backend(connection)

    throttle = PerTenant("api", rate="2/min", backend=default)
    other = HTTPThrottle("other", rate="5/min", backend=default)

    async def endpoint(request: Request) -> PlainTextResponse:
        if how == "hit":
            await throttle.hit(request)
        return PlainTextResponse("ok")

    if how == "together":
        endpoint = throttled(throttle, other)(endpoint)
    app = Starlette(routes=[Route("/", endpoint)])
    if how == "middleware":
        app.add_middleware(ThrottleMiddleware, middleware_throttles=[throttle])
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        codes = [
            (await client.get("/", headers={"x-tenant": "acme"})).status_code for _ in range(3)
        ]
    assert codes == [200, 200, 429]
    assert any(key.startswith("acme:api") for key in await tenant.keys())
    assert not any(key.startswith("default:api") for key in await default.keys())


async def test_a_traffik12_backend_is_opened_by_a_scan_as_by_a_get() -> None:
    # `scan` (what `python -m traffik keys` and `backend.keys()` read) is guarded like the
    # other operations: a backend that opens its store in `initialize` is opened first.
    import time as _time

    class Opening(ThrottleBackend):
        def __init__(self) -> None:
            super().__init__(None, namespace="opening")
            self.locks = LocalLockTable(_time.monotonic)
            self.data: Any = None

        async def initialize(self) -> None:
            if self.data is None:
                self.data = {"opening:api:{1.2.3.4}:GET:/x:fw": "1"}

        async def scan(self, prefix: str, limit: Any = None) -> list[str]:
            return sorted(key for key in self.data if key.startswith(prefix))[:limit]

    backend = Opening()
    assert await backend.scan("opening:") == ["opening:api:{1.2.3.4}:GET:/x:fw"]
    assert backend.initialized
