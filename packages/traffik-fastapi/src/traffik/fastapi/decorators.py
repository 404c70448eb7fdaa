"""`throttled`: throttles as one FastAPI dependency that also decorates endpoints needing no `request` parameter."""

from __future__ import annotations

import functools
import inspect
import itertools
import typing
from collections.abc import AsyncIterator, Awaitable
from typing import (
    Annotated,
    Any,
    Callable,
    Literal,
    NamedTuple,
    Optional,
    TypeVar,
    cast,
    overload,
)

from fastapi import params
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from traffik._connection_kinds import other_kind
from traffik.decorators import carry_headers, check_throttles, is_async_callable
from traffik.exceptions import ConfigurationError
from traffik.header_merge import merge_headers
from traffik.middleware_sends import HeaderSink
from traffik.outcomes import Outcome, settle
from traffik.throttles import Throttle
from traffik.throttles._http import overridden
from traffik.together import Entry, hit_together

__all__ = ["Throttled", "throttled"]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_names = itertools.count()
_BOUND = ("self", "cls")
"""The first parameter of a method, which binding removes (class-based views)."""
_Scope = Optional[Literal["function", "request"]]
"""`Depends(scope=...)`: `"function"` ends a dependency with `yield` as the endpoint returns."""


def _route_status(connection: Any, injected: Optional[Response] = None) -> int:
    """The status code FastAPI answers with when the endpoint returns a plain value: the one
    it set on the `injected` response (`response.status_code = 401`), else the route's."""
    status = injected.status_code if injected is not None else None
    return status or getattr(connection.scope.get("route"), "status_code", None) or 200


def _is_generator(endpoint: Callable[..., Any]) -> bool:
    call = inspect.unwrap(endpoint)
    return inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call)


async def _settled(
    connection: Any, result: Awaitable[Any], injected: Optional[Response] = None
) -> Any:
    """Await the endpoint's `result`, then settle the connection's charges with its outcome:
    the exception it raised, else the `Response` it returned (else the status it set on the
    `injected` response, else the route's)."""
    try:
        value = await result
    except Exception as exc:
        await settle(connection, Outcome.of_exception(exc))
        raise
    status = getattr(value, "status_code", None) or _route_status(connection, injected)
    await settle(connection, Outcome(status, response=value))
    return value


class _Marked(NamedTuple):
    """What the decorator's dependency gives its endpoint: the connection, FastAPI's injected
    `response`, and the headers the throttles wrote (`written`, put on the injected response
    too)."""

    connection: Any
    response: Optional[Response]
    written: Optional[HeaderSink]


def _carry_headers(mark: _Marked, answer: Any) -> None:
    """Add the headers the throttles wrote to what the endpoint answered (`carry_headers`): a
    `Response` it returned, which FastAPI sends as it is, or an `HTTPException` it raised."""
    written = mark.written
    if written is not None and answer is not mark.response:
        carry_headers(written.raw_headers, answer)


async def _carrying(mark: _Marked, result: Awaitable[Any]) -> Any:
    """Await the endpoint's `result`, carrying the throttles' headers to what it answers."""
    try:
        value = await result
    except HTTPException as exc:
        _carry_headers(mark, exc)
        raise
    _carry_headers(mark, value)
    return value


def _mark_of(kwargs: dict[str, Any], name: str, endpoint: Callable[..., Any]) -> _Marked:
    """What the decorator's dependency gave (`_Marked`), taken out of the endpoint's
    arguments; a `ConfigurationError` when FastAPI did not call the endpoint (a Starlette
    route), so no dependency ran."""
    mark = kwargs.pop(name, None)
    if not isinstance(mark, _Marked):
        raise ConfigurationError(
            f"traffik.fastapi.throttled decorates FastAPI routes (FastAPI runs its dependency); "
            f"{getattr(endpoint, '__qualname__', endpoint)!r} was called without it, as a "
            "Starlette route calls its endpoint: use traffik.throttled (traffik.throttles."
            "throttled) there"
        )
    return mark


def _not_overridden(throttles: tuple[Throttle, ...], connection: Any) -> tuple[Throttle, ...]:
    """`throttles` but those the app overrides (`app.dependency_overrides[throttle] = ...`,
    as tests disable a `Depends(throttle)`): left out, their override not called."""
    return tuple(throttle for throttle in throttles if not overridden(throttle, connection))


def _dependency(throttles: tuple[Throttle, ...], connection_type: type) -> Callable[..., Any]:
    """One throttle as is; several (or any with `charge_when`) as one dependency that decides
    them as one (`traffik.together`), with `yield` to settle charges with the outcome
    (`_applying`); it gives the connection."""
    settles = any(throttle.charge_when is not None for throttle in throttles)
    if len(throttles) == 1 and not settles:
        return cast(Callable[..., Any], throttles[0])
    return _applying(throttles, connection_type, settles, marks=False)


