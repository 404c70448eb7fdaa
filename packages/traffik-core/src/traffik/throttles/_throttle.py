"""`Throttle`: what every throttle shares, built from its settings, and `hit`, its decision for one connection."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Iterable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Optional, Union

from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.responses import Response

from traffik.backends.base import ThrottleBackend
from traffik.bucket_state import BucketState
from traffik.buckets import route_part
from traffik.decision import Decision
from traffik.events import DecisionEvent
from traffik.events import _observers as _observers
from traffik.exceptions import ConfigurationError
from traffik.keyparts import escape
from traffik.on_error import check_on_error, recover
from traffik.outcomes import CHARGED_KEY, Outcome
from traffik.rates import Rate, RatesLike
from traffik.registry import GLOBAL_REGISTRY, ThrottleRegistry
from traffik.response_headers import ThrottleHeaders
from traffik.responses import connection_throttled
from traffik.rules import Bypass, Rule
from traffik.throttle_answers import ThrottleAnswers, _let_through, made
from traffik.throttle_dependency import ThrottleDependency
from traffik.throttle_keys import ThrottleKeys
from traffik.throttle_settings import ThrottleSettings, check_context, check_flag
from traffik.throttle_steps import ThrottleSteps

__all__ = ["CostSetting", "HeadersSetting", "OnErrorSetting", "RateSetting", "Throttle"]

if TYPE_CHECKING:
    from traffik.headers import Header
    from traffik.on_error import ErrorHandler
    from traffik.quotas import QuotaContext

RateSetting = Union[RatesLike, Callable[[Any, Any], Union[RatesLike, Awaitable[RatesLike]]]]
"""`rate=`: rates, or `(connection, context)` returning them (sync or async)."""
CostSetting = Union[int, Callable[[Any, Any], Union[int, Awaitable[int]]]]
"""`cost=`: a whole number, or `(connection, context)` returning one (sync or async)."""
HeadersSetting = Union[
    bool, Literal["ietf", "legacy", "both"], Mapping[str, Union[str, "Header"]], None
]
"""`headers=`: a preset, a mapping of names to strings or `Header`s, or None for none."""
OnErrorSetting = Union[Literal["throttle", "allow", "raise"], "ErrorHandler", None]
"""`on_error=`: a policy, an async handler `(connection, exc_info)`, or None (the backend's)."""

logger = logging.getLogger("traffik")


class Throttle(
    ThrottleSettings,
    ThrottleKeys,
    ThrottleSteps,
    ThrottleAnswers,
    ThrottleHeaders,
    BucketState,
    ThrottleDependency,
):
    """A rate limit on connections of one kind; use `HTTPThrottle` or `WebSocketThrottle`.

    `rate` is a string (`"100/min"`), a `Rate`, or a callable `(connection, context)` returning
    one (sync or async). `backend` is a backend, a URL (`"redis://..."`), or None for the
    backend of the enclosing context or the app's lifespan. Several throttles may share a
    `uid`: they then share counters. By default a client's budget is per route (method and
    path template); `per_route=False` gives one budget across every route the throttle guards.

    `on_error` decides what a failure while deciding does: `"throttle"` (429 for a second),
    `"allow"`, `"raise"`, or an async handler `(connection, exc_info) -> wait_ms | Decision`;
    None uses the backend's own setting. `headers` are written on allowed responses and 429s:
    `"ietf"`, `"legacy"` (`X-RateLimit-*`), `"both"`, a mapping of names to strings or
    `Header`s (`traffik.headers`), or None. `rules` (`Rule`, `Bypass`) say which connections
    count; the throttle registers in `registry` (default `GLOBAL_REGISTRY`), where other
    rules can be attached to its uid. `cache_ids` keeps a connection's identity for the
    connection's lifetime (a WebSocket's messages), per uid.

    Args:
        uid: The throttle's name, unique per limit: part of every key it counts under.
            Throttles sharing a uid share counters.
        rate: `"100/min"`, `"10/s;1000/day"` (several limits, all enforced as one decision),
            a `Rate`, a list of them, or a callable `(connection, context)` returning one
            (sync or async). `"unlimited"` (or `Rate()`) lets everything through.
        identifier: `(connection)` returning the client's identity (sync or async); None
            uses the backend's, else the peer address (IPv6 by its /64). Returning
            `traffik.typing.EXEMPTED` exempts the connection. Values are keyed by type: `5`
            and `"5"` are different clients.
        handle_throttled: `(connection, wait_ms, throttle, context)` called on a refusal;
            None raises `ConnectionThrottled` (a 429 with `Retry-After`). A `Response` it
            returns is sent as the answer.
        strategy: How hits are counted: `FixedWindow()` (the default), `SlidingWindowCounter`,
            `TokenBucket`, `GCRA`, ... (`traffik.strategies`), or a callable
            `(key, rate, backend, cost) -> wait_ms`.
        backend: A backend, a URL (`"redis://..."`), or None for the backend of the
            connection's app (`FastAPI(lifespan=backend.lifespan)`) or of the enclosing
            `async with backend:`.
        cost: Units one hit takes (a whole number >= 0; 0 counts nothing), or a callable
            `(connection, context)` returning it.
        dynamic_backend: Resolve the backend from the active context (`async with
            backend:`, the app's) on every hit; with `backend` given, a
            `ConfigurationError`.
        min_wait_period: The least wait a refused client is told, in milliseconds (None: the
            strategy's exact wait).
        headers: Rate-limit headers on allowed responses and 429s: `"ietf"` (the default),
            `"legacy"` (`X-RateLimit-*`), `"both"`, a mapping of names to strings or
            `traffik.headers.Header`s, or None for none.
        on_error: What a failure while deciding does: `"throttle"` (429 for a second),
            `"allow"`, `"raise"`, or an async handler `(connection, exc_info)` returning a wait
            in ms or a `Decision` (`traffik.error_handlers`: `fallback`, `retry`, `failover`);
            None uses the backend's.
        context: Values passed to callables and handlers; `context["scope"]` adds a part to
            every key (a separate budget).
        registry: Where the throttle registers its uid (default `GLOBAL_REGISTRY`).
        rules: `Rule`s and `Bypass`es: which connections count (`traffik.rules`).
        cache_ids: Identify a connection once per uid and keep it for its lifetime.
        dynamic_rules: Read the registry's rules for this uid on every hit.
        skip_handler: On a refusal, mark the connection throttled (`is_throttled`) instead
            of calling the handler.
        per_route: Count per route (method and path template); False: one budget across every
            route the throttle guards.
        charge_when: `(Outcome) -> bool` called once the response is known; False refunds
            the hit (charge by outcome, e.g. only successful responses).
        shadow: Decide and count but never refuse, and write no rate-limit headers; each
            would-be refusal is logged and reported as `"shadow_refused"`. None uses the
            backend's `shadow`.
        on_decision: `(DecisionEvent)` called after every decision of this throttle
            (`traffik.events`), besides the process-wide observers.
    """

    connection_type: ClassVar[type[Any]] = HTTPConnection
    refused_scopes: ClassVar[frozenset[str]] = frozenset()
    """The ASGI scope types of the connections it does not limit: a hit given one raises a
    `ConfigurationError` (`traffik._connection_kinds`)."""
    default_handler: ClassVar[Callable[..., Any]] = staticmethod(connection_throttled)
    use_backend_handler: ClassVar[bool] = True
    _route_of: ClassVar[Callable[..., str]] = staticmethod(route_part)
    use_method: bool = True
    charge_when: Optional[Callable[[Outcome], bool]]

    def __init__(
        self,
        uid: str,
        rate: RateSetting,
        identifier: Optional[Callable[[Any], Any]] = None,
        handle_throttled: Optional[Callable[..., Any]] = None,
        strategy: Any = None,
        backend: Union[ThrottleBackend, str, None] = None,
        cost: CostSetting = 1,
        *,
        dynamic_backend: bool = False,
        min_wait_period: Optional[float] = None,
        headers: HeadersSetting = "ietf",
        on_error: OnErrorSetting = None,
        context: Optional[Mapping[str, Any]] = None,
        registry: Optional[ThrottleRegistry] = None,
        rules: Optional[Iterable[Union[Rule, Bypass]]] = None,
        cache_ids: bool = True,
        dynamic_rules: bool = False,
        skip_handler: bool = False,
        per_route: bool = True,
        charge_when: Optional[Callable[[Outcome], bool]] = None,
        shadow: Optional[bool] = None,
        on_decision: Optional[Callable[[DecisionEvent], Any]] = None,
    ) -> None:
        if not isinstance(uid, str) or not uid:
            raise ConfigurationError(
                f"{type(self).__name__}: uid={uid!r} must be a non-empty string"
            )
        self.uid = uid
        self._uid_part = escape(uid)
        # Where a connection's state keeps what a hit of this throttle took, when no charge
        # is noted (`outcomes.take_charged`): its own, even beside a throttle of the same uid.
        self._charged_key = f"{CHARGED_KEY}:{uid}#{id(self):x}"
        owner = self._owner()
        self.dynamic_backend = check_flag(dynamic_backend, "dynamic_backend", owner)
        self._backend = None
        self._set_strategy(strategy)
        self._set_cost(cost)
        self._set_headers(headers)
        self._set_rate(rate)
        self._set_backend(backend)
        self._set_callable("identifier", identifier)
        self._set_callable("handle_throttled", handle_throttled)
        self._set_callable("charge_when", charge_when)
        self.on_error = check_on_error(on_error, self._owner())
        self.shadow = None if shadow is None else check_flag(shadow, "shadow", owner)
        if on_decision is not None and not callable(on_decision):
            raise ConfigurationError(
                f"{self._owner()}: on_decision={on_decision!r} must be a callable taking a "
                "traffik.events.DecisionEvent, or None"
            )
        self.on_decision = on_decision
        self._set_min_wait_period(min_wait_period)
        if registry is not None and not isinstance(registry, ThrottleRegistry):
            raise ConfigurationError(
                f"{self._owner()}: registry={registry!r} is not a ThrottleRegistry"
            )
        self.registry = GLOBAL_REGISTRY if registry is None else registry
        self._set_rules(rules)
        self.context: dict[str, Any] = check_context(context, self._owner())
        self.per_route = check_flag(per_route, "per_route", owner)
        self.skip_handler = check_flag(skip_handler, "skip_handler", owner)
        self.cache_ids = check_flag(cache_ids, "cache_ids", owner)
        self.dynamic_rules = check_flag(dynamic_rules, "dynamic_rules", owner)
        self._disabled = False
        # FastAPI reads this to inject the connection (and, for HTTP, a response to write
        # headers on). Classes rather than postponed annotations, for Python 3.9.
        self._signature = inspect.Signature(
            self._dependency_parameters(), return_annotation=self.connection_type
        )
        self.registry.register(uid, self)
        self.refresh_rules()

    def __repr__(self) -> str:
        rate = self._rate_fn or "; ".join(map(str, self._rates))
        return f"{type(self).__name__}({self.uid!r}, rate={str(rate)!r})"

    @property
    def is_disabled(self) -> bool:
        return self._disabled

    async def disable(self) -> None:
        """Let every connection through until `enable()`; no backend calls meanwhile."""
        self._disabled = True

    async def enable(self) -> None:
        self._disabled = False

    def quota(
        self, connection: Any, context: Optional[Mapping[str, Any]] = None, **options: Any
    ) -> QuotaContext:
        """A `traffik.quotas.QuotaContext` bound to this throttle: hits queued in a block and
        decided as one on exit. `options`: `apply_on_error`, `apply_on_exit`, `parent` (and
        traffik 1.2's `lock`, `lock_config`, which change nothing)."""
        from traffik.quotas import QuotaContext

        ctx = self.context if context is None else {**self.context, **context}
        return QuotaContext(connection, ctx, owner=self, **options)

    # -- the hit -------------------------------------------------------------------------

    async def hit(
        self,
        connection: Any = None,
        *,
        cost: Optional[int] = None,
        context: Optional[Mapping[str, Any]] = None,
        skip_handler: Optional[bool] = None,
        response: Optional[Response] = None,
        shadow: Optional[bool] = None,
    ) -> Any:
        """Count one hit; throttled connections go to the handler (429 by default).

        Returns the connection, so the throttle works as a FastAPI dependency. With
        `response` (FastAPI injects it), allowed responses get the throttle's headers. The
        rules come first: a connection they let through is returned untouched, before the
        rate, the cost, the identifier or the backend are looked at. `shadow` overrides the
        throttle's own setting for this hit.

        `connection` has a default only for FastAPI, which gives none to a throttle on a
        route of the other kind: that, a call without one, anything but a connection (a
        client's address, say), or a connection of the other kind (a WebSocket given to an
        `HTTPThrottle`, a request to a `WebSocketThrottle`) raises a `ConfigurationError`.
        """
        scope = getattr(connection, "scope", None)
        if scope is None or scope.get("type") in self.refused_scopes:
            raise self._no_connection(connection)
        if self._disabled:
            return _let_through(connection)
        ctx = self.context if context is None else {**self.context, **context}
        gate = self._gate
        if gate is not None:
            connection = made(connection)  # (a `PendingRequest`: the rules get the Request)
            if not await gate.allows(connection, ctx):
                return _let_through(connection)
        backend = self._hit_backend or self.get_backend(connection)
        watched = self.on_decision is not None or _observers
        started = perf_counter() if watched else None
        prepared: Optional[tuple[tuple[Rate, ...], int, str]] = None
        decide: Optional[Callable[[str], Optional[Decision]]] = None
        waited: Optional[Callable[[str], Awaitable[Decision]]] = None
        try:
            prepared = self._prepared(connection, ctx, cost, backend)
            if prepared is None:
                connection = made(connection)  # (for the identifier, rate and cost callables)
                prepared = await self._resolved(connection, ctx, cost, backend)
                if prepared is None:  # (nothing to decide: unlimited, no cost, exempted)
                    return _let_through(connection)
            if self._in_place:  # (in place: no coroutine; or coalesced)
                if cost is None and self._fixed:  # the throttle's own rates and cost
                    on, decide, waited = self._decider
                    if on is not backend:  # made once per backend (`ThrottleBackend.decider`)
                        decide, waited = self._deciders(backend, prepared[0], prepared[1])
                else:  # given per connection: kept per rates and cost
                    decide, waited = self._deciders_for(backend, prepared[0], prepared[1])
            rates, taken, key = prepared
            if backend.refusals is None:
                decision = None if decide is None else decide(key)
                if decision is None:
                    step = self._step(key, rates, taken, backend) if waited is None else waited(key)
                    decision = await step
            else:  # a client refused a moment ago is refused again without the store
                decision = await self._remembered(
                    backend.refusals, key, rates, taken, backend, decide, waited
                )
        except ConfigurationError as exc:
            logger.error("%r is misconfigured: %s", self, exc)
            raise
        except Exception as exc:
            return await self._answer_failure(
                connection,
                exc,
                ctx,
                cost,
                backend,
                prepared,
                skip_handler,
                response,
                started,
                shadow,
            )
        if (
            watched
            or not decision.allowed
            or shadow is not None
            or self.shadow is not None
            or backend.defaults.shadow
        ):
            return await self._settle(
                connection,
                decision,
                rates,
                key,
                ctx,
                backend,
                skip_handler,
                response,
                taken,
                started,
                None,
                shadow,
            )
        self._admitted(connection, decision, rates, key, ctx, response, taken, backend)
        return connection

    __call__ = hit
    """`await throttle(connection)` is `hit`; as a FastAPI dependency it returns the connection."""

    async def _answer_failure(
        self,
        connection: Any,
        exc: Exception,
        ctx: Mapping[str, Any],
        cost: Optional[int],
        backend: ThrottleBackend,
        prepared: Optional[tuple[tuple[Rate, ...], int, str]],
        skip_handler: Optional[bool],
        response: Optional[Response],
        started: Optional[float],
        shadow: Optional[bool],
    ) -> Any:
        """Answer a hit whose decision on `backend` raised `exc` by `on_error` (`recover`),
        as `hit` answers it; `prepared` is how far the decision got (the rates, cost and
        key), None when it failed before the key existed. Also the answer of each throttle
        of several decided as one (`traffik.together`) when their one step failed."""
        connection = made(connection)  # (for the `on_error` handler)
        answer, known_rates, known_key, charged, decided_on = await recover(
            self, exc, connection, ctx, cost, backend, prepared
        )
        # (answered as a watched or refused decision is: the event names the store that
        # failed, `backend`)
        return await self._settle(
            connection,
            answer,
            known_rates,
            known_key,
            ctx,
            decided_on,
            skip_handler,
            response,
            charged,
            started,
            exc,
            shadow,
            backend,
        )

    def as_middleware(
        self,
        *,
        backend: Union[ThrottleBackend, str, None] = None,
        exception_handler_getter: Optional[Callable[[Exception], Any]] = None,
        context: Optional[Mapping[str, Any]] = None,
        **throttle_kwargs: Any,
    ) -> Middleware:
        """This throttle as a Starlette `Middleware`, for `Starlette(middleware=[...])` or
        `FastAPI(middleware=[...])`: a `ThrottleMiddleware` running
        `MiddlewareThrottle(self, **throttle_kwargs)` alone (`path`, `methods`, `predicate`,
        `cost`, `skip_handler`, `exempt`, `shadow`). Every argument is checked here, not at
        the app's first request.

        Args:
            backend: The middleware's backend, for a throttle that has none; None for this
                throttle's `backend`.
            exception_handler_getter: `(exc) -> handler or None`, consulted before the app's
                exception handlers for a throttled connection.
            context: Context passed to the throttle on every connection.
            **throttle_kwargs: `MiddlewareThrottle`'s arguments: which connections count.

        Returns:
            The `Middleware` entry.

        Raises:
            ConfigurationError: When an argument is invalid (as `ThrottleMiddleware` and
                `MiddlewareThrottle` check them).
            TypeError: When `throttle_kwargs` has an argument `MiddlewareThrottle` does not
                take.
        """
        from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
        from traffik.middleware_options import checked_options

        options = checked_options(
            backend=self.backend if backend is None else backend,
            exception_handler_getter=exception_handler_getter,
            context=context,
        )
        throttles = [MiddlewareThrottle(self, **throttle_kwargs)]
        return Middleware(ThrottleMiddleware, middleware_throttles=throttles, sort=None, **options)
