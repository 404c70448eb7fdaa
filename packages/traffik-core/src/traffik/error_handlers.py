"""What a failure while deciding does: the `on_error` policy, and handlers that recover.

Any exception from the decision path (the identifier, a rate or cost callable, the store)
goes to the throttle's `on_error` (else its backend's): `"throttle"` refuses for a second,
`"allow"` admits, `"raise"` re-raises, and a handler `async (connection, exc_info) -> wait_ms
| Decision` decides. A `ConfigurationError` (a callable returning `"5/fortnight"`, a negative
cost) is no failure of the store: it is logged with the throttle's uid and raised. A
handler's own exception propagates (a 500, with the traceback in the server log).

`exc_info` (`ThrottleExceptionInfo`) says how far the decision got: `key` is None when the
failure came before the client's key existed (the identifier raised, say). Its `decide`
re-runs the whole decision, identity included, on a backend of the handler's choosing, so
the handlers here never decide on a missing key: `fallback`, `retry` and `failover`.
Answers made by the policy carry no quota (`Decision.remaining` is None): a client is never
told it has `r=0` left because the store was down.

A fallback decides on a store of its own, usually in each process: `per_process` scales its
limits to one process's share (`traffik.fallback_share`), and what it admitted is charged to
the failed store when that store's circuit closes (`reconcile`, `traffik.reconcile`), so a
client is not granted its budget twice across an outage. `failover` skips its retries while
the failed store's circuit is open (`CircuitOpenError`): the store is known to be down.

The handlers return what traffik 1.2's returned, a wait in milliseconds (0: allowed), as a
`DecidedWait`: a `float` that also carries the whole `Decision` (the quota left, the reset)
for the rate-limit headers. Given an `exc_info` built by hand as traffik 1.2 shaped it (no
`decide`), they run the throttle's strategy again on the `key` it names.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, TypedDict, Union, cast

from traffik.backoff import BackoffStrategy, ExponentialBackoff
from traffik.circuit_breaker import CircuitBreaker, CircuitState
from traffik.decision import Decision
from traffik.exceptions import BackendError, CircuitOpenError, ConfigurationError
from traffik.fallback_share import process_share, scaled_rates
from traffik.logs import QuietLog
from traffik.reconcile import Ledger

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate

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

logger = logging.getLogger("traffik")
_failures = QuietLog(logger)
"""Failures of one kind (throttle, error type, policy) are logged once per 10 s, with a count."""

THROTTLE_ON_ERROR_WAIT_MS = 1000
"""The wait `on_error="throttle"` answers with: one second."""

ON_ERROR_POLICIES = ("throttle", "allow", "raise")
"""The named `on_error` policies: refuse for a second, admit, or re-raise."""


def check_on_error(on_error: Any, owner: str) -> Any:
    """`on_error` if valid: None, one of `ON_ERROR_POLICIES`, or a handler.

    Args:
        on_error: The policy to check: None, `"throttle"`, `"allow"`, `"raise"` or a
            callable handler.
        owner: Who the policy belongs to, named in the error message.

    Returns:
        `on_error`, unchanged.

    Raises:
        ConfigurationError: When `on_error` is none of these.
    """
    if on_error is None or callable(on_error) or on_error in ON_ERROR_POLICIES:
        return on_error
    raise ConfigurationError(
        f"{owner}: on_error={on_error!r} is not valid; use 'throttle', 'allow', 'raise' "
        "or an async handler (connection, exc_info) -> wait_ms"
    )


class ThrottleExceptionInfo(TypedDict):
    """What a throttle tells its `on_error` handler about a decision that raised."""

    exception: Exception
    """The exception the decision raised."""
    connection: Any
    """The request or websocket being throttled."""
    key: Optional[str]
    """The client's key (before namespacing), or None: the failure came before it existed."""
    cost: Optional[int]
    """The units the hit was to spend, None when it was not known yet."""
    rate: Optional[Rate]
    """The rate (with several, the first), None when it was not known yet."""
    rates: Optional[tuple[Rate, ...]]
    """Every rate of the decision."""
    backend: Optional[ThrottleBackend]
    """The backend the decision ran on (None when none could be found)."""
    context: Mapping[str, Any]
    """The context the throttle was called with."""
    throttle: Any
    """The throttle whose decision raised."""
    decide: Callable[[Optional[ThrottleBackend]], Awaitable[Decision]]
    """Run the whole decision again (identity included) on a backend, None for the usual one."""


