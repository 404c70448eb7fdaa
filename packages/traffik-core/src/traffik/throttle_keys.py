"""Which key a connection counts under, and the rates and cost of its hit: `_prepare`.

Mixed into `Throttle`. For a throttle with nothing to resolve per connection (fixed rates and
cost, the peer as the client) the key is a function of the peer and the route alone, so it
is remembered per throttle (`_prepared`, at most `KEY_CACHE_SIZE` of them); every other
throttle resolves its inputs (`ConnectionInputs`) on each hit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from traffik.buckets import served_route
from traffik.connection_inputs import ConnectionInputs
from traffik.exceptions import ConfigurationError
from traffik.identity import peer_part
from traffik.keyparts import ANONYMOUS_PART, client_part, keyless
from traffik.throttle_settings import check_cost
from traffik.typing import EXEMPTED

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate

__all__ = ["KEY_CACHE_SIZE", "ThrottleKeys"]

KEY_CACHE_SIZE = 16384
"""Keys a throttle remembers per (peer, route) before forgetting them all (`_prepared`)."""


class ThrottleKeys(ConnectionInputs):
    """The rates, cost and key of a connection's hit, for `Throttle`."""

    _static: bool
    _per_route: bool
    _keys: dict[tuple[Any, ...], tuple[Any, tuple[tuple[Rate, ...], int, str]]]
    _ends: dict[tuple[Any, ...], tuple[Any, Optional[str], str]]

    if TYPE_CHECKING:

        def _forget_keys(self) -> None: ...

    def _prepared(
        self, connection: Any, ctx: Mapping[str, Any], cost: Optional[int], backend: ThrottleBackend
    ) -> Optional[tuple[tuple[Rate, ...], int, str]]:
        """`_prepare` without awaiting, for a throttle with nothing to resolve per connection
        (fixed rates and cost, the peer as the client); None otherwise."""
        if not self._static or cost is not None or backend.defaults.identifier is not None:
            return None
        scope = connection.scope
        client = scope.get("client")
        host = client[0] if client else None
        route = served_route(scope) if "fastapi" in scope else scope.get("route")
        if (route is not None or not self._per_route) and "scope" not in ctx:
            # The key is a function of these alone: remembered per throttle (`_keys`).
            seen = (
                host,
                id(route),
                scope.get("method"),
                scope.get("root_path"),
                scope.get("app_root_path"),
            )
            known = self._keys.get(seen)
            if known is None:
                return self._remember_key(seen, connection, host, route, ctx)
            # (the entry holds its route: while it is kept, no other object has that id)
            return known[1]
        part = peer_part(host) if host is not None else ANONYMOUS_PART
        return self._rates, self.cost, self._key(connection, part, ctx)

    def _remember_key(
        self,
        seen: tuple[Any, ...],
        connection: Any,
        host: Optional[str],
        route: Any,
        ctx: Mapping[str, Any],
    ) -> tuple[tuple[Rate, ...], int, str]:
        """What `_prepared` answers for a peer and route met for the first time, remembered
        (at most `KEY_CACHE_SIZE` of them: then they are forgotten all at once; a change of
        rate, cost, strategy or identifier forgets them too). The key is the route's
        prepared ends (`_key_ends`) around the peer's part: a new client of a known route
        costs one concatenation."""
        keys = self._keys
        if len(keys) >= KEY_CACHE_SIZE:
            keys.clear()
        part = peer_part(host) if host is not None else ANONYMOUS_PART
        # (the route, method and roots: what the key's ends depend on)
        prepared = (
            self._rates,
            self.cost,
            self._key_around(seen[1:], route, connection, part, ctx),
        )
        keys[seen] = (route, prepared)
        return prepared

    def _key_around(
        self, where: tuple[Any, ...], route: Any, connection: Any, part: str, ctx: Mapping[str, Any]
    ) -> str:
        """The key of the client whose part is `part` on the route `where` names (`route`, the
        method and the roots): the route's prepared ends around the part (`_key_ends`, made
        once per route), or composed when a subclass composes keys its own way."""
        ends = self._ends.get(where)
        if ends is None:  # (an entry holds its route, as `_keys` do)
            ends = self._key_ends(where, route, connection, ctx)
        head = ends[1]
        return self._key(connection, part, ctx) if head is None else head + part + ends[2]

    def _client_key(self, connection: Any, part: str, ctx: Mapping[str, Any]) -> str:
        """`_key`, by the route's prepared ends (`_key_around`) where the key depends on the
        route, the method and the roots alone (as `_prepared` remembers keys)."""
        scope = connection.scope
        route = served_route(scope) if "fastapi" in scope else scope.get("route")
        if (route is None and self._per_route) or "scope" in ctx:
            return self._key(connection, part, ctx)
        where = (id(route), scope.get("method"), scope.get("root_path"), scope.get("app_root_path"))
        return self._key_around(where, route, connection, part, ctx)

    def _key_ends(
        self, where: tuple[Any, ...], route: Any, connection: Any, ctx: Mapping[str, Any]
    ) -> tuple[Any, Optional[str], str]:
        """The key's parts before and after the client's for `connection`'s route
        (`key_around`), remembered with the route as `_keys` are; no head (None) when a
        subclass composes keys its own way (`compose_key`), which then composes each."""
        ends = self._ends
        if len(ends) >= KEY_CACHE_SIZE:
            ends.clear()
        head: Optional[str] = None
        tail = ""
        if type(self).compose_key is ConnectionInputs.compose_key:
            head, tail = self.key_around(self._route_key(connection.scope), ctx)
        found = ends[where] = (route, head, tail)
        return found

    async def _prepare(
        self,
        connection: Any,
        ctx: Mapping[str, Any],
        cost: Optional[int],
        backend: ThrottleBackend,
    ) -> Optional[tuple[tuple[Rate, ...], int, str]]:
        """What a decision for `connection` needs: the rates, the cost and the client's key
        (None: nothing to decide: an unlimited rate, no cost, an exempted client)."""
        prepared = self._prepared(connection, ctx, cost, backend)
        if prepared is not None:
            return prepared
        return await self._resolved(connection, ctx, cost, backend)

    async def _resolved(
        self,
        connection: Any,
        ctx: Mapping[str, Any],
        cost: Optional[int],
        backend: ThrottleBackend,
    ) -> Optional[tuple[tuple[Rate, ...], int, str]]:
        """`_prepare` for a connection whose key is not remembered (`_prepared` is None):
        the rates, the cost and the identity resolved for it."""
        rates = self._rates if self._rate_fn is None else await self._rates_for(connection, ctx)
        if rates[0].unlimited:
            return None
        if cost is None:
            cost = self.cost if self._cost_fn is None else await self._cost_for(connection, ctx)
        elif cost != self.cost and (type(cost) is not int or cost < 0):
            cost = check_cost(cost, repr(self))  # (refused)
        if cost == 0:
            return None
        if self._own_keys:  # (a subclass's key hooks, traffik 1.2's)
            ident = await self._identity(connection, backend, connection.scope, ctx)
            if ident is EXEMPTED:
                return None
            return rates, cost, self.get_namespaced_key(connection, ident, ctx)
        if (
            self.identifier is None
            and backend.defaults.identifier is None
            and not self._own_identity
        ):
            client = connection.scope.get("client")
            part = peer_part(client[0]) if client else ANONYMOUS_PART
        else:
            ident = await self._identity(connection, backend, connection.scope, ctx)
            if ident is EXEMPTED:
                return None
            try:
                part = client_part(ident)
            except ConfigurationError:  # (an object keyed by its address: name who gave it)
                source = f"identifier {self._identifier_name(backend)}"
                raise ConfigurationError(keyless(ident, source)) from None
        return rates, cost, self._client_key(connection, part, ctx)

    def _identifier_name(self, backend: ThrottleBackend) -> str:
        """Where this throttle's client comes from, for a message: the identifier's name
        and where it is defined, or the hook a subclass overrides."""
        if self._own_identity:
            return f"{type(self).__name__}.get_connection_id"
        identifier = self.identifier or backend.identifier
        name = getattr(identifier, "__qualname__", None) or repr(identifier)
        code = getattr(identifier, "__code__", None)
        if code is None:
            return name
        return f"{name} ({code.co_filename}, line {code.co_firstlineno})"

    def _key(self, connection: Any, client: str, ctx: Mapping[str, Any]) -> str:
        """The key of `connection`'s bucket for a client part (`compose_key`)."""
        return self.compose_key(client, self._route_key(connection.scope), ctx)

    def _route_key(self, scope: Any) -> Optional[str]:
        """The route's part of a key (None without `per_route`)."""
        return self._route_of(scope) if self._per_route else None

    @property
    def per_route(self) -> bool:
        """Whether a client's budget is per route (method and path template)."""
        return self._per_route

    @per_route.setter
    def per_route(self, value: bool) -> None:
        self._per_route = bool(value)
        self._forget_keys()
