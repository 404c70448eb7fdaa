"""Reading, giving back and forgetting one client's bucket: `stat`, `check` (`test`), `refund`, `reset`.

Mixed into `Throttle`. A client is named by a connection (its identity and route) or by the
identifier the throttle gives it; a route other than the connection's own is named by
`path` (as declared, mounts included) and `method`.

A failure of the store follows the throttle's `on_error` (`traffik.on_error.bucket_failure`):
`"raise"` re-raises; any other policy logs it and answers: `stat` None, `check` as the policy
decides (False under `"throttle"`, else True), `refund` gives nothing back, `reset` False. A
`ConfigurationError` (a bad argument, a `refund` or `reset` the strategy cannot do) always
raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from starlette.websockets import WebSocket

from traffik.buckets import named_route_part
from traffik.exceptions import ConfigurationError
from traffik.on_error import bucket_failure
from traffik.outcomes import given_back, put_back, take_charge, take_charged
from traffik.strategies.steps import WHAT_GIVES_BACK, gives_back
from traffik.throttle_settings import check_cost
from traffik.typing import EXEMPTED, StrategyStat

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate
    from traffik.strategies.steps import Item

__all__ = ["BucketState"]


class BucketState:
    """`stat`, `check` (and its traffik 1.2 alias `test`), `refund` and `reset` of one client's
    bucket, for `Throttle`."""

    uid: str
    strategy: Any
    cost: int
    _cost_fn: Optional[Callable[..., Any]]
    _rates: tuple[Rate, ...]
    _rate_fn: Optional[Callable[..., Any]]
    on_error: Any
    context: dict[str, Any]
    per_route: bool
    charge_when: Optional[Callable[..., Any]]
    connection_type: ClassVar[type[Any]]
    _own_keys: ClassVar[bool]

    if TYPE_CHECKING:

        def get_backend(self, connection: Any = None) -> ThrottleBackend: ...

        def _own_key_hooks(self) -> str: ...

        async def get_connection_id(
            self, connection: Any, backend: ThrottleBackend, context: Any = None
        ) -> Any: ...

        def key_for(
            self,
            connection: Any,
            ident: Any,
            context: Mapping[str, Any],
            route: Optional[str] = None,
        ) -> str: ...

        async def _rates_for(
            self, connection: Any, context: Mapping[str, Any]
        ) -> tuple[Rate, ...]: ...

        def items(
            self, key: str, rates: tuple[Rate, ...], cost: int, backend: ThrottleBackend
        ) -> list[Item]: ...

        async def _cost_for(self, connection: Any, context: Mapping[str, Any]) -> int: ...

    async def _bucket(
        self,
        client: Any,
        context: Optional[Mapping[str, Any]],
        path: Optional[str],
        method: Optional[str],
        backend: Optional[ThrottleBackend] = None,
    ) -> Optional[tuple[str, ThrottleBackend, Mapping[str, Any]]]:
        """The key, backend and context of a client's bucket, or None for an exempted client.

        `client` is a connection (its identity and, unless `path` names another, its route)
        or an identifier as this throttle's identifier returns it (a per-route throttle then
        needs `path`)."""
        websocket = issubclass(self.connection_type, WebSocket)
        route = named_route_part(path, method, websocket, self)
        if self._own_keys and (route is not None or not hasattr(client, "scope")):
            raise ConfigurationError(
                f"{self!r} composes its keys itself ({self._own_key_hooks()}, from the "
                "connection): stat and reset name its buckets by a connection, as its hits do "
                "(`stat(request)`); path= and an identifier name none of them"
            )
        ctx = self.context if context is None else {**self.context, **context}
        if hasattr(client, "scope"):
            connection = client
            backend = backend or self.get_backend(connection)
            ident = await self.get_connection_id(connection, backend, ctx)
            if ident is EXEMPTED:
                return None
        else:
            if self.per_route and route is None:
                example, method = (
                    ("'/ws'", "; WebSocket routes have no method")
                    if websocket
                    else ("'/items/{item_id}'", " and method= if not GET")
                )
                raise ConfigurationError(
                    f"{self!r} counts per route; with an identifier ({client!r}) pass path= as "
                    f"the route declares it (e.g. {example}){method}"
                )
            connection, ident = None, client
            backend = backend or self.get_backend()
        return self.key_for(connection, ident, ctx, route=route), backend, ctx

    def _failed(
        self,
        operation: str,
        exc: Exception,
        client: Any,
        backend: Optional[ThrottleBackend],
        outcome: str,
    ) -> Any:
        """`bucket_failure` for `operation` on `client`'s bucket on `backend` (None: the one
        the throttle would use, for its `on_error` and to name it in the log); returns the
        policy, or raises (`"raise"`, bad arguments)."""
        if backend is None and not isinstance(exc, ConfigurationError):
            try:
                backend = self.get_backend(client if hasattr(client, "scope") else None)
            except Exception:
                if self.on_error is None:
                    raise
        return bucket_failure(self, operation, exc, backend, outcome)

    async def _rates_of(self, client: Any, ctx: Mapping[str, Any]) -> tuple[Rate, ...]:
        if self._rate_fn is None:
            return self._rates
        if not hasattr(client, "scope"):
            raise ConfigurationError(
                f"{self!r}: its rate comes from a callable of the connection; pass the "
                "connection, not an identifier"
            )
        return await self._rates_for(client, ctx)

    async def stat(
        self,
        connection: Any,
        context: Optional[Mapping[str, Any]] = None,
        *,
        path: Optional[str] = None,
        method: Optional[str] = None,
        backend: Optional[ThrottleBackend] = None,
    ) -> Optional[StrategyStat]:
        """The client's current state for this throttle, or None (exempted, or a strategy
        with no `get_stat`). With several rates: the binding one's (`metadata["rates"]` has
        each rate's units left and wait).

        By default the state of `connection`'s own route; `path` (as declared, e.g.
        `"/items/{item_id}"`, mounts included) and `method` (default GET) read another
        route's, e.g. from a `GET /quota` endpoint. `backend` defaults to the one the
        throttle would use.

        A failure of the store follows `on_error`: `"raise"` raises it; any other policy logs
        it and answers None (the state is not known).
        """
        try:
            return await self._stat(connection, context, path, method, backend)
        except Exception as exc:
            self._failed("stat", exc, connection, backend, "no state read")
            return None

    async def _stat(
        self,
        connection: Any,
        context: Optional[Mapping[str, Any]],
        path: Optional[str],
        method: Optional[str],
        backend: Optional[ThrottleBackend],
    ) -> Optional[StrategyStat]:
        bucket = await self._bucket(connection, context, path, method, backend)
        if bucket is None:
            return None
        key, backend, ctx = bucket
        rates = await self._rates_of(connection, ctx)
        if rates[0].unlimited:
            return StrategyStat.unlimited(key, rates[0])
        if len(rates) == 1:
            get_stat = getattr(self.strategy, "get_stat", None)
            if get_stat is None:
                return None
            stat: StrategyStat = await get_stat(key, rates[0], backend)
            return stat
        decision = await backend.evaluate_all(self.items(key, rates, 1, backend), commit=False)
        parts = getattr(decision, "parts", (decision,))
        # The units each rate has now: a hit's decision says what is left after it, and a
        # refused one (`combine`) what each rate has, nothing taken.
        taken = 1 if decision.allowed else 0
        each = [
            {
                "rate": rate,
                "hits_remaining": (part.remaining or 0) + taken,
                "wait_ms": part.wait_ms,
            }
            for rate, part in zip(rates, parts)
        ]
        binding = min(each, key=lambda e: (-e["wait_ms"], e["hits_remaining"]))
        return StrategyStat(
            key=key,
            rate=binding["rate"],
            hits_remaining=binding["hits_remaining"],
            wait_ms=decision.wait_ms,
            metadata={"strategy": getattr(self.strategy, "name", None), "rates": each},
        )

    async def reset(
        self,
        client: Any,
        context: Optional[Mapping[str, Any]] = None,
        *,
        path: Optional[str] = None,
        method: Optional[str] = None,
        backend: Optional[ThrottleBackend] = None,
    ) -> bool:
        """Forget what this throttle counted for one client (every rate), so its next hit
        starts a full budget; returns whether there was state to forget. Other clients and
        routes keep theirs.

        `client` is a connection the throttle saw or an identifier (see `_bucket`); `path`
        (as declared, mounts included) and `method` (default GET) name another route;
        `backend` defaults to the one the throttle would use. A failure of the store follows
        `on_error`: `"raise"` raises it; any other policy logs it and returns False (nothing
        is known to be forgotten)."""
        if getattr(self.strategy, "suffix", None) is None:
            raise ConfigurationError(
                f"{self!r}: its strategy {self.strategy!r} does not say where it keeps state "
                "(no `suffix`); clear the whole backend with `await backend.reset()`"
            )
        try:
            bucket = await self._bucket(client, context, path, method, backend)
            if bucket is None:
                return False
            key, on, ctx = bucket
            rates = await self._rates_of(client, ctx)
            removed = [await on.delete(item.key) for item in self.items(key, rates, 1, on)]
        except Exception as exc:
            self._failed("reset", exc, client, backend, "nothing forgotten")
            return False
        if on.refusals is not None:
            on.refusals.forget(key)
            if getattr(self.strategy, "bind", None) is not None:
                # (a key's segment, a tier or a priority, is not part of the stored client:
                # the refusals of the client under every segment go with its state)
                stored = {item.key for item in self.items(key, rates, 1, on)}
                on.refusals.forget_where(lambda other: _stored_in(self, other, rates, on, stored))
        return any(removed)

    async def refund(
        self,
        client: Any,
        cost: Optional[int] = None,
        context: Optional[Mapping[str, Any]] = None,
        *,
        path: Optional[str] = None,
        method: Optional[str] = None,
        backend: Optional[ThrottleBackend] = None,
    ) -> None:
        """Give `cost` units back to every rate of this throttle for one client, never past a
        full budget: one step on the backend (one round trip on Redis). `client`, `path`,
        `method`, `backend` as for `reset`.

        A connection gets back what this throttle took from it (`cost` of it, default all,
        never more), once: what was given back is not given back again, by another `refund`
        or when the request is settled, and a connection the throttle refused, exempted or
        never hit gets nothing. A charge noted (under `ThrottleMiddleware`, with
        `charge_when`, with several throttles as one) is given back on the bucket and
        backend it was taken from, each rate only what the charge still holds (nothing once
        its window closed: see `traffik.outcomes`). With nothing noted (a plain
        `Depends(throttle)`, a direct `hit`), what the throttle's latest hit on the
        connection took is given back on the bucket the connection names now. What is left
        after a `cost` stays for a later `refund`. On a WebSocket, each message is a request
        of its own: what is given back is the throttle's hits on the latest message (all of
        them, the latest first, when they were noted). `path`, `method`, `backend` or
        `context` name a bucket instead (`cost` default: the throttle's cost for this
        connection), whatever the connection took.

        A hit decided by `on_error` after a failure is noted too: the charge a fallback took
        is given back on the fallback, and a hit no store took (`"allow"`) gets nothing. A
        failure of the store while giving back follows `on_error`: `"raise"` raises it; any
        other policy logs it and gives nothing back (the client stays charged).

        Raises:
            ConfigurationError: When `cost` is not a whole number >= 0, or when the strategy
                cannot give units back (a strategy of your own: `gives_back`).
        """
        if not gives_back(self.strategy):
            raise ConfigurationError(
                f"{self!r}.refund(): its strategy {self.strategy!r} cannot give units back: "
                f"{WHAT_GIVES_BACK}"
            )
        if cost is not None:
            cost = check_cost(cost, f"{self!r}.refund()")
        if (
            path is None
            and method is None
            and backend is None
            and context is None
            and hasattr(client, "scope")
        ):
            charge = take_charge(client, self, cost)
            if charge is not None:
                try:
                    await charge.give_back()
                except Exception as exc:
                    on = charge.charges[0].backend if charge.charges else None
                    self._failed("refund", exc, client, on, "nothing given back")
                return
            if self.charge_when is not None or given_back(client, self):
                return  # (nothing of this connection's is left to give back)
            cost = owed = take_charged(client, self, cost)
            if not cost:
                return  # (this throttle took nothing from the connection, or gave it back)
        else:
            owed = 0
        asked: list[bool] = []  # (set as the store is asked)
        try:
            await self._refund(client, cost, context, path, method, backend, asked)
        except Exception as exc:
            self._failed("refund", exc, client, backend, "nothing given back")
        except BaseException:
            if owed and not asked:  # (cancelled before the store was asked: still owed)
                put_back(client, self, owed)
            raise

    async def _refund(
        self,
        client: Any,
        cost: Optional[int],
        context: Optional[Mapping[str, Any]],
        path: Optional[str],
        method: Optional[str],
        backend: Optional[ThrottleBackend],
        asked: Optional[list[bool]] = None,
    ) -> None:
        """`refund` on the bucket `client`, `path`, `method`, `context` name on `backend`;
        `asked` gets True as the store is asked to give back."""
        bucket = await self._bucket(client, context, path, method, backend)
        if bucket is None:
            return
        key, backend, ctx = bucket
        rates = await self._rates_of(client, ctx)
        if rates[0].unlimited:
            return
        if cost is None:
            cost = self.cost if self._cost_fn is None else await self._cost_for(client, ctx)
        if cost:
            if asked is not None:
                asked.append(True)
            try:
                await backend.refund_all(self.items(key, rates, cost, backend))
            finally:  # the budget moved back (or will: a store may finish a refund begun)
                if backend.refusals is not None:  # ask the store again
                    backend.refusals.forget(key)

    async def check(
        self,
        connection: Any,
        cost: Optional[int] = None,
        context: Optional[Mapping[str, Any]] = None,
    ) -> bool:
        """Whether a hit of `cost` would pass now (best effort; nothing is counted). A failure
        of the store follows `on_error`: `"raise"` raises it; any other policy logs it and
        answers as a hit would be decided: False under `"throttle"`, else True (a handler is
        not run: it would decide, and charge, on a store of its own). A `cost` is a whole
        number >= 0, as `hit` takes (`ConfigurationError` otherwise)."""
        if cost is not None and (type(cost) is not int or cost < 0):
            cost = check_cost(cost, repr(self))  # (refused)
        try:
            stat = await self._stat(connection, context, None, None, None)
            if stat is None:
                return True
            ctx = self.context if context is None else {**self.context, **context}
            needed = cost if cost is not None else await self._cost_for(connection, ctx)
        except Exception as exc:
            policy = self._failed("check", exc, connection, None, "answered as a hit would be")
            return policy == "allow" or callable(policy)
        return stat.hits_remaining >= needed

    async def test(
        self,
        connection: Any,
        cost: Optional[int] = None,
        context: Optional[Mapping[str, Any]] = None,
    ) -> bool:
        """`check` under its traffik 1.2 alias: whether a hit of `cost` would pass now."""
        return await self.check(connection, cost, context)


def _stored_in(
    throttle: Any, key: str, rates: Any, backend: ThrottleBackend, stored: set[str]
) -> bool:
    """Whether `throttle`'s hits on `key` count in one of the `stored` keys (a key another
    throttle remembered, or not one at all, counts nowhere here)."""
    try:
        return any(item.key in stored for item in throttle.items(key, rates, 1, backend))
    except Exception:  # (a key of another throttle's making: its segments may not parse)
        return False
