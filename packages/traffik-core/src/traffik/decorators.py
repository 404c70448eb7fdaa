"""Decorators applying throttles to endpoints: `starlette_throttled`, and traffik 1.2's FastAPI `throttled`.

As in traffik 1.2, `traffik.decorators.throttled` is the FastAPI decorator; it lives in
traffik-fastapi (`traffik.fastapi.throttled`) and is imported from there on first use, so
this module needs only Starlette. The Starlette decorator is `starlette_throttled`, which is
also `traffik.throttled` and `traffik.throttles.throttled`.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Awaitable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, TypeVar, overload

from traffik import _starlette_missing

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import HTTPConnection
    from starlette.responses import Response
    from starlette.websockets import WebSocket
except ImportError as exc:
    raise _starlette_missing("traffik.decorators") from exc

from traffik.exceptions import ConfigurationError
from traffik.header_merge import merge_headers
from traffik.outcomes import Outcome, settle
from traffik.together import Entry, hit_together

if TYPE_CHECKING:
    if sys.version_info >= (3, 10):
        from typing import ParamSpec
    else:
        from typing_extensions import ParamSpec

    from traffik.fastapi import throttled as throttled  # what `__getattr__` imports
    from traffik.throttles import Throttle

    P = ParamSpec("P")

__all__ = ["carry_headers", "check_throttles", "is_async_callable", "starlette_throttled"]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
R = TypeVar("R")


class StarletteDecorator(Protocol):
    """What `starlette_throttled(...)` returns: it makes an endpoint, `def` or `async def`, an
    `async def` taking the same arguments and giving the same result."""

    @overload
    def __call__(
        self, endpoint: Callable[P, Awaitable[R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, endpoint: Callable[P, R], /) -> Callable[P, Coroutine[Any, Any, R]]: ...


def __getattr__(name: str) -> Any:
    """`throttled`, traffik-fastapi's decorator, imported on first use (module docstring)."""
    if name != "throttled":
        raise AttributeError(f"module 'traffik.decorators' has no attribute {name!r}")
    try:
        from traffik.fastapi import throttled
    except ImportError as exc:
        raise ImportError(
            "traffik.decorators.throttled is the FastAPI decorator (as in traffik 1.2), which "
            "comes with traffik-fastapi: pip install traffik-fastapi. For Starlette endpoints "
            "use traffik.throttled (traffik.decorators.starlette_throttled)"
        ) from exc
    return throttled


def check_throttles(throttles: tuple[Any, ...], owner: str) -> type[HTTPConnection]:
    """Validate the throttles given to a decorator; return the connection type they share.

    Args:
        throttles: The throttles given to the decorator.
        owner: The decorator's name, used in error messages.

    Returns:
        The connection type of the throttles (`Request` or `WebSocket`).

    Raises:
        ConfigurationError: When no throttle is given, or HTTP and WebSocket throttles are
            mixed.
        TypeError: When an item is not a throttle.
    """
    from traffik.throttles import Throttle

    if not throttles:
        raise ConfigurationError(
            f"At least one throttle must be given to {owner}(): {owner}(throttle, ...)"
        )
    for throttle in throttles:
        if not isinstance(throttle, Throttle):
            raise TypeError(
                f"{owner}() takes HTTPThrottle or WebSocketThrottle instances, not {throttle!r}"
            )
    kinds = {issubclass(t.connection_type, WebSocket) for t in throttles}
    if len(kinds) > 1:
        raise ConfigurationError(
            f"{owner}() got HTTP and WebSocket throttles together ({', '.join(map(repr, throttles))}); "
            "decorate an HTTP endpoint with HTTP throttles and a WebSocket endpoint with WebSocket throttles"
        )
    return throttles[0].connection_type


def _find_connection(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], endpoint: Callable[..., Any]
) -> HTTPConnection:
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    raise TypeError(
        f"throttled: {getattr(endpoint, '__qualname__', endpoint)!r} was called without a Request or "
        "WebSocket argument; a Starlette endpoint takes the connection as an argument "
        "(for FastAPI endpoints use traffik.fastapi.throttled)"
    )