ExceptionInfo = ThrottleExceptionInfo
"""traffik 1.2's name for `ThrottleExceptionInfo`."""

ErrorHandler = Callable[[Any, ThrottleExceptionInfo], Awaitable[Union[float, Decision]]]
"""An `on_error` handler: `async (connection, exc_info) -> wait_ms or Decision` (0 ms allows)."""


class DecidedWait(float):
    """A wait in milliseconds (0.0: allowed), as traffik 1.2's handlers return, that also
    carries the `Decision` it comes from.

    Built as `DecidedWait(decision)`: the float's value is the decision's `wait_ms`.

    Attributes:
        decision: The decision the wait comes from (its quota left and reset included).
    """

    decision: Decision

    def __new__(cls, decision: Decision) -> DecidedWait:
        self = super().__new__(cls, decision.wait_ms)
        self.decision = decision
        return self


_ExceptionTypes = Union[type[BaseException], tuple[type[BaseException], ...]]
_Sleep = Callable[[float], Awaitable[Any]]

_DEFAULT_ON: tuple[type[BaseException], ...] = (BackendError,)

_RETRY_BACKOFF = ExponentialBackoff(2.0, max_delay=60.0)
"""`retry_delay`, then twice that, and so on up to a minute: the delays traffik's docs promise."""


# -- the policy ------------------------------------------------------------------------------


def decision_from_wait(wait: Any, limit: int) -> Decision:
    """A `Decision` from a traffik 1.2 style wait in ms (0 or less: allowed), quota unknown.

    Args:
        wait: The wait, in milliseconds (a number, or None for 0); 0 or less allows, and a
            positive wait is rounded up to whole milliseconds (at least 1).
        limit: The limit of the rate the decision was made under.

    Returns:
        The decision, with `remaining` None.
    """
    wait = float(wait or 0.0)
    if wait <= 0:
        return Decision(True, 0, None, 0, limit)
    wait_ms = max(1, math.ceil(wait))
    return Decision(False, wait_ms, None, wait_ms, limit)


async def apply_on_error(policy: Any, info: ThrottleExceptionInfo) -> Decision:
    """The decision `policy` makes for the failure `info` describes (module docstring).

    The failure is logged (once per 10 seconds per throttle, error type and policy) unless
    the policy is `"raise"`.

    Args:
        policy: The `on_error` policy: `"throttle"` (or None), `"allow"`, `"raise"` or a
            handler `(connection, exc_info) -> wait_ms or Decision`, sync or async.
        info: What the throttle knows about the failure.

    Returns:
        The decision: refused for `THROTTLE_ON_ERROR_WAIT_MS` milliseconds, allowed, or the
        handler's (a returned wait in ms becomes a `Decision`).

    Raises:
        Exception: `info["exception"]` when `policy` is `"raise"`, or whatever the handler
            raises.
    """
    exc = info["exception"]
    rate = info["rate"]
    limit = rate.limit if rate is not None else 0
    if policy == "raise":
        raise exc
    throttle = info["throttle"]
    _failures.log(
        logging.WARNING,
        (
            getattr(throttle, "uid", None),
            type(exc),
            policy if isinstance(policy, str) else "handler",
        ),
        "%r could not decide (%s: %s); on_error=%r",
        throttle,
        type(exc).__name__,
        exc,
        policy,
    )
    if policy == "allow":
        return Decision(True, 0, None, 0, limit)
    if not callable(policy):
        return Decision(False, THROTTLE_ON_ERROR_WAIT_MS, None, THROTTLE_ON_ERROR_WAIT_MS, limit)
    result = policy(info["connection"], info)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, Decision):
        return result
    if isinstance(result, DecidedWait):
        return result.decision
    return decision_from_wait(result, limit)


