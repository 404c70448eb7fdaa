"""`on_error` handlers: decide on a fallback backend, retry the primary, or fail over behind a breaker."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Mapping
from typing import Any, Callable, TypedDict, Union

from traffik.backends.base import ThrottleBackend
from traffik.backoff import BackoffStrategy, ExponentialBackoff
from traffik.circuit_breaker import CircuitBreaker, CircuitState
from traffik.decision import Decision
from traffik.exceptions import BackendError, ConfigurationError
from traffik.rates import Rate
from traffik.typing import Stringable

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "ErrorHandler",
    "ExceptionInfo",
    "ThrottleExceptionInfo",
    "backend_fallback",
    "failover",
    "fallback",
    "retry",
]


class ThrottleExceptionInfo(TypedDict):
    """What a throttle tells its `on_error` handler about a decision that raised."""

    exception: Exception
    connection: Any
    key: Stringable
    """The throttle key before namespacing; a strategy namespaces it with the backend it is given."""
    cost: float
    rate: Rate
    backend: ThrottleBackend
    """The backend that failed."""
    context: Mapping[str, Any]
    throttle: Any
    """The throttle; handlers use its `.strategy`."""


ExceptionInfo = ThrottleExceptionInfo

ErrorHandler = Callable[[Any, ThrottleExceptionInfo], Awaitable[Union[float, Decision]]]
"""An `on_error` handler: `async (connection, exc_info) -> wait_ms or Decision` (0 ms allows)."""

_ExceptionTypes = Union[type[BaseException], tuple[type[BaseException], ...]]
_Sleep = Callable[[float], Awaitable[Any]]

_DEFAULT_ON: tuple[type[BaseException], ...] = (BackendError,)

_RETRY_BACKOFF = ExponentialBackoff(2.0, max_delay=60.0)
"""`retry_delay`, then twice that, and so on up to a minute: the delays traffik's docs promise."""


def _exception_types(owner: str, name: str, value: object) -> tuple[type[BaseException], ...]:
    types = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ConfigurationError(
            f"{owner}({name}={value!r}): must be an exception class or a non-empty tuple of them, "
            "like (BackendError,)"
        )
    return types


def _check_backend(owner: str, backend: object) -> None:
    if not isinstance(backend, ThrottleBackend):
        raise ConfigurationError(
            f"{owner}(backend={backend!r}): must be a ThrottleBackend, "
            "like InMemoryBackend(namespace='fallback')"
        )


def _check_initialized(owner: str, initialized: object) -> None:
    if initialized is not None and not isinstance(initialized, bool):
        raise ConfigurationError(
            f"{owner}(initialized={initialized!r}): must be None, True or False"
        )


def _check_retries(owner: str, max_retries: object) -> None:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(
            f"{owner}(max_retries={max_retries!r}): must be a whole number >= 0"
        )


