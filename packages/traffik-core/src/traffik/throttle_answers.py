"""What a throttle does with a decision: admit (mark, note the charge, write the headers),
refuse (the handler, a 429 by default), or, for a shadow throttle, only record.

Mixed into `Throttle`. `_admitted` is the hot path of an allowed hit; everything else
(refusals, shadow throttles, observers) goes through `_settle`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from starlette.requests import Request
from starlette.responses import Response

from traffik.config import THROTTLED_STATE_KEY
from traffik.events import ALLOWED, ERROR, REFUSED, SHADOW_REFUSED, DecisionEvent, notify
from traffik.events import _observers as _observers
from traffik.exceptions import ConfigurationError
from traffik.logs import QuietLog
from traffik.outcomes import CHARGES_KEY, Outcome, note
from traffik.responses import answer_with
from traffik.strategies.markers import deciding

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decision import Decision
    from traffik.headers import Headers
    from traffik.rates import Rate
    from traffik.response_headers import HeaderPlan

__all__ = ["PendingRequest", "ThrottleAnswers", "made", "no_body"]

logger = logging.getLogger("traffik")
_shadow_log = QuietLog(logger, interval=1.0)
_unanswered = QuietLog(logger, interval=60.0)
"""Would-be refusals of shadow throttles: one line per client and throttle per second."""


class PendingRequest:
    """An HTTP request a throttle counts before anyone needs it as a `Request`:
    `ThrottleMiddleware` hands `hit` this, with the `scope` the throttle reads, and `hit`
    makes the `Request` (`made`) only when a callable of the app is given the connection
    (rules, an identifier, a rate or cost callable, handlers, observers, header values,
    `on_error`). Made without an `__init__`: the caller sets `scope`."""

    __slots__ = ("_request", "scope")

    scope: Any
    _request: Request


async def no_body() -> Any:
    """The `receive` of the requests `ThrottleMiddleware` hands its throttles (and their
    rules): the middleware decides before the app reads the body, which nothing else may
    read first."""
    raise ConfigurationError(
        "under ThrottleMiddleware, a throttle's identifier, rules, rate and cost callables "
        "cannot read the request body (the middleware decides before the app reads it): "
        "read the headers, the query or the address there, or apply the throttle as a "
        "dependency or with throttled(...), which run once the body is read"
    )


def made(connection: Any) -> Any:
    """`connection`, or the `Request` a `PendingRequest` stands for, made once (the app's
    callables see one connection per hit)."""
    if type(connection) is not PendingRequest:
        return connection
    try:
        return connection._request
    except AttributeError:
        request = connection._request = Request(connection.scope, no_body)
        return request


def _let_through(connection: Any) -> Any:
    """`connection`, marked not throttled (`is_throttled`): a hit that returns without a
    decision must not leave a WebSocket carrying an earlier message's refusal."""
    scope = connection.scope
    state = scope.get("state")
    if state is None:
        scope["state"] = state = {}
    state[THROTTLED_STATE_KEY] = 0.0
    return connection


