"""What a failure while deciding does: the `on_error` policy.

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

A failure while reading, giving back or forgetting one client's bucket (`stat`, `check`,
`refund`, `reset`, called by an application inside a request) follows the same policy
(`bucket_failure`): `"raise"` re-raises; any other is logged as a decision's failure is, and
the operation answers for itself: `stat` None, `check` False under `"throttle"` (else True),
`refund` gives nothing back, `reset` returns False. A handler is not run for these (it would
decide, and charge, on a store of its own). A `ConfigurationError` raises, as here.

After a failed decision, the connection notes what the policy's decision charged (`recover`):
a fallback's charge is given back on the fallback by `refund`, and a hit no store took has
nothing to give back.

The handlers (`fallback`, `retry`, `failover`) live in `traffik.error_handlers`.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, TypedDict, Union

from traffik import outcomes
from traffik._asyncio_only import no_asyncio_loop, outside_asyncio
from traffik.call_shapes import check_called_as
from traffik.decision import LONGEST_WAIT_MS, Decision
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError
from traffik.logs import QuietLog, object_key

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate

__all__ = [
    "ON_ERROR_POLICIES",
    "THROTTLE_ON_ERROR_WAIT_MS",
    "DecidedWait",
    "ErrorHandler",
    "ExceptionInfo",
    "ThrottleExceptionInfo",
    "apply_on_error",
    "bucket_failure",
    "check_on_error",
    "decision_from_wait",
    "recover",
]

logger = logging.getLogger("traffik")
_failures = QuietLog(logger, sources="throttles")
"""Failures of one kind are logged once per 10 s, with a count: a store's (the store, error
type and policy), whichever throttles met them; a throttle's own code's (the throttle, error
type and policy)."""

THROTTLE_ON_ERROR_WAIT_MS = 1000
"""The wait `on_error="throttle"` answers with: one second."""

ON_ERROR_POLICIES = ("throttle", "allow", "raise")
"""The named `on_error` policies: refuse for a second, admit, or re-raise."""

_ANSWERED = {None: "refused", "throttle": "refused", "allow": "let through"}
"""What a named policy did with the hit, for the log line of a failure."""
_STORE_ADVICE = "check that the store answers"
_ERROR_ADVICE = "the store's error says what to fix"
_CODE_ADVICE = (
    "it failed before the store was asked: check the throttle's identifier and its rate and "
    "cost callables"
)
_CLOSED_ADVICE = (
    "the backend was closed (the app is shutting down, or close() ran), not the store: it "
    "decides again once initialised (`await backend.initialize()`, or entering it again)"
)


def check_on_error(on_error: Any, owner: str) -> Any:
    """`on_error` if valid: None, one of `ON_ERROR_POLICIES`, or a handler.

    Args:
        on_error: The policy to check: None, `"throttle"`, `"allow"`, `"raise"` or a
            callable handler.
        owner: Who the policy belongs to, named in the error message.

    Returns:
        `on_error`, unchanged.

    Raises:
        ConfigurationError: When `on_error` is none of these, or a handler that cannot be
            called as `(connection, exc_info)`.
    """
    if callable(on_error):
        check_called_as(on_error, "on_error", owner)
        return on_error
    if on_error is None or on_error in ON_ERROR_POLICIES:
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
    decide: Callable[..., Awaitable[Decision]]
    """`decide(backend=None, share=1.0)`: run the whole decision again (identity included) on
    a backend (None: the usual one), each limit scaled by `share` (a fallback's
    `per_process`); what it charges is noted on that backend."""


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


# -- the policy ------------------------------------------------------------------------------


def decision_from_wait(wait: Any, limit: int) -> Decision:
    """A `Decision` from a traffik 1.2 style wait in ms (0 or less: allowed), quota unknown.

    Args:
        wait: The wait, in milliseconds (a number, or None for 0); 0 or less allows, and a
            positive wait is rounded up to whole milliseconds (at least 1).
        limit: The limit of the rate the decision was made under.

    Returns:
        The decision, with `remaining` None.

    Raises:
        ConfigurationError: When `wait` is no number (a strategy or handler returned a
            string, say): a mistake in that code, not a failure of the store.
    """
    try:
        wait = float(wait or 0.0)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"a strategy or on_error handler returned {wait!r} ({type(wait).__name__}); "
            "return a wait in milliseconds (0 allows) or a Decision"
        ) from None
    if wait <= 0:
        return Decision(True, 0, None, 0, limit)
    if wait != wait:  # NaN: a wait nobody can tell, as short as can be
        wait = 1.0
    wait_ms = LONGEST_WAIT_MS if wait >= LONGEST_WAIT_MS else max(1, math.ceil(wait))
    return Decision(False, wait_ms, None, wait_ms, limit)


async def apply_on_error(policy: Any, info: ThrottleExceptionInfo) -> Decision:
    """The decision `policy` makes for the failure `info` describes (module docstring).

    The failure is logged (once per 10 seconds per store, error type and policy, whichever
    throttles met it; per throttle when its own code failed) unless the policy is `"raise"`, naming the throttle, the backend asked (its `repr`: a URL
    without its password), the error, what the client got and where to look.

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
    uid = getattr(throttle, "uid", None)
    _failures.log(
        logging.WARNING,
        (  # the store's, or its code's
            object_key(info["backend"]) if info["key"] is not None else uid,
            type(exc),
            policy if isinstance(policy, str) else "handler",
        ),
        "%r could not decide on %r (%s: %s); on_error=%s: %s; %s",
        throttle,
        info["backend"],
        type(exc).__name__,
        exc,
        _policy_name(policy),
        "handed to the handler (what it answers or raises)"
        if callable(policy)
        else _ANSWERED.get(policy, "refused"),
        _advice(exc, info["backend"]) if info["key"] is not None else _CODE_ADVICE,
        source=uid,
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


def bucket_failure(
    throttle: Any, operation: str, exc: Exception, backend: Optional[ThrottleBackend], outcome: str
) -> Any:
    """The `on_error` policy a failure of `operation` on one client's bucket follows (module
    docstring): the throttle's, else `backend`'s (the one the operation ran on). Logged as a
    decision's failure is (once per 10 seconds per store, operation, error type and policy;
    per throttle when it is no store error), saying what the operation did instead
    (`outcome`).

    Args:
        throttle: The throttle whose operation failed.
        operation: `"refund"`, `"reset"`, `"stat"` or `"check"`.
        exc: The exception the operation raised.
        backend: The backend it ran on, None when not known.
        outcome: What the operation answers instead, for the log (`"nothing given back"`).

    Returns:
        The policy: `"throttle"` (or None), `"allow"` or a handler, never run here.

    Raises:
        ConfigurationError: `exc`, when it is one: a mistake in the call, not an outage;
            or when no asyncio loop runs (`traffik._asyncio_only`).
        Exception: `exc`, when the policy is `"raise"`.
    """
    if no_asyncio_loop():
        raise outside_asyncio(f"{throttle!r} on {backend!r}") from exc
    policy = throttle.on_error
    if policy is None and backend is not None:
        policy = backend.on_error
    if isinstance(exc, ConfigurationError) or policy == "raise":
        raise exc
    uid = getattr(throttle, "uid", None)
    _failures.log(
        logging.WARNING,
        (  # the store's, or its code's
            object_key(backend) if isinstance(exc, BackendError) else uid,
            operation,
            type(exc),
            policy if isinstance(policy, str) else "handler",
        ),
        "%r could not %s on %r (%s: %s); on_error=%s: %s; %s",
        throttle,
        operation,
        backend,
        type(exc).__name__,
        exc,
        _policy_name(policy),
        outcome,
        _advice(exc, backend)
        if isinstance(exc, BackendError)
        else "check the code that raised it (the throttle's identifier, a rate or cost "
        "callable) or the store",
        source=uid,
    )
    return policy


def _policy_name(policy: Any) -> str:
    """How a log line names an `on_error` policy: a named one quoted (`'allow'`), a handler
    by its qualified name (the built-ins' says how they were made:
    `fallback(InMemoryBackend(namespace='spare'))`; a function of yours, `on_store_error`),
    anything else by its `repr`."""
    name = None if isinstance(policy, str) else getattr(policy, "__qualname__", None)
    return name if isinstance(name, str) else repr(policy)


def _advice(exc: BaseException, backend: Optional[ThrottleBackend]) -> str:
    """What to check after a store's failure: nothing, when it is `backend` that was closed
    (a shutdown); whether it answers, when it did not (a refused connection, a timeout, an
    open circuit: `backend.unreachable_advice` says what to look at); else its own message
    (a full disk, a corrupt file)."""
    if backend is not None and backend.explicitly_closed:
        return _CLOSED_ADVICE
    if isinstance(exc, BackendError) and not isinstance(exc, BackendConnectionError):
        return _ERROR_ADVICE
    return _STORE_ADVICE if backend is None else backend.unreachable_advice


def _note_failed_hit(connection: Any, throttle: Any, charged: bool) -> None:
    """After the policy decided a hit that failed: the connection notes charges from now on
    (`traffik.outcomes`), so the charge a store took for it (`charged`: a fallback's, a
    retry's) is noted and given back there by `refund`; a hit no store is known to have
    charged is marked as having nothing to give back (`outcomes.given_back`)."""
    scope = getattr(connection, "scope", None)
    if scope is None:
        return
    state = scope.get("state")
    if state is None:
        scope["state"] = state = {}
    if state.get(outcomes.CHARGES_KEY) is None:
        state[outcomes.CHARGES_KEY] = []
    if scope.get("type") == "websocket":  # (a message of its own: `follow` it first)
        outcomes.follow(connection, throttle)
    if not charged:
        refunded = state.setdefault(outcomes.REFUNDED_KEY, [])
        if throttle not in refunded:
            refunded.append(throttle)


async def recover(
    throttle: Any,
    exc: Exception,
    connection: Any,
    context: Mapping[str, Any],
    cost: Optional[int],
    backend: ThrottleBackend,
    prepared: Optional[tuple[tuple[Rate, ...], int, str]],
) -> tuple[Decision, Optional[tuple[Rate, ...]], Optional[str], Optional[int], ThrottleBackend]:
    """Apply `throttle`'s `on_error` (else `backend`'s) to a decision that raised `exc`;
    `prepared` is how far it got: the rates, cost and key, or None when it failed before the
    key existed. Returns the decision with what it was made under, as far as known: the
    rates, the client's key, the cost and the backend that decided.

    A decision the policy made with `exc_info["decide"]` (a `fallback`, a `failover`, a
    `retry`: every handler here decides with it) is the one the backend it ran on made: its
    rates (scaled, for a `per_process` fallback), key, cost and that backend come with it, so
    what it charged is noted (and given back) there. Any other decision of the policy is
    not known to have charged anything on `backend`: one with a quota (`remaining`) comes
    with no key, so no charge is noted for it (a policy's own answer has no quota, and is
    never noted). Either way the connection notes it (`_note_failed_hit`): a later
    `throttle.refund(connection)` gives back on the store that took the hit, or nothing.

    Args:
        throttle: The throttle whose decision raised.
        exc: The exception raised.
        connection: The request or websocket being throttled.
        context: The context the throttle was called with.
        cost: The units the hit was to spend, None when not known yet.
        backend: The backend the decision ran on.
        prepared: The rates, cost and key, or None when the failure came before the key.

    Returns:
        The decision, the rates it was made under (None when unknown), the client's key
        (None when unknown, or when the policy decided by itself), the units it took (None:
        the throttle's cost) and the backend that decided.

    Raises:
        ConfigurationError: When no asyncio loop runs (`traffik._asyncio_only`): not an
            outage the policy could answer.
        Exception: Whatever the policy raises (`exc` for `"raise"`).
    """
    if no_asyncio_loop():  # (not an outage: every hit would fail the same way)
        raise outside_asyncio(f"{throttle!r} on {backend!r}") from exc
    key = prepared[2] if prepared is not None else None
    rates = prepared[0] if prepared is not None else throttle.static_rates
    made: list[tuple[Decision, tuple[Rate, ...], int, str, ThrottleBackend]] = []

    async def decide(on: Optional[ThrottleBackend] = None, share: float = 1.0) -> Decision:
        on = on or backend
        found = await throttle._decide(connection, context, cost, on, share)
        if found is None:
            return Decision(True, 0, None, 0, 0)
        made.append((*found, on))
        return found[0]

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
    decision = await apply_on_error(policy, info)
    for found, decided_rates, taken, decided_key, on in reversed(made):
        if found is decision:
            _note_failed_hit(connection, throttle, decision.allowed and found.remaining is not None)
            return decision, decided_rates, decided_key, taken, on
    _note_failed_hit(connection, throttle, False)
    if decision.remaining is not None:  # (a quota, from a store we do not know of)
        key = None
    return decision, rates, key, info["cost"], backend
