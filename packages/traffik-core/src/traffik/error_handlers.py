"""The `on_error` handlers that recover: `fallback`, `retry` and `failover`.

`exc_info` (`ThrottleExceptionInfo`) says how far the decision got: `key` is None when the
failure came before the client's key existed (the identifier raised, say). Its `decide`
re-runs the whole decision, identity included, on a backend of the handler's choosing, so
the handlers here never decide on a missing key: `fallback`, `retry` and `failover`.
Answers made by the policy carry no quota (`Decision.remaining` is None): a client is never
told it has `r=0` left because the store was down.

A fallback decides on a store of its own, usually in each process: `per_process` scales its
limits to one process's share (`traffik.fallback_share`), and what it admitted is charged to
the failed store when that store answers again (`reconcile`, `traffik.reconcile`), so a
client is not granted its budget twice across an outage. `failover` skips its retries while
the failed store's circuit is open (`CircuitOpenError`): the store is known to be down; and
while it is silent (a command timed out, and it has not answered since: `StoreCircuit.silent`),
since a retry would wait for a timeout before its fallback answers. `retry` sends one retry to
a silent store (a connection that silently died is made again), not a second: a request waits
at most two timeouts.

The handlers return what traffik 1.2's returned, a wait in milliseconds (0: allowed), as a
`DecidedWait`: a `float` that also carries the whole `Decision` (the quota left, the reset)
for the rate-limit headers. Given an `exc_info` built by hand as traffik 1.2 shaped it (no
`decide`), they run the throttle's strategy again on the `key` it names.

The policy itself (`check_on_error`, `apply_on_error`, `recover`, `ThrottleExceptionInfo`)
is `traffik.on_error`; its names are importable from here too, as in traffik 1.2.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Union, cast

from traffik.backoff import BackoffStrategy, ExponentialBackoff
from traffik.circuit_breaker import CircuitBreaker, CircuitState
from traffik.decide_again import Fallback, decide_again
from traffik.exceptions import BackendError, CircuitOpenError, ConfigurationError
from traffik.handler_arguments import (
    check_backoff,
    check_retries,
    check_seconds,
    exception_types,
)
from traffik.on_error import (
    ON_ERROR_POLICIES,
    THROTTLE_ON_ERROR_WAIT_MS,
    DecidedWait,
    ErrorHandler,
    ExceptionInfo,
    ThrottleExceptionInfo,
    apply_on_error,
    check_on_error,
    decision_from_wait,
    recover,
)

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend

__all__ = [
    "ON_ERROR_POLICIES",
    "THROTTLE_ON_ERROR_WAIT_MS",
    "CircuitBreaker",
    "CircuitState",
    "DecidedWait",
    "ErrorHandler",
    "ExceptionInfo",
    "ThrottleExceptionInfo",
    "apply_on_error",
    "backend_fallback",
    "check_on_error",
    "decision_from_wait",
    "failover",
    "fallback",
    "recover",
    "retry",
]

_ExceptionTypes = Union[type[BaseException], tuple[type[BaseException], ...]]
_Sleep = Callable[[float], Awaitable[Any]]

_DEFAULT_ON: tuple[type[BaseException], ...] = (BackendError,)

_RETRY_BACKOFF = ExponentialBackoff(2.0, max_delay=60.0)
"""`retry_delay`, then twice that, and so on up to a minute (traffik 1.2's `DEFAULT_BACKOFF`
without its jitter, so a request's worst-case wait is known)."""


def _known_down(info: ThrottleExceptionInfo, error: BaseException) -> bool:
    """Whether a retry is bound to fail at once: `error` says the store's circuit is open, or
    every circuit of the backend that failed is open (it opened while this request waited)."""
    if isinstance(error, CircuitOpenError):
        return True
    circuits = getattr(cast(Mapping[str, Any], info).get("backend"), "circuits", ())
    return bool(circuits) and all(circuit.tripped for circuit in circuits)


def _silent(info: ThrottleExceptionInfo) -> bool:
    """Whether a retry would wait for a timeout: every failing circuit of the backend that
    failed (at least one) says its store is silent (it timed out, and has not answered
    since)."""
    circuits = getattr(cast(Mapping[str, Any], info).get("backend"), "circuits", ())
    failing = [circuit for circuit in circuits if circuit.failures]
    return bool(failing) and all(circuit.silent for circuit in failing)


async def _pause(sleep: _Sleep, delays: BackoffStrategy, attempt: int, delay: float) -> None:
    """The wait before retry `attempt` (from 0), as traffik 1.2 ran its retries: none before
    the first, then `delays(attempt, delay)` seconds."""
    if attempt:
        await sleep(delays(attempt, delay))


# -- handlers --------------------------------------------------------------------------------


def fallback(
    backend: ThrottleBackend,
    fallback_on: Optional[_ExceptionTypes] = None,
    on: _ExceptionTypes = _DEFAULT_ON,
    initialized: Optional[bool] = None,
    *,
    per_process: Union[float, str, None] = None,
    reconcile: bool = True,
) -> ErrorHandler:
    """An `on_error` handler that decides on `backend` when the decision raised one of `on`.

    The whole decision runs again on `backend` (the same client, rate and cost). Any other
    exception is re-raised unchanged, so the request fails instead of being silently
    throttled; if the fallback fails too, its error is raised chained to the original.

    The arguments come in traffik 1.2's order (`fallback(spare, None, (BackendError,),
    True)` works). `fallback_on` is traffik 1.2's name for `on` and keeps working, without a
    warning; giving both with different values is a `ConfigurationError`. `backend` need not be
    initialised: it initialises itself on first use. With `initialized=False` the handler
    also calls `backend.initialize()` whenever the backend is not initialised, which reopens
    one that was explicitly closed.

    `per_process` scales the limits the fallback decides on to one process's share: a
    number in (0, 1], or the name of an environment variable holding the number of
    processes (`"WEB_CONCURRENCY"`); see `traffik.fallback_share`. With `reconcile` (the
    default), what the fallback admits is charged to the failed store once it answers again
    (`traffik.reconcile`), whether or not its circuit opened.

    Args:
        backend: The backend the decision runs on after a failure.
        fallback_on: traffik 1.2's name for `on`.
        on: The exception class, or tuple of them, that the fallback handles.
        initialized: None or True: `backend` initialises itself on first use; False: the
            handler also initialises it whenever it is not initialised.
        per_process: One process's share of the limits: a number in (0, 1], the name of an
            environment variable holding the number of processes, or None for the whole
            limits.
        reconcile: Whether what the fallback admits is charged to the failed store once it
            answers again.

    Returns:
        The handler, `async (connection, exc_info) -> DecidedWait`.

    Raises:
        ConfigurationError: When `backend` is not a `ThrottleBackend`, `on` or
            `fallback_on` is not an exception class or a non-empty tuple of them, both are
            given with different values, or `initialized`, `per_process` or `reconcile` is
            invalid.
    """
    target = Fallback("fallback", backend, initialized, per_process, reconcile)
    types = exception_types("fallback", "on", on)
    if fallback_on is not None:
        legacy = exception_types("fallback", "fallback_on", fallback_on)
        if on is not _DEFAULT_ON and set(legacy) != set(types):
            raise ConfigurationError(
                f"fallback(on={on!r}, fallback_on={fallback_on!r}): `fallback_on` is the old name of "
                "`on` (traffik 1.2 used `fallback_on`); give only one of them"
            )
        types = legacy

    async def fallback_handler(connection: Any, exc_info: ThrottleExceptionInfo) -> DecidedWait:
        if not isinstance(exc_info["exception"], types):
            raise exc_info["exception"]
        return await target.decide(exc_info)

    fallback_handler.__qualname__ = f"fallback({backend!r})"  # (how the log names it)
    return fallback_handler


backend_fallback = fallback
"""traffik 1.2's name for `fallback`."""


def retry(
    max_retries: int = 3,
    retry_delay: float = 0.1,
    backoff_multiplier: Optional[float] = None,
    backoff: Optional[BackoffStrategy] = None,
    retry_on: _ExceptionTypes = (Exception,),
    *,
    sleep: _Sleep = asyncio.sleep,
) -> ErrorHandler:
    """An `on_error` handler that runs the whole decision again, identity included.

    It retries only an error that is one of `retry_on` (any other is re-raised), at most
    `max_retries` times, and returns the first result; a retry that raises an error outside
    `retry_on` stops at once, and when every retry fails the last error propagates.
    `max_retries=0` re-raises the original. Retries stop, and the last error propagates at
    once, as soon as the store's circuit is open (a `CircuitOpenError`, or every circuit of
    the failed backend open): the store is known to be down, and every try would fail at
    once until the circuit's probe sees it again. No retry after the first is sent to a
    silent store (one that timed out and has not answered since): a request waits at most
    two timeouts, its own and its first retry's.

    The first retry runs at once (most failures are a blip: a dropped connection the client
    makes again); retry `n` after it waits `backoff(n, retry_delay)` seconds first, as
    traffik 1.2 ran it (its docs said the first retry waited too). The default backoff
    doubles from `retry_delay` up to a minute: with `retry_delay=0.1`, retries at 0, 0.1 and
    0.3 s. `backoff_multiplier=m` means `ExponentialBackoff(m)`; when `backoff` (see
    `traffik.backoff`) is given too, `backoff` is used, as in traffik 1.2. `sleep` is the
    coroutine that waits, replaceable in tests.

    Args:
        max_retries: The most retries (a whole number >= 0).
        retry_delay: The base delay before a retry, in seconds (>= 0).
        backoff_multiplier: The factor between two delays (>= 1): retry `n` (after the
            first) waits `retry_delay * backoff_multiplier ** (n - 1)` seconds.
        backoff: A callable `(attempt, base_delay) -> seconds` giving each delay; it wins
            over `backoff_multiplier`.
        retry_on: The exception class, or tuple of them, that is retried.
        sleep: The coroutine that waits a number of seconds.

    Returns:
        The handler, `async (connection, exc_info) -> DecidedWait`.

    Raises:
        ConfigurationError: When an argument is invalid.
    """
    check_retries("retry", max_retries)
    delay = check_seconds("retry", "retry_delay", retry_delay, 0)
    types = exception_types("retry", "retry_on", retry_on)
    delays: BackoffStrategy = _RETRY_BACKOFF
    if backoff_multiplier is not None:
        multiplier = check_seconds("retry", "backoff_multiplier", backoff_multiplier, 1)
        delays = ExponentialBackoff(multiplier)
    if backoff is not None:
        delays = check_backoff("retry", backoff)

    async def retry_handler(connection: Any, exc_info: ThrottleExceptionInfo) -> DecidedWait:
        error: BaseException = exc_info["exception"]
        if not isinstance(error, types):
            raise error
        for attempt in range(max_retries):
            if _known_down(exc_info, error) or (attempt and _silent(exc_info)):
                break  # no retry can succeed until the circuit's probe sees the store again
            await _pause(sleep, delays, attempt, delay)
            try:
                return DecidedWait(await decide_again(exc_info, None))
            except types as exc:
                error = exc
        raise error

    retry_handler.__qualname__ = f"retry(max_retries={max_retries}, retry_delay={delay:g})"
    return retry_handler


def failover(
    backend: ThrottleBackend,
    breaker: Optional[CircuitBreaker] = None,
    max_retries: int = 2,
    retry_delay: float = 0.05,
    backoff: Optional[BackoffStrategy] = None,
    initialized: Optional[bool] = None,
    *,
    sleep: _Sleep = asyncio.sleep,
    per_process: Union[float, str, None] = None,
    reconcile: bool = True,
) -> ErrorHandler:
    """An `on_error` handler that retries the decision behind `breaker`, then uses `backend`.

    Every failure triggers it. While the breaker refuses (open, or a probe already running),
    the decision goes straight to `backend`. Otherwise it runs again (identity included) up
    to `max_retries` times, as `retry` does: the first retry at once, then
    `backoff(n, retry_delay)` seconds before retry `n` (the same default as `retry`); the
    first success is recorded on the breaker and returned. When
    every retry fails, or the handler is cancelled while retrying, the breaker records one
    failure and the decision runs on `backend` (see `fallback`, whose `initialized` this
    shares, with `per_process` and `reconcile`). `breaker` defaults to a new `CircuitBreaker()`
    owned by this handler; pass one to share or inspect it. A `CircuitOpenError` (the store's
    own circuit is open: it is known to be down) goes to `backend` at once, with no retry and
    nothing recorded on the breaker; when the store's circuit opens during the retries (a
    retry fails with one, or every circuit of the failed backend is open), the retries stop
    and the decision goes to `backend` at once. So they do, with a failure recorded, while the
    store is silent (it timed out and has not answered since): a retry would wait a timeout
    before `backend` answers, so a request waits for the failed attempt and `backend`, no
    more. `sleep` is the coroutine that waits, replaceable in tests.

    Args:
        backend: The backend the decision runs on when the retries fail or the breaker
            refuses.
        breaker: The circuit breaker in front of the retries; None for a new one.
        max_retries: The most retries (a whole number >= 0).
        retry_delay: The base delay before a retry, in seconds (>= 0).
        backoff: A callable `(attempt, base_delay) -> seconds` giving each delay; None for
            doubling from `retry_delay` up to a minute.
        initialized: As in `fallback`: False also initialises `backend` whenever it is not
            initialised.
        sleep: The coroutine that waits a number of seconds.
        per_process: One process's share of the limits on `backend` (as in `fallback`).
        reconcile: Whether what `backend` admits is charged to the failed store once it
            answers again.

    Returns:
        The handler, `async (connection, exc_info) -> DecidedWait`.

    Raises:
        ConfigurationError: When an argument is invalid (`breaker` not a `CircuitBreaker`,
            say).
    """
    target = Fallback("failover", backend, initialized, per_process, reconcile)
    check_retries("failover", max_retries)
    delay = check_seconds("failover", "retry_delay", retry_delay, 0)
    delays = _RETRY_BACKOFF if backoff is None else check_backoff("failover", backoff)
    if breaker is None:
        breaker = CircuitBreaker()
    elif not isinstance(breaker, CircuitBreaker):
        raise ConfigurationError(f"failover(breaker={breaker!r}): must be a CircuitBreaker or None")
    circuit = breaker

    async def failover_handler(connection: Any, exc_info: ThrottleExceptionInfo) -> DecidedWait:
        if isinstance(exc_info["exception"], CircuitOpenError):
            return await target.decide(exc_info)
        if await circuit.allow_execution():
            recovered = False
            error: BaseException = exc_info["exception"]
            try:
                for attempt in range(max_retries):
                    if _known_down(exc_info, error) or _silent(exc_info):
                        break  # the store is down or silent: straight to the fallback
                    await _pause(sleep, delays, attempt, delay)
                    try:
                        result = DecidedWait(await decide_again(exc_info, None))
                    except ConfigurationError:
                        raise
                    except Exception as exc:
                        error = exc
                        continue
                    recovered = True
                    await circuit.record_success()
                    return result
            finally:
                if not recovered:
                    await circuit.record_failure()
        return await target.decide(exc_info)

    failover_handler.__qualname__ = f"failover({backend!r})"
    return failover_handler