async def recover(
    throttle: Any,
    exc: Exception,
    connection: Any,
    context: Mapping[str, Any],
    cost: Optional[int],
    backend: ThrottleBackend,
    prepared: Optional[tuple[tuple[Rate, ...], int, str]],
) -> tuple[Decision, Optional[tuple[Rate, ...]], Optional[str]]:
    """Apply `throttle`'s `on_error` (else `backend`'s) to a decision that raised `exc`;
    `prepared` is how far it got: the rates, cost and key, or None when it failed before the
    key existed. Returns the decision, the rates it was made under and the client's key, as
    far as known.

    Args:
        throttle: The throttle whose decision raised.
        exc: The exception raised.
        connection: The request or websocket being throttled.
        context: The context the throttle was called with.
        cost: The units the hit was to spend, None when not known yet.
        backend: The backend the decision ran on.
        prepared: The rates, cost and key, or None when the failure came before the key.

    Returns:
        The decision, the rates it was made under (None when unknown) and the client's key
        (None when unknown).
    """
    key = prepared[2] if prepared is not None else None
    rates = prepared[0] if prepared is not None else throttle.static_rates

    async def decide(on: Optional[ThrottleBackend] = None) -> Decision:
        decision = await throttle._decide(connection, context, cost, on or backend)
        return decision if decision is not None else Decision(True, 0, None, 0, 0)

    info: ThrottleExceptionInfo = {
        "exception": exc,
        "connection": connection,
        "key": key,
        "cost": prepared[1] if prepared is not None else cost,
        "rate": rates[0] if rates else None,
        "rates": rates,
        "backend": backend,
        "context": context,
        "throttle": throttle,
        "decide": decide,
    }
    policy = throttle.on_error if throttle.on_error is not None else backend.on_error
    return await apply_on_error(policy, info), rates, key


# -- handlers --------------------------------------------------------------------------------


def _exception_types(owner: str, name: str, value: object) -> tuple[type[BaseException], ...]:
    types = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ConfigurationError(
            f"{owner}({name}={value!r}): must be an exception class or a non-empty tuple of them, "
            "like (BackendError,)"
        )
    return types


def _check_backend(owner: str, backend: object) -> None:
    from traffik.backends.base import ThrottleBackend

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


async def _decide_again(
    info: ThrottleExceptionInfo, backend: Optional[ThrottleBackend]
) -> Decision:
    """The decision again on `backend` (None: the one that failed): the whole decision with
    `info["decide"]`, or, for an `exc_info` without it, the strategy on `info["key"]`."""
    decide = cast(Mapping[str, Any], info).get("decide")  # absent from traffik 1.2's exc_info
    if decide is not None:
        return await decide(backend)
    strategy, rate = info["throttle"].strategy, info["rate"]
    on, key, cost = backend or info["backend"], info["key"], info["cost"]
    run = getattr(strategy, "decide", None)
    if run is not None:
        decision: Decision = await run(key, rate, on, cost)
        return decision
    return decision_from_wait(await strategy(key, rate, on, cost), rate.limit if rate else 0)


async def _decide_on_key(
    info: ThrottleExceptionInfo, backend: ThrottleBackend, rates: tuple[Rate, ...]
) -> Decision:
    """The decision on `backend` for the key `info` names, under `rates` (scaled ones)."""
    throttle, key, cost = info["throttle"], info["key"], info["cost"]
    step = getattr(throttle, "_step", None)
    if step is not None:
        decision: Decision = await step(key, rates, cost, backend)
        return decision
    rate, strategy = rates[0], throttle.strategy
    run = getattr(strategy, "decide", None)
    if run is not None:
        decision = await run(key, rate, backend, cost)
        return decision
    return decision_from_wait(await strategy(key, rate, backend, cost), rate.limit)