async def _apply(throttles: tuple[Throttle, ...], connection: Any, response: Any) -> None:
    """Hit `throttles` (those the app does not override) as one decision."""
    applied = _not_overridden(throttles, connection)
    if len(applied) == 1:
        await applied[0].hit(connection, response=response)
    elif applied:
        entries = [Entry(throttle, connection) for throttle in applied]
        await hit_together(entries, connection, response=response)


def _signature(connection_type: type) -> inspect.Signature:
    """`(connection=None, *, response=None, route_connection=None)` for FastAPI to inject (no
    response for WebSockets). FastAPI gives `connection` only on a route of its kind, and
    `route_connection` (an `HTTPConnection`) on every route: what `other_kind` names."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter(
            "connection",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None,
            annotation=connection_type,
        )
    ]
    if not issubclass(connection_type, WebSocket):
        parameters.append(inspect.Parameter("response", keyword, default=None, annotation=Response))
    parameters.append(
        inspect.Parameter("route_connection", keyword, default=None, annotation=HTTPConnection)
    )
    return inspect.Signature(parameters)


def _applying(
    throttles: tuple[Throttle, ...], connection_type: type, settles: bool, *, marks: bool
) -> Callable[..., Any]:
    """A dependency hitting `throttles` as one decision, which gives the connection, or with
    `marks` a `_Marked` (the connection and where the hit's headers are on the injected
    response: the decorator's); with `settles` (`charge_when`) it has `yield` and settles the
    charges with the outcome: the exception, else the status set on the injected response,
    else the route's status code (a decorated endpoint's own outcome settles first, and a
    request settles once)."""

    async def hit(
        connection: Any = None, response: Any = None, route_connection: Any = None
    ) -> Any:
        if connection is None:
            raise other_kind(throttles, route_connection)
        if not marks:
            await _apply(throttles, connection, response)
            return connection
        if response is None:
            await _apply(throttles, connection, None)
            return _Marked(connection, None, None)
        # (written apart, then put on the injected response: another throttle's dependency
        # may have written the same fields there, which these may replace)
        written = HeaderSink()
        written.raw_headers = []
        await _apply(throttles, connection, written)
        merge_headers(response.raw_headers, written.raw_headers)
        return _Marked(connection, response, written)

    dependency: Callable[..., Any] = hit
    if settles:

        async def hit_and_settle(
            connection: Any = None, response: Any = None, route_connection: Any = None
        ) -> AsyncIterator[Any]:
            value = await hit(connection, response, route_connection)
            try:
                yield value
            except Exception as exc:
                await settle(connection, Outcome.of_exception(exc))
                raise
            await settle(connection, Outcome(_route_status(connection, response)))

        dependency = hit_and_settle
    dependency.__signature__ = _signature(connection_type)  # type: ignore[attr-defined]
    dependency.connection_type = connection_type  # type: ignore[attr-defined]
    dependency.settles = settles  # type: ignore[attr-defined]
    dependency.throttles = throttles  # type: ignore[attr-defined]  # (`document_rate_limits`)
    return dependency


def _typed_signature(endpoint: Callable[..., Any]) -> inspect.Signature:
    """The endpoint's signature with string annotations resolved where possible."""
    signature = inspect.signature(endpoint)
    try:
        hints = typing.get_type_hints(endpoint, include_extras=True)
    except Exception:  # unresolvable names: FastAPI resolves what it can itself
        return signature
    return signature.replace(
        parameters=[
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
        ],
        return_annotation=hints.get("return", signature.return_annotation),
    )