def carry_headers(headers: list[tuple[bytes, bytes]], answer: Any) -> None:
    """Add the rate-limit `headers` the throttles wrote to what an endpoint answered: a
    `Response` it returned, or an `HTTPException` it raised (whose own headers win). A field
    the answer has already is sent once (`traffik.header_merge.merge_headers`).

    Args:
        headers: The raw header pairs the throttles wrote.
        answer: The endpoint's return value or exception; anything else is left alone.
    """
    if not headers:
        return
    if isinstance(answer, Response):
        merge_headers(answer.raw_headers, headers)
    elif isinstance(answer, HTTPException):
        raw = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in (answer.headers or {}).items()
        ]
        merge_headers(raw, headers, theirs_win=True)
        merged: dict[str, str] = {}
        for name, value in raw:  # (a list field written twice: one line, its items joined)
            key, text = name.decode("latin-1"), value.decode("latin-1")
            merged[key] = text if key not in merged else f"{merged[key]}, {text}"
        answer.headers = merged


def is_async_callable(obj: Any) -> bool:
    """Whether calling `obj` gives an awaitable: async functions, partials of them, objects with an async `__call__`.

    Args:
        obj: The callable to inspect (partials and decorated functions are unwrapped).

    Returns:
        True when `obj` is an async function, or an object whose `__call__` is one.
    """
    while isinstance(obj, functools.partial):
        obj = obj.func
    obj = inspect.unwrap(obj)
    dunder_call = getattr(obj, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(dunder_call)


@overload
def starlette_throttled(*throttles: Throttle, route: None = None) -> StarletteDecorator: ...


@overload
def starlette_throttled(
    *throttles: Throttle, route: Callable[P, Awaitable[R]]
) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def starlette_throttled(
    *throttles: Throttle, route: Callable[P, R]
) -> Callable[P, Coroutine[Any, Any, R]]: ...


def starlette_throttled(*throttles: Throttle, route: Optional[Endpoint] = None) -> Any:
    """Apply `throttles`, in order, before a Starlette endpoint runs (`traffik.throttled`).

    ```python
    @throttled(burst, sustained)
    async def homepage(request):
        return JSONResponse({"hello": "world"})
    ```

    With `route=` the decorated endpoint is returned at once: `throttled(api, route=homepage)`.

    The endpoint receives the `Request` or `WebSocket` as an argument (methods of
    `HTTPEndpoint` too). Several throttles are one decision (`traffik.together`): admitted only
    if every one admits, charged all or none, and refused with the wait until all admit.
    When the endpoint returns a `Response`, the throttles' rate-limit headers are added to
    it (to an `HTTPException` it raises too), and throttles with `charge_when` settle their
    charge with it (or with the exception the endpoint raised). Sync endpoints run in the
    thread pool, as Starlette runs them. For a WebSocket endpoint the throttles limit
    connection attempts; throttle messages with `await throttle.hit(websocket)`.

    Args:
        *throttles: The throttles to apply, all HTTP or all WebSocket throttles.
        route: The endpoint to decorate at once; None returns the decorator.

    Returns:
        The decorator, or the decorated endpoint when `route` is given.

    Raises:
        ConfigurationError: When no throttle is given, or HTTP and WebSocket throttles are
            mixed.
        TypeError: When an item of `throttles` is not a throttle, or the decorated object
            is not callable.

    The decorated endpoint raises a `ConfigurationError` (logged) when it is given a
    connection of the other kind: HTTP throttles on a WebSocket endpoint, or the reverse.
    """
    check_throttles(throttles, "throttled")

    def decorator(endpoint: Endpoint) -> Endpoint:
        if not callable(endpoint):
            raise TypeError(f"throttled(...) decorates an endpoint function, not {endpoint!r}")
        is_async = is_async_callable(endpoint)

        settles = any(throttle.charge_when is not None for throttle in throttles)

        @functools.wraps(endpoint)
        async def throttled_endpoint(*args: Any, **kwargs: Any) -> Any:
            connection = _find_connection(args, kwargs, endpoint)
            sink = None if isinstance(connection, WebSocket) else Response()
            start = len(sink.raw_headers) if sink is not None else 0
            if len(throttles) == 1:
                await throttles[0].hit(connection, response=sink)
            else:
                entries = [Entry(throttle, connection) for throttle in throttles]
                await hit_together(entries, connection, response=sink)
            try:
                if is_async:
                    result = await endpoint(*args, **kwargs)
                else:
                    result = await run_in_threadpool(endpoint, *args, **kwargs)
            except Exception as exc:
                if settles:
                    await settle(connection, Outcome.of_exception(exc))
                if sink is not None:
                    carry_headers(sink.raw_headers[start:], exc)
                raise
            if settles:
                status = result.status_code if isinstance(result, Response) else 200
                await settle(connection, Outcome(status, response=result))
            if sink is not None:
                carry_headers(sink.raw_headers[start:], result)
            return result

        return throttled_endpoint  # type: ignore[return-value]

    return decorator if route is None else decorator(route)