def _check_seconds(owner: str, name: str, value: object, minimum: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ConfigurationError(
            f"{owner}({name}={value!r}): must be a finite number >= {minimum:g}"
        )
    return float(value)


def _check_backoff(owner: str, backoff: object) -> BackoffStrategy:
    if not callable(backoff):
        raise ConfigurationError(
            f"{owner}(backoff={backoff!r}): must be a callable (attempt, base_delay) -> seconds, "
            "like ExponentialBackoff() from traffik.backoff"
        )
    return backoff


async def _decide(exc_info: ThrottleExceptionInfo, backend: ThrottleBackend) -> float | Decision:
    """Run the throttle's strategy on `backend`: its `Decision` if it has `decide`, else its wait."""
    strategy = exc_info["throttle"].strategy
    decide = getattr(strategy, "decide", None)
    run = decide if callable(decide) else strategy
    result: float | Decision = await run(
        exc_info["key"], exc_info["rate"], backend, exc_info["cost"]
    )
    return result


async def _decide_on_fallback(
    backend: ThrottleBackend, initialized: bool | None, exc_info: ThrottleExceptionInfo
) -> float | Decision:
    """Decide on the fallback backend; its own failure is raised chained to the original error."""
    try:
        if initialized is False and not backend.initialized:
            await backend.initialize()
        return await _decide(exc_info, backend)
    except Exception as exc:
        raise exc from exc_info["exception"]


def fallback(
    backend: ThrottleBackend,
    on: _ExceptionTypes = _DEFAULT_ON,
    *,
    fallback_on: _ExceptionTypes | None = None,
    initialized: bool | None = None,
) -> ErrorHandler:
    """An `on_error` handler that decides on `backend` when the primary raises one of `on`.

    The throttle's strategy runs on `backend` with the same key, rate and cost; the
    handler returns its `Decision` (or, for a strategy without `decide`, its wait in ms).
    Any other exception is re-raised unchanged, so the request fails instead of being
    silently throttled. If the fallback fails too, its error is raised chained to the
    original (`raise fallback_error from original`).

    `fallback_on` is traffik 1.2's name for `on` and keeps working, without a warning;
    giving both with different values is a `ConfigurationError`.

    `backend` need not be initialised: a backend initialises itself on first use. With
    `initialized=False` the handler also calls `backend.initialize()` whenever the backend
    is not initialised, which reopens one that was explicitly closed. `None` (the default)
    and `True` leave the backend's lifecycle to the backend (traffik 1.2's `True` skipped
    initialisation, so an unused fallback failed).
    """
    _check_backend("fallback", backend)
    _check_initialized("fallback", initialized)
    types = _exception_types("fallback", "on", on)
    if fallback_on is not None:
        legacy = _exception_types("fallback", "fallback_on", fallback_on)
        if on is not _DEFAULT_ON and set(legacy) != set(types):
            raise ConfigurationError(
                f"fallback(on={on!r}, fallback_on={fallback_on!r}): `fallback_on` is the old name of "
                "`on`; give only one of them"
            )
        types = legacy

    async def fallback_handler(
        connection: Any, exc_info: ThrottleExceptionInfo
    ) -> float | Decision:
        if not isinstance(exc_info["exception"], types):
            raise exc_info["exception"]
        return await _decide_on_fallback(backend, initialized, exc_info)

    return fallback_handler


backend_fallback = fallback


def retry(
    max_retries: int = 3,
    retry_delay: float = 0.1,
    backoff_multiplier: float | None = None,
    backoff: BackoffStrategy | None = None,
    retry_on: _ExceptionTypes = (Exception,),
    *,
    sleep: _Sleep = asyncio.sleep,
) -> ErrorHandler:
    """An `on_error` handler that runs the decision again on the backend that failed.

    It retries only an error that is one of `retry_on` (any other is re-raised), at most
    `max_retries` times, and returns the first result; a retry that raises an error outside
    `retry_on` stops at once, and when every retry fails the last error propagates.
    `max_retries=0` re-raises the original.

    Retry `n` (from 1) waits `backoff(n, retry_delay)` seconds first. The default backoff
    doubles from `retry_delay` up to a minute, so the first retry comes `retry_delay` after
    the failure, as traffik's docs promise (traffik 1.2 itself retried once at once). Give
    `backoff` (see `traffik.backoff`, with jitter if many clients retry together) or
    `backoff_multiplier` (`retry_delay * multiplier ** (n - 1)`), not both. `sleep` is the
    coroutine that waits, replaceable in tests.
    """
    _check_retries("retry", max_retries)
    delay = _check_seconds("retry", "retry_delay", retry_delay, 0)
    types = _exception_types("retry", "retry_on", retry_on)
    if backoff is not None and backoff_multiplier is not None:
        raise ConfigurationError(
            f"retry(backoff={backoff!r}, backoff_multiplier={backoff_multiplier!r}): give one or the other; "
            "`backoff_multiplier=m` means ExponentialBackoff(m)"
        )
    if backoff is not None:
        delays = _check_backoff("retry", backoff)
    elif backoff_multiplier is not None:
        delays = ExponentialBackoff(
            _check_seconds("retry", "backoff_multiplier", backoff_multiplier, 1)
        )
    else:
        delays = _RETRY_BACKOFF

    async def retry_handler(connection: Any, exc_info: ThrottleExceptionInfo) -> float | Decision:
        error: BaseException = exc_info["exception"]
        if not isinstance(error, types):
            raise error
        for attempt in range(1, max_retries + 1):
            await sleep(delays(attempt, delay))
            try:
                return await _decide(exc_info, exc_info["backend"])
            except types as exc:
                error = exc
        raise error

    return retry_handler


def failover(
    backend: ThrottleBackend,
    breaker: CircuitBreaker | None = None,
    max_retries: int = 2,
    retry_delay: float = 0.05,
    backoff: BackoffStrategy | None = None,
    initialized: bool | None = None,
    *,
    sleep: _Sleep = asyncio.sleep,
) -> ErrorHandler:
    """An `on_error` handler that retries the failed backend behind `breaker`, then uses `backend`.

    Every routed error triggers it. While the breaker refuses (open, or a probe already
    running), the handler goes straight to `backend`. Otherwise it retries the primary up
    to `max_retries` times, waiting `backoff(n, retry_delay)` before retry `n` (the same
    default as `retry`); the first success is recorded on the breaker and returned. When
    every retry fails, or the handler is cancelled while retrying, the breaker records one
    failure and the decision runs on `backend` (see `fallback`, whose `initialized` this
    shares). The throttle itself still tries the primary once per request; the breaker
    spares the retries.

    `breaker` defaults to a new `CircuitBreaker()` owned by this handler; pass one to
    share or inspect it. `sleep` is the coroutine that waits, replaceable in tests.
    """
    _check_backend("failover", backend)
    _check_initialized("failover", initialized)
    _check_retries("failover", max_retries)
    delay = _check_seconds("failover", "retry_delay", retry_delay, 0)
    delays = _RETRY_BACKOFF if backoff is None else _check_backoff("failover", backoff)
    if breaker is None:
        breaker = CircuitBreaker()
    elif not isinstance(breaker, CircuitBreaker):
        raise ConfigurationError(f"failover(breaker={breaker!r}): must be a CircuitBreaker or None")
    circuit = breaker

    async def failover_handler(
        connection: Any, exc_info: ThrottleExceptionInfo
    ) -> float | Decision:
        if await circuit.allow_execution():
            recovered = False
            try:
                for attempt in range(1, max_retries + 1):
                    await sleep(delays(attempt, delay))
                    try:
                        result = await _decide(exc_info, exc_info["backend"])
                    except Exception:
                        continue
                    recovered = True
                    await circuit.record_success()
                    return result
            finally:
                if not recovered:
                    await circuit.record_failure()
        return await _decide_on_fallback(backend, initialized, exc_info)

    return failover_handler