class Throttled(params.Depends):
    """What `throttled(...)` returns: a FastAPI dependency marker, and a decorator."""

    @property
    def __signature__(self) -> inspect.Signature:
        """Never given: FastAPI reads it only for `Depends(throttled(...))`, where it would
        take the decorator's parameter for a required query parameter (every request a 422,
        and no OpenAPI document). Defining such a route raises a `ConfigurationError`
        instead, naming the two ways to write it."""
        names = ", ".join(
            getattr(throttle, "uid", "?")
            for throttle in getattr(self.dependency, "throttles", (self.dependency,))
        )
        raise ConfigurationError(
            f"throttled({names}) is a FastAPI dependency already: write "
            "dependencies=[throttled(...)] (or Annotated[..., throttled(...)]), not "
            "Depends(throttled(...)); or put @throttled(...) under the route decorator"
        )

    def __call__(self, endpoint: Endpoint) -> Endpoint:
        if not callable(endpoint):
            raise TypeError(f"throttled(...) decorates an endpoint function, not {endpoint!r}")
        assert self.dependency is not None
        signature = _typed_signature(endpoint)
        name = f"_traffik_throttled_{next(_names)}"
        parameters = list(signature.parameters.values())
        # A method's `self` (or `cls`) stays first, for binding to drop it, not ours.
        bound = parameters[:1] if parameters and parameters[0].name in _BOUND else []
        parameters = parameters[len(bound) :]
        first_kind = parameters[0].kind if parameters else inspect.Parameter.POSITIONAL_OR_KEYWORD
        kind = (
            first_kind
            if first_kind is inspect.Parameter.POSITIONAL_ONLY
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        throttles = cast(
            "tuple[Throttle, ...]", getattr(self.dependency, "throttles", (self.dependency,))
        )
        connection_type = getattr(self.dependency, "connection_type", None)
        if connection_type is None:
            connection_type = cast(Throttle, self.dependency).connection_type
        settles = getattr(self.dependency, "settles", False)
        # First, so FastAPI resolves the throttles before the endpoint's own dependencies:
        # the hit, and where its headers are on the injected response (`_Marked`), to carry
        # them to a `Response` the endpoint returns (`_carry_headers`).
        marking = _applying(throttles, connection_type, settles, marks=True)
        scope: _Scope = "function" if settles else None  # (settled before the response)
        marker = params.Depends(marking, use_cache=False, scope=scope)
        hidden = inspect.Parameter(name, kind, annotation=Annotated[_Marked, marker])

        if is_async_callable(endpoint):

            @functools.wraps(endpoint)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                mark = _mark_of(kwargs, name, endpoint)
                result = endpoint(*args, **kwargs)
                if settles:
                    result = _settled(mark.connection, result, mark.response)
                return await _carrying(mark, result)

        elif settles and not _is_generator(endpoint):
            # A sync function run in the thread pool here (as FastAPI would run it), so that
            # its returned `Response` settles the charge, as an async endpoint's does.

            @functools.wraps(endpoint)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                mark = _mark_of(kwargs, name, endpoint)
                result = _settled(
                    mark.connection, run_in_threadpool(endpoint, *args, **kwargs), mark.response
                )
                return await _carrying(mark, result)

        else:  # generators, and sync functions settling nothing: FastAPI runs or iterates them

            @functools.wraps(endpoint)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                mark = _mark_of(kwargs, name, endpoint)
                try:
                    value = endpoint(*args, **kwargs)
                except HTTPException as exc:
                    _carry_headers(mark, exc)
                    raise
                _carry_headers(mark, value)
                return value

        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*bound, hidden, *parameters]
        )
        return wrapper  # type: ignore[return-value]


@overload
def throttled(*throttles: Throttle, route: None = None) -> Throttled: ...


@overload
def throttled(*throttles: Throttle, route: Endpoint) -> Endpoint: ...


def throttled(*throttles: Throttle, route: Optional[Endpoint] = None) -> Any:
    """Apply `throttles`, in order, to a FastAPI endpoint or router (`traffik.decorators.throttled`).

    As a decorator (under the route decorator) the endpoint needs no `request` parameter:

    ```python
    @app.get("/search")
    @throttled(burst, sustained)
    async def search(q: str): ...
    ```

    As a dependency: `@app.get("/items", dependencies=[throttled(burst, sustained)])` or
    `APIRouter(dependencies=[throttled(api)])`. Several throttles are one decision
    (`traffik.together`): admitted only if every one admits, charged all or none, refused with
    the wait until all admit. Allowed responses carry the rate-limit headers: as a decorator
    also a `Response` the endpoint returns and an `HTTPException` it raises; as a dependency
    not those (FastAPI sends a returned `Response` as it is). Throttles with
    `charge_when` settle their charge with the endpoint's outcome, never with a background
    task or a streamed body failing after the response started: as a decorator, its
    `Response` or exception (`def` and `async def` alike; a generator endpoint's is its
    route's status code); as a dependency, settled as the endpoint returns or raises, its
    exception, else the status it set on the injected `Response`, else the route's (a
    `Response` it returns is not seen). Each use counts: a throttle given twice counts twice.
    With `route=` the decorated endpoint is returned at once: `throttled(api, route=search)`.
    """
    connection_type = check_throttles(throttles, "throttled")
    dependency = _dependency(throttles, connection_type)
    # Settling as the endpoint returns or raises, before the response is sent (scope
    # "function"): a background task or a streamed body failing after it never counts.
    scope: _Scope = "function" if getattr(dependency, "settles", False) else None
    marker = Throttled(dependency=dependency, use_cache=False, scope=scope)
    return marker if route is None else marker(route)
