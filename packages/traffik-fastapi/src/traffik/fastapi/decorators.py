"""`throttled`: throttles as one FastAPI dependency that also decorates endpoints needing no `request` parameter."""

from __future__ import annotations

import functools
import inspect
import itertools
import typing
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Callable, Optional, TypeVar, cast

from fastapi import params
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.websockets import WebSocket

from traffik.decorators import check_throttles, is_async_callable
from traffik.outcomes import Outcome, settle
from traffik.throttles import Throttle
from traffik.together import Entry, hit_together

__all__ = ["Throttled", "throttled"]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_names = itertools.count()


def _route_status(connection: Any) -> int:
    """The status code FastAPI answers with when the endpoint returns a plain value."""
    return getattr(connection.scope.get("route"), "status_code", None) or 200


def _is_generator(endpoint: Callable[..., Any]) -> bool:
    call = inspect.unwrap(endpoint)
    return inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call)


async def _settled(connection: Any, result: Awaitable[Any]) -> Any:
    """Await the endpoint's `result`, then settle the connection's charges with its outcome:
    the exception it raised, else the `Response` it returned (else the route's status)."""
    try:
        value = await result
    except Exception as exc:
        await settle(connection, Outcome.of_exception(exc))
        raise
    status = getattr(value, "status_code", None) or _route_status(connection)
    await settle(connection, Outcome(status, response=value))
    return value


def _dependency(throttles: tuple[Throttle, ...], connection_type: type) -> Callable[..., Any]:
    """One throttle as is; several (or any with `charge_when`) as one dependency with `yield`
    that decides them as one (`traffik.together`) and settles charges with the outcome."""
    settles = any(throttle.charge_when is not None for throttle in throttles)
    if len(throttles) == 1 and not settles:
        return cast(Callable[..., Any], throttles[0])

    async def apply_throttles(connection: Any, response: Any = None) -> AsyncIterator[Any]:
        if len(throttles) == 1:
            await throttles[0].hit(connection, response=response)
        else:
            entries = [Entry(throttle, connection) for throttle in throttles]
            await hit_together(entries, connection, response=response)
        if not settles:
            yield connection
            return
        try:
            yield connection
        except Exception as exc:
            await settle(connection, Outcome.of_exception(exc))
            raise
        await settle(connection, Outcome(_route_status(connection)))

    parameters = [
        inspect.Parameter(
            "connection", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=connection_type
        )
    ]
    if not issubclass(connection_type, WebSocket):
        parameters.append(
            inspect.Parameter(
                "response", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Response
            )
        )
    apply_throttles.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    apply_throttles.connection_type = connection_type  # type: ignore[attr-defined]
    apply_throttles.settles = settles  # type: ignore[attr-defined]
    apply_throttles.throttles = throttles  # type: ignore[attr-defined]
    return apply_throttles


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

    def __call__(self, endpoint: Endpoint) -> Endpoint:
        if not callable(endpoint):
            raise TypeError(f"throttled(...) decorates an endpoint function, not {endpoint!r}")
        assert self.dependency is not None
        signature = _typed_signature(endpoint)
        name = f"_traffik_throttled_{next(_names)}"
        parameters = list(signature.parameters.values())
        first_kind = parameters[0].kind if parameters else inspect.Parameter.POSITIONAL_OR_KEYWORD
        kind = (
            first_kind
            if first_kind is inspect.Parameter.POSITIONAL_ONLY
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        connection_type = getattr(self.dependency, "connection_type", Any)
        # First, so FastAPI resolves the throttles before the endpoint's own dependencies.
        hidden = inspect.Parameter(
            name,
            kind,
            annotation=Annotated[connection_type, params.Depends(self.dependency, use_cache=False)],
        )

        settles = getattr(self.dependency, "settles", False)
        if is_async_callable(endpoint):

            @functools.wraps(endpoint)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                connection = kwargs.pop(name, None)
                if not settles:
                    return await endpoint(*args, **kwargs)
                return await _settled(connection, endpoint(*args, **kwargs))

        elif settles and not _is_generator(endpoint):
            # A sync function run in the thread pool here (as FastAPI would run it), so that
            # its returned `Response` settles the charge, as an async endpoint's does.

            @functools.wraps(endpoint)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                connection = kwargs.pop(name, None)
                return await _settled(connection, run_in_threadpool(endpoint, *args, **kwargs))

        else:  # generators, and sync functions settling nothing: FastAPI runs or iterates them

            @functools.wraps(endpoint)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                kwargs.pop(name, None)
                return endpoint(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[hidden, *parameters])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]


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
    the wait until all admit. Allowed responses carry the rate-limit headers (unless the
    endpoint returns a `Response` itself, whose headers FastAPI leaves alone). Throttles with
    `charge_when` settle their charge with the outcome: as a decorator, the endpoint's
    `Response` or exception (`def` and `async def` alike; a generator endpoint's is its
    route's status code); as a dependency, the exception or the route's status code. Each
    use counts: a throttle given twice counts twice. With `route=` the decorated endpoint is
    returned at once: `throttled(api, route=search)`.
    """
    connection_type = check_throttles(throttles, "throttled")
    marker = Throttled(dependency=_dependency(throttles, connection_type), use_cache=False)
    return marker if route is None else marker(route)
