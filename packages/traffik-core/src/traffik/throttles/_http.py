"""`HTTPThrottle` (traffik 1.2's `RequestThrottle`): a `Throttle` of HTTP requests, and its dependency that charges by outcome."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Callable, Optional, Union

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

__all__ = ["HTTPThrottle", "RequestThrottle"]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _without_method_of(scope: Any) -> str:
    return without_method(route_part(scope))


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

    async def charge_by_outcome(
        self,
        request: Request = None,  # type: ignore[assignment]  # (None: a WebSocket route's)
        response: Response = None,  # type: ignore[assignment]  # (FastAPI's, always given)
    ) -> AsyncIterator[Request]:
        """A FastAPI dependency with `yield` for a throttle with `charge_when`:
        `Depends(throttle.charge_by_outcome)`. It hits before the endpoint runs, then settles
        the charge with the outcome: the exception the endpoint raised (its status code), or
        else the route's status code (a dependency does not see a returned `Response`; the
        decorators and the middleware do). On a WebSocket route FastAPI gives it no request:
        `hit`'s `ConfigurationError` says what to use there."""
        await self.hit(request, response=response)
        try:
            yield request
        except Exception as exc:
            await outcomes.settle(request, Outcome.of_exception(exc))
            raise
        route = request.scope.get("route")
        await outcomes.settle(request, Outcome(getattr(route, "status_code", None) or 200))

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