class ThrottleAnswers:
    """Admitting, refusing and recording decisions, for `Throttle`."""

    uid: str
    cost: int
    strategy: Any
    shadow: Optional[bool]
    headers: Optional[Headers]
    min_wait_period: Optional[float]
    skip_handler: bool
    handle_throttled: Optional[Callable[..., Any]]
    charge_when: Optional[Callable[[Outcome], bool]]
    on_decision: Optional[Callable[[DecisionEvent], Any]]
    _charged_key: str
    _plan: Optional[HeaderPlan]
    default_handler: ClassVar[Callable[..., Any]]
    use_backend_handler: ClassVar[bool]

    if TYPE_CHECKING:

        def _plan_for(self, rates: tuple[Rate, ...]) -> HeaderPlan: ...

    def watches(self, backend: ThrottleBackend, shadow: Optional[bool] = None) -> bool:
        """Whether a hit on `backend` only watches (decides and counts, never refuses): the
        hit's `shadow` when given, else this throttle's, else the backend's default."""
        if shadow is not None:
            return shadow
        if self.shadow is not None:
            return self.shadow
        return bool(backend.defaults.shadow)

    async def _settle(
        self,
        connection: Any,
        decision: Decision,
        rates: Optional[tuple[Rate, ...]],
        key: Optional[str],
        ctx: Mapping[str, Any],
        backend: ThrottleBackend,
        skip_handler: Optional[bool],
        response: Optional[Response],
        cost: Optional[int],
        started: Optional[float],
        failure: Optional[Exception],
        shadow: Optional[bool],
        failed_on: Optional[ThrottleBackend] = None,
    ) -> Any:
        """Answer a decision off the hot path: a refusal (enforced, or only recorded by a
        shadow throttle) and, when observers are set, the decision's event (naming the store
        that failed, `failed_on`, when `on_error` answered on another)."""
        connection = made(connection)  # (handed to the handler and the observers)
        shadow = self.watches(backend, shadow)
        outcome = ALLOWED if decision.allowed else (SHADOW_REFUSED if shadow else REFUSED)
        if failure is not None:
            outcome = ERROR
        if started is not None:
            refused = getattr(decision, "refused", None)
            event = DecisionEvent(
                self,
                connection,
                key,
                rates,
                rates[refused or 0] if rates else None,
                outcome,
                decision.wait_ms,
                decision.remaining,
                failed_on or backend,
                perf_counter() - started,
                failure,
            )
            notify(event, self.on_decision)
        if decision.allowed:
            self._admitted(
                connection, decision, rates, key, ctx, None if shadow else response, cost, backend
            )
            return connection
        if shadow:
            _shadow_log.log(
                logging.INFO,
                (self.uid, key),
                "shadow throttle %r would refuse %s: rate %s, wait %d ms",
                self.uid,
                key,
                rates[getattr(decision, "refused", None) or 0] if rates else None,
                decision.wait_ms,
            )
            return _let_through(connection)  # (no headers, and no charge: it took nothing)
        return await self._throttled(
            connection, decision, rates, key, ctx, skip_handler, backend, cost
        )

    async def answer(
        self,
        connection: Any,
        decision: Decision,
        rates: Optional[tuple[Rate, ...]],
        key: Optional[str],
        ctx: Mapping[str, Any],
        backend: ThrottleBackend,
        skip_handler: Optional[bool] = None,
        response: Optional[Response] = None,
        cost: Optional[int] = None,
        started: Optional[float] = None,
        shadow: Optional[bool] = None,
    ) -> Any:
        """Act on `decision` as `hit` does: an admitted one marks the connection and writes
        the headers on `response`; a refused one goes to the handler (or, for a shadow
        throttle, is only recorded). `cost` is the units the decision took (None: the
        throttle's cost); `started` is the `perf_counter()` the decision began at, for the
        observers' event."""
        watched = self.on_decision is not None or _observers
        if (
            decision.allowed
            and not watched
            and shadow is None
            and self.shadow is None
            and not backend.defaults.shadow
        ):
            self._admitted(connection, decision, rates, key, ctx, response, cost, backend)
            return connection
        return await self._settle(
            connection,
            decision,
            rates,
            key,
            ctx,
            backend,
            skip_handler,
            response,
            cost,
            (perf_counter() if started is None else started) if watched else None,
            None,
            shadow,
        )

    def _admitted(
        self,
        connection: Any,
        decision: Decision,
        rates: Optional[tuple[Rate, ...]],
        key: Optional[str],
        ctx: Mapping[str, Any],
        response: Optional[Response],
        cost: Optional[int],
        backend: ThrottleBackend,
    ) -> None:
        """Mark an admitted connection, note its charge (`cost` units of `key` on `backend`,
        the backend that decided, with the decision) when it may be given back later
        (`charge_when`, several throttles as one, the middleware), or else keep only the
        units it took (`outcomes.take_charged`: `refund` gives back no more), and write the
        headers on `response`."""
        scope = connection.scope
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        state[THROTTLED_STATE_KEY] = 0.0
        charges = state.get(CHARGES_KEY)  # (the middleware notes every charge: `refund`)
        if charges is None and self.charge_when is None:
            state[self._charged_key] = self.cost if cost is None else cost
        elif decision.remaining is not None and key is not None and rates is not None:
            noted = (self, backend, key, rates, self.cost if cost is None else cost, decision)
            if charges is None:
                state[CHARGES_KEY] = [noted]
            elif scope["type"] == "websocket":  # each message is a request: its charge only
                note(state, charges, noted)
            else:
                charges.append(noted)
        if response is not None and rates is not None:
            plan = self._plan  # (None without headers, or when a callable gives the rates)
            if plan is None:
                if self.headers is None:
                    return
                plan = self._plan_for(rates)
            plan.admitted(decision, response.raw_headers)
            if plan.dynamic:
                plan.write_dynamic(response, decision, made(connection), key, ctx)

    def _never_admitted(
        self, rates: tuple[Rate, ...], cost: int, key: Optional[str]
    ) -> Optional[str]:
        """The 429's detail for a cost above what a rate can ever admit (its wait spaces out
        retries, none of which passes); None otherwise. A strategy with per-request input in
        the key (a `TieredRate`'s tier) is asked as it decides `key` (`deciding`): the
        client's tier, and the rate it has."""
        strategy: Any = self.strategy
        if key is not None:
            strategy, rates = deciding(strategy, key, rates)
        capacity = getattr(strategy, "capacity", None)
        if capacity is None:  # (a traffik 1.2 strategy function)
            return None
        for rate in rates:
            if not rate.unlimited and cost > capacity(rate):
                return (
                    f"This request costs {cost} units, more than the rate {rate} can ever "
                    "admit: it is refused whenever it is retried."
                )
        return None

    async def _throttled(
        self,
        connection: Any,
        decision: Decision,
        rates: Optional[tuple[Rate, ...]],
        key: Optional[str],
        ctx: Mapping[str, Any],
        skip_handler: Optional[bool],
        backend: ThrottleBackend,
        cost: Optional[int] = None,
    ) -> Any:
        scope = connection.scope
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        wait = decision.wait_ms
        if self.min_wait_period is not None:
            wait = max(wait, self.min_wait_period)
        state[THROTTLED_STATE_KEY] = wait
        if skip_handler if skip_handler is not None else self.skip_handler:
            return connection
        if rates is not None:
            refused = getattr(decision, "refused", None)
            ctx = {**ctx, "rate": rates[refused or 0]}
            never = self._never_admitted(rates, self.cost if cost is None else cost, key)
            if never is not None and "detail" not in ctx:
                ctx["detail"] = never
            if self.headers is not None:
                plan = self._plan or self._plan_for(rates)
                extra = plan.text(decision, wait, connection, key, ctx)
                if extra:
                    own = ctx.get("headers")
                    ctx = {**ctx, "headers": {**extra, **own} if own else extra}
        handler = self.handle_throttled
        if handler is None and self.use_backend_handler:
            handler = backend.handle_throttled
        result = (handler or self.default_handler)(connection, wait, self, ctx)
        if inspect.isawaitable(result):  # (a handler may be sync or async)
            result = await result
            # (marked again: a WebSocket's other message, admitted while the handler sent,
            # cleared the mark of this refused one)
            state[THROTTLED_STATE_KEY] = wait
        if isinstance(result, Response):
            answer_with(connection, result)
        elif result is not None:  # (a body meant as the answer, say: refused, not let through)
            _unanswered.log(
                logging.WARNING,
                (self.uid, type(result)),
                "%r's handle_throttled returned a %s, which is no answer: the request gets "
                "the default one. A handler may return a Response (the answer), return "
                "None (to let the request through) or raise.",
                self,
                type(result).__name__,
            )
            answer = self.default_handler(connection, wait, self, ctx)
            if inspect.isawaitable(answer):
                await answer
        return connection
