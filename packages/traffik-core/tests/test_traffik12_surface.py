"""traffik 1.2's public surface: every name its code imports resolves, and every object builds
with the arguments traffik 1.2 took (spec: integration.md §0-§1, core.md §3, §5, §11)."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.websockets import WebSocket

import traffik
from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
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