class _Fallback:
    """Where a handler's fallback decisions go: `backend`, each limit scaled by `share`, and
    what it admits recorded in `ledger` (None: not reconciled)."""

    __slots__ = ("backend", "initialized", "ledger", "share")

    def __init__(
        self,
        owner: str,
        backend: ThrottleBackend,
        initialized: Optional[bool],
        per_process: Any,
        reconcile: bool,
    ) -> None:
        _check_backend(owner, backend)
        _check_initialized(owner, initialized)
        if not isinstance(reconcile, bool):
            raise ConfigurationError(f"{owner}(reconcile={reconcile!r}): must be True or False")
        self.backend = backend
        self.initialized = initialized
        self.share = process_share(owner, per_process)
        self.ledger = Ledger() if reconcile else None

    async def decide(self, info: ThrottleExceptionInfo) -> DecidedWait:
        """The decision again on the fallback; its failure is raised chained to the original."""
        backend = self.backend
        try:
            if self.initialized is False and not backend.initialized:
                await backend.initialize()
            key = info["key"]
            rates = cast(Mapping[str, Any], info).get("rates") or (
                (info["rate"],) if info["rate"] is not None else None
            )
            if key is None or not rates:
                return DecidedWait(await _decide_again(info, backend))
            if self.share < 1.0:
                decision = await _decide_on_key(info, backend, scaled_rates(rates, self.share))
            else:
                decision = await _decide_again(info, backend)
            failed = info["backend"]
            if (
                self.ledger is not None
                and failed is not None
                and decision.allowed
                and decision.remaining is not None
            ):
                self.ledger.add(failed, info["throttle"].strategy, key, rates, info["cost"] or 1)
            return DecidedWait(decision)
        except Exception as exc:
            raise exc from info["exception"]


