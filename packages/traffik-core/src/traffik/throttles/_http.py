"""`HTTPThrottle` (traffik 1.2's `RequestThrottle`): a `Throttle` of HTTP requests, and its dependency that charges by outcome."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from starlette.requests import Request
from starlette.responses import Response

from traffik import outcomes
from traffik.backends.base import ThrottleBackend
from traffik.buckets import route_part, without_method
from traffik.events import DecisionEvent
from traffik.outcomes import Outcome
from traffik.registry import ThrottleRegistry
from traffik.rules import Bypass, Rule
from traffik.throttles._throttle import (
    CostSetting,
    HeadersSetting,
    OnErrorSetting,
    RateSetting,
    Throttle,
)

__all__ = ["ChargeByOutcome", "HTTPThrottle", "RequestThrottle", "overridden"]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _without_method_of(scope: Any) -> str:
    return without_method(route_part(scope))


class _OutcomeSignature:
    """`ChargeByOutcome.__signature__`, made once per dependency as FastAPI first reads it
    (FastAPI is imported then, not before); the class itself has none."""

    def __get__(
        self, dependency: Optional[ChargeByOutcome], owner: Optional[type] = None
    ) -> Optional[inspect.Signature]:
        if dependency is None:
            return None
        if dependency._signature is None:
            from fastapi import Depends

            settling = Depends(dependency.settling, scope="function")
            request = inspect.Parameter("request", _KEYWORD, default=settling, annotation=Request)
            dependency._signature = inspect.Signature([request], return_annotation=Request)
        return dependency._signature


def overridden(throttle: Any, connection: Any) -> bool:
    """Whether the connection's FastAPI app overrides `throttle`
    (`app.dependency_overrides[throttle] = ...`, as a test disables a `Depends(throttle)`):
    then the throttle applies nowhere on that app, wherever FastAPI runs it from (inside
    `throttled(a, b)`, `charge_by_outcome`)."""
    overrides = getattr(connection.scope.get("app"), "dependency_overrides", None)
    return overrides is not None and throttle in overrides


class ChargeByOutcome:
    """`throttle.charge_by_outcome`, a FastAPI dependency made once per throttle. FastAPI
    reads its `__signature__`: the request, from `settling`, a dependency with `yield` of
    scope `"function"`, which hits before the endpoint runs and settles the charge as the
    endpoint returns or raises, before the response is sent. `throttles` names the throttle
    for the OpenAPI document."""

    __slots__ = ("_signature", "throttle")

    __signature__ = _OutcomeSignature()
    """What FastAPI injects: the request, once `settling` has hit."""

    def __init__(self, throttle: HTTPThrottle) -> None:
        self.throttle = throttle
        self._signature: Optional[inspect.Signature] = None

    @property
    def throttles(self) -> tuple[HTTPThrottle, ...]:
        """The throttle it applies, named as `throttled(a, b)` names its throttles (for the
        OpenAPI document's 429)."""
        return (self.throttle,)

    async def __call__(self, request: Request) -> Request:
        return request

    async def settling(
        self,
        request: Request = None,  # type: ignore[assignment]  # (None: a WebSocket route's)
        response: Response = None,  # type: ignore[assignment]  # (FastAPI's, always given)
    ) -> AsyncIterator[Request]:
        """Hit, then settle the charge with the endpoint's outcome (`ChargeByOutcome`); not
        at all when the app overrides the throttle (`overridden`), as in a test."""
        if request is not None and overridden(self.throttle, request):
            yield request
            return
        await self.throttle.hit(request, response=response)
        try:
            yield request
        except Exception as exc:
            await outcomes.settle(request, Outcome.of_exception(exc))
            raise
        status = response.status_code if response is not None else None
        if not status:
            status = getattr(request.scope.get("route"), "status_code", None) or 200
        await outcomes.settle(request, Outcome(status))

    def __repr__(self) -> str:
        return f"{self.throttle!r}.charge_by_outcome"


class HTTPThrottle(Throttle):
    """A throttle for HTTP requests; as a FastAPI dependency it returns the request.

    ```python
    throttle = HTTPThrottle("api", rate="100/min")

    @app.get("/items")
    async def items(request: Request = Depends(throttle)): ...
    ```

    Takes every argument of `Throttle`, and:

    Args:
        use_method: Count each HTTP method of a route apart (`GET /items` and
            `POST /items`); False: the methods of a route share one budget.
    """

    connection_type = Request
    refused_scopes = frozenset({"websocket"})

    if TYPE_CHECKING:  # (`Throttle.hit`, typed for this kind: it gives the request back)

        async def hit(
            self,
            connection: Optional[Request] = None,
            *,
            cost: Optional[int] = None,
            context: Optional[Mapping[str, Any]] = None,
            skip_handler: Optional[bool] = None,
            response: Optional[Response] = None,
            shadow: Optional[bool] = None,
        ) -> Request: ...

        __call__ = hit

    @cached_property
    def charge_by_outcome(self) -> ChargeByOutcome:
        """The FastAPI dependency for a throttle with `charge_when`:
        `Depends(throttle.charge_by_outcome)`. It hits before the endpoint runs, then settles
        the charge with the endpoint's outcome as the endpoint returns or raises, before the
        response is sent: a background task or a streamed body that fails after the response
        started never counts. The outcome is the exception the endpoint raised (its status
        code, else 500), else the status it set on the `Response` FastAPI injects
        (`response.status_code = 401`), else the route's status code. A `Response` the
        endpoint returns is not seen (FastAPI shows it to no dependency): to count a returned
        `JSONResponse(..., status_code=401)`, use `traffik.fastapi.throttled` or
        `ThrottleMiddleware`. On a WebSocket route FastAPI gives it no request: `hit`'s
        `ConfigurationError` says what to use there."""
        return ChargeByOutcome(self)

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
        use_method: bool = True,
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
        """As `Throttle` (every argument spelt out, for type checkers and IDEs);
        `use_method=False` gives every method of a route one budget."""
        self.use_method = use_method
        if not use_method:
            self._route_of = _without_method_of  # type: ignore[misc,method-assign]
        super().__init__(
            uid,
            rate,
            identifier,
            handle_throttled,
            strategy,
            backend,
            cost,
            dynamic_backend=dynamic_backend,
            min_wait_period=min_wait_period,
            headers=headers,
            on_error=on_error,
            context=context,
            registry=registry,
            rules=rules,
            cache_ids=cache_ids,
            dynamic_rules=dynamic_rules,
            skip_handler=skip_handler,
            per_route=per_route,
            charge_when=charge_when,
            shadow=shadow,
            on_decision=on_decision,
        )

    def _dependency_parameters(self) -> list[inspect.Parameter]:
        response = inspect.Parameter("response", _KEYWORD, default=None, annotation=Response)
        return [*super()._dependency_parameters(), response]


RequestThrottle = HTTPThrottle
