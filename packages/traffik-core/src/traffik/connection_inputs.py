"""What a throttle reads from each connection: its backend, rates, cost, identity and key.

Mixed into `Throttle`. Everything here is resolved per connection and never remembered across
apps: a throttle defined once serves every app and backend it meets.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from starlette.requests import HTTPConnection

from traffik.backends.context import resolve_backend, serving_backends
from traffik.buckets import without_method
from traffik.config import CONNECTION_IDS_CONTEXT_KEY
from traffik.exceptions import ConfigurationError
from traffik.identity import default_identifier
from traffik.keyparts import client_part, escape
from traffik.rates import parse_rates
from traffik.throttle_settings import check_cost

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate

__all__ = ["ConnectionInputs"]


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _plain(value: Any) -> bool:
    """Whether a callable's result is a value of its own, not an awaitable (the common types
    checked first: `inspect.isawaitable` costs a few checks of its own)."""
    kind = type(value)
    return kind is int or kind is str or kind is tuple or not inspect.isawaitable(value)


class ConnectionInputs:
    """Per-connection inputs of a decision, for `Throttle`."""

    uid: str
    _uid_part: str
    _backend: Optional[ThrottleBackend]
    dynamic_backend: bool
    _rates: tuple[Rate, ...]
    _rate_fn: Optional[Callable[..., Any]]
    _checked_rates: set[tuple[Rate, ...]]
    cost: int
    _cost_fn: Optional[Callable[..., Any]]
    identifier: Optional[Callable[..., Any]]
    cache_ids: bool
    per_route: bool
    use_method: bool
    _route_of: ClassVar[Callable[..., str]]
    _own_identity: ClassVar[bool] = False
    """Whether the class overrides `identify` or `get_connection_id`: asked on every hit."""
    _own_keys: ClassVar[bool] = False
    """Whether the class overrides `get_scoped_key` or `get_namespaced_key` (traffik 1.2's
    key hooks): every key is then theirs."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        base = ConnectionInputs
        cls._own_identity = (
            cls.identify is not base.identify or cls.get_connection_id is not base.get_connection_id
        )
        cls._own_keys = (
            cls.get_scoped_key is not base.get_scoped_key
            or cls.get_namespaced_key is not base.get_namespaced_key
        )
        for hook in ("get_scoped_key", "get_namespaced_key"):
            if inspect.iscoroutinefunction(getattr(cls, hook)):
                # (its coroutine's text would be the key: every request a bucket of its own)
                raise ConfigurationError(
                    f"{cls.__qualname__}.{hook} is a coroutine function: key hooks are plain "
                    "methods returning the key's text; make it `def` (an identity that needs "
                    "an `await` goes in `async def get_connection_id`)"
                )

    def _own_key_hooks(self) -> str:
        """The key hooks this throttle's class overrides, named for a message."""
        base = ConnectionInputs
        kind = type(self)
        return " and ".join(
            hook
            for hook in ("get_scoped_key", "get_namespaced_key")
            if getattr(kind, hook) is not getattr(base, hook)
        )

    if TYPE_CHECKING:

        def check_rates(
            self, rates: tuple[Rate, ...], cost: Optional[int], owner: Optional[str] = None
        ) -> None: ...

    def get_backend(self, connection: Optional[HTTPConnection] = None) -> ThrottleBackend:
        """The backend for `connection`: this throttle's own, else the one bound to the
        connection or its app, else the active context's (`traffik.backends.context`).
        Resolved per connection and never remembered, so one throttle serves many apps."""
        scope = connection.scope if connection is not None else None
        backend = resolve_backend(self._backend, scope, self.dynamic_backend)
        if backend is None:
            serving = serving_backends() if connection is None else []
            if len(serving) > 1:  # (asked without a connection: which app's is unknown)
                raise ConfigurationError(
                    f"{self!r} has no backend of its own, and the apps running in this "
                    f"process have several ({', '.join(map(repr, serving))}): pass backend=, "
                    "or a request of the app, to say which"
                )
            raise ConfigurationError(
                f"{self!r} has no backend: pass backend=, use FastAPI(lifespan=backend.lifespan), "
                "or run inside `async with backend:`"
            )
        return backend

    async def _rates_for(
        self, connection: HTTPConnection, context: Mapping[str, Any]
    ) -> tuple[Rate, ...]:
        """The rates for `connection`: the fixed ones, or what the rate callable returns
        (checked as at construction, once per distinct value)."""
        if self._rate_fn is None:
            return self._rates
        given = self._rate_fn(connection, context)
        rates = parse_rates(given if _plain(given) else await given)
        if rates not in self._checked_rates:
            self.check_rates(rates, None)
            if len(self._checked_rates) >= 64:
                self._checked_rates.clear()
            self._checked_rates.add(rates)
        return rates

    async def _cost_for(self, connection: HTTPConnection, context: Mapping[str, Any]) -> int:
        if self._cost_fn is None:
            return self.cost
        cost = self._cost_fn(connection, context)
        if not _plain(cost):
            cost = await cost
        if type(cost) is int and cost >= 0:
            return cost
        return check_cost(cost, repr(self))  # (a bool, a float, a negative number: refused)

    async def identify(self, connection: HTTPConnection, backend: ThrottleBackend) -> Any:
        """The client of `connection`: the throttle's identifier, else the backend's, else
        the peer address. Overridable, as `get_connection_id` is."""
        identifier = self.identifier or backend.identifier
        if identifier is None:
            return await default_identifier(connection)
        return await _resolve(identifier(connection))

    async def get_connection_id(
        self,
        connection: HTTPConnection,
        backend: ThrottleBackend,
        context: Optional[Mapping[str, Any]] = None,
    ) -> Any:
        """traffik 1.2's hook for the client of `connection` (`identify` by default). A
        subclass that overrides it is asked for every connection, with the merged context."""
        return await self.identify(connection, backend)

    def get_scoped_key(
        self, connection: HTTPConnection, context: Optional[Mapping[str, Any]] = None
    ) -> str:
        """traffik 1.2's hook for the part of a key after the client: the route part
        (`METHOD:/template`, "" without `per_route`). A subclass's own text is escaped
        into the key (`get_namespaced_key`)."""
        return self._route_of(connection.scope) if self.per_route else ""

    def get_namespaced_key(
        self,
        connection: HTTPConnection,
        identifier: Any,
        context: Optional[Mapping[str, Any]] = None,
    ) -> str:
        """traffik 1.2's hook for the whole key of `identifier`'s bucket for `connection`
        (the backend adds its namespace and the strategy its suffix). By default
        `uid:{client}:ROUTE[:scope]`, with a subclass's `get_scoped_key` as the route part."""
        ctx = {} if context is None else context
        if type(self).get_scoped_key is ConnectionInputs.get_scoped_key:
            route = self._route_of(connection.scope) if self.per_route else None
        else:
            route = escape(str(self.get_scoped_key(connection, ctx)))
        return self.compose_key(client_part(identifier), route, ctx)

    def key_for(
        self,
        connection: Optional[HTTPConnection],
        ident: Any,
        context: Mapping[str, Any],
        route: Optional[str] = None,
    ) -> str:
        """`uid:{client}:METHOD:/route/{template}` (just `uid:{client}` without `per_route`),
        plus the context's `scope`; every part escaped (`traffik.buckets`). `route` replaces
        the connection's own route part (see `route_part`). A subclass's own key hooks
        (`get_namespaced_key`) give the key of a connection's own route."""
        if self._own_keys and connection is not None and route is None:
            return self.get_namespaced_key(connection, ident, context)
        if self.per_route:
            if route is None:
                if connection is None:
                    raise ConfigurationError(f"{self!r} counts per route; name the route")
                route = self._route_of(connection.scope)
            elif not self.use_method:
                route = without_method(route)
        return self.compose_key(client_part(ident), route if self.per_route else None, context)

    def compose_key(self, client: str, route: Optional[str], context: Mapping[str, Any]) -> str:
        """The key from its escaped parts: `uid:{client}[:route][:scope]`."""
        head, tail = self.key_around(route, context)
        return head + client + tail

    def key_around(self, route: Optional[str], context: Mapping[str, Any]) -> tuple[str, str]:
        """What `compose_key` puts before the client part (`uid:{`) and after it
        (`}[:route][:scope]`): the same for every client of a route, so a throttle prepares
        it once per route."""
        tail = "}" if route is None else f"}}:{route}"
        extra = context.get("scope")
        return f"{self._uid_part}:{{", tail if extra is None else f"{tail}:{escape(str(extra))}"

    async def _identity(
        self, connection: Any, backend: ThrottleBackend, scope: Any, context: Any = None
    ) -> Any:
        """`get_connection_id` (`identify` unless overridden), kept in the connection's state
        per uid with `cache_ids` (so a WebSocket's messages are identified once)."""
        ids: Optional[dict[str, Any]] = None
        if self.cache_ids:
            state = scope.get("state")
            if state is None:
                scope["state"] = state = {}
            ids = state.get(CONNECTION_IDS_CONTEXT_KEY)
            if ids is None:
                ids = state[CONNECTION_IDS_CONTEXT_KEY] = {}
            ident = ids.get(self.uid)
            if ident is not None:
                return ident
        own = self.__dict__
        if self._own_identity or "get_connection_id" in own or "identify" in own:
            # (a subclass's hook, or one a test set on this throttle: `patch.object`)
            ident = await self.get_connection_id(connection, backend, context)
        else:  # `identify`, without a coroutine of its own (nor `get_connection_id`'s)
            identifier = self.identifier or backend.identifier
            if identifier is None:
                ident = await default_identifier(connection)
            else:
                ident = identifier(connection)
                if not _plain(ident):
                    ident = await ident
        if ids is not None:
            ids[self.uid] = ident
        return ident