def fallback(
    backend: ThrottleBackend,
    on: _ExceptionTypes = _DEFAULT_ON,
    *,
    fallback_on: Optional[_ExceptionTypes] = None,
    initialized: Optional[bool] = None,
    per_process: Union[float, str, None] = None,
    reconcile: bool = True,
) -> ErrorHandler:
    """An `on_error` handler that decides on `backend` when the decision raised one of `on`.

    The whole decision runs again on `backend` (the same client, rate and cost). Any other
    exception is re-raised unchanged, so the request fails instead of being silently
    throttled; if the fallback fails too, its error is raised chained to the original.

    `fallback_on` is traffik 1.2's name for `on` and keeps working, without a warning;
    giving both with different values is a `ConfigurationError`. `backend` need not be
    initialised: it initialises itself on first use. With `initialized=False` the handler
    also calls `backend.initialize()` whenever the backend is not initialised, which reopens
    one that was explicitly closed.

    `per_process` scales the limits the fallback decides on to one process's share: a
    number in (0, 1], or the name of an environment variable holding the number of
    processes (`"WEB_CONCURRENCY"`); see `traffik.fallback_share`. With `reconcile` (the
    default), what the fallback admits is charged to the failed store once its circuit
    closes (`traffik.reconcile`).

    Args:
        backend: The backend the decision runs on after a failure.
        on: The exception class, or tuple of them, that the fallback handles.
        fallback_on: traffik 1.2's name for `on`.
        initialized: None or True: `backend` initialises itself on first use; False: the
            handler also initialises it whenever it is not initialised.
        per_process: One process's share of the limits: a number in (0, 1], the name of an
            environment variable holding the number of processes, or None for the whole
            limits.
        reconcile: Whether what the fallback admits is charged to the failed store once its
            circuit closes.

    Returns:
        The handler, `async (connection, exc_info) -> DecidedWait`.

    Raises:
        ConfigurationError: When `backend` is not a `ThrottleBackend`, `on` or
            `fallback_on` is not an exception class or a non-empty tuple of them, both are
            given with different values, or `initialized`, `per_process` or `reconcile` is
            invalid.
    """
    target = _Fallback("fallback", backend, initialized, per_process, reconcile)
    types = _exception_types("fallback", "on", on)
    if fallback_on is not None:
        legacy = _exception_types("fallback", "fallback_on", fallback_on)
        if on is not _DEFAULT_ON and set(legacy) != set(types):
            raise ConfigurationError(
                f"fallback(on={on!r}, fallback_on={fallback_on!r}): `fallback_on` is the old name of "
                "`on`; give only one of them"
            )
        types = legacy

    async def fallback_handler(connection: Any, exc_info: ThrottleExceptionInfo) -> DecidedWait:
        if not isinstance(exc_info["exception"], types):
            raise exc_info["exception"]
        return await target.decide(exc_info)

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
    `max_retries=0` re-raises the original.

    Retry `n` (from 1) waits `backoff(n, retry_delay)` seconds first. The default backoff
    doubles from `retry_delay` up to a minute, so the first retry comes `retry_delay` after
    the failure, as traffik's docs promise. Give `backoff` (see `traffik.backoff`) or
    `backoff_multiplier` (`retry_delay * multiplier ** (n - 1)`), not both. `sleep` is the
    coroutine that waits, replaceable in tests.

    Args:
        max_retries: The most retries (a whole number >= 0).
        retry_delay: The base delay before a retry, in seconds (>= 0).
        backoff_multiplier: The factor between two delays (>= 1): retry `n` waits
            `retry_delay * backoff_multiplier ** (n - 1)` seconds.
        backoff: A callable `(attempt, base_delay) -> seconds` giving each delay.
        retry_on: The exception class, or tuple of them, that is retried.
        sleep: The coroutine that waits a number of seconds.

    Returns:
        The handler, `async (connection, exc_info) -> DecidedWait`.

    Raises:
        ConfigurationError: When an argument is invalid, or both `backoff` and
            `backoff_multiplier` are given.
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

    async def retry_handler(connection: Any, exc_info: ThrottleExceptionInfo) -> DecidedWait:
        error: BaseException = exc_info["exception"]
        if not isinstance(error, types):
            raise error
        for attempt in range(1, max_retries + 1):
            await sleep(delays(attempt, delay))
            try:
                return DecidedWait(await _decide_again(exc_info, None))
            except types as exc:
                error = exc
        raise error

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
    to `max_retries` times, waiting `backoff(n, retry_delay)` before retry `n` (the same
    default as `retry`); the first success is recorded on the breaker and returned. When
    every retry fails, or the handler is cancelled while retrying, the breaker records one
    failure and the decision runs on `backend` (see `fallback`, whose `initialized` this
    shares, with `per_process` and `reconcile`). `breaker` defaults to a new `CircuitBreaker()`
    owned by this handler; pass one to share or inspect it. A `CircuitOpenError` (the store's
    own circuit is open: it is known to be down) goes to `backend` at once, with no retry and
    nothing recorded on the breaker. `sleep` is the coroutine that waits, replaceable in tests.

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
        reconcile: Whether what `backend` admits is charged to the failed store once its
            circuit closes.

    Returns:
        The handler, `async (connection, exc_info) -> DecidedWait`.

    Raises:
        ConfigurationError: When an argument is invalid (`breaker` not a `CircuitBreaker`,
            say).
    """
    target = _Fallback("failover", backend, initialized, per_process, reconcile)
    _check_retries("failover", max_retries)
    delay = _check_seconds("failover", "retry_delay", retry_delay, 0)
    delays = _RETRY_BACKOFF if backoff is None else _check_backoff("failover", backoff)
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
            try:
                for attempt in range(1, max_retries + 1):
                    await sleep(delays(attempt, delay))
                    try:
                        result = DecidedWait(await _decide_again(exc_info, None))
                    except ConfigurationError:
                        raise
                    except Exception:
                        continue
                    recovered = True
                    await circuit.record_success()
                    return result
            finally:
                if not recovered:
                    await circuit.record_failure()
        return await target.decide(exc_info)

    return failover_handler
