"""traffik 1.2's key hooks, overridden in a subclass, decide the client and the key.

spec/integration.md §1.12: `get_connection_id(conn, backend, context=None)`,
`get_scoped_key` and `get_namespaced_key` are overridable hooks. Our own `identify` is one
too. A subclass that overrides any of them is asked on every hit, `stat` and `reset`; the
fast path (keys remembered per peer and route) is for throttles that override none.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.requests import Request

from traffik import HTTPThrottle, InMemoryBackend
from traffik.registry import ThrottleRegistry

pytestmark = pytest.mark.anyio


def _app(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}", dependencies=[Depends(throttle)])
    async def item(item_id: int) -> int:
        return item_id

    return app


async def _statuses(throttle: HTTPThrottle, *requests: tuple[str, str]) -> list[int]:
    transport = httpx.ASGITransport(app=_app(throttle))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [
            (await client.get(path, headers={"x-tenant": tenant})).status_code
            for tenant, path in requests
        ]


class TenantById(HTTPThrottle):
    async def get_connection_id(self, connection: Any, backend: Any, context: Any = None) -> Any:
        return connection.headers["x-tenant"]


class TenantByIdentify(HTTPThrottle):
    async def identify(self, connection: Any, backend: Any) -> Any:
        return connection.headers["x-tenant"]


@pytest.mark.parametrize("cls", [TenantById, TenantByIdentify])
async def test_an_overridden_identity_hook_picks_the_client(cls: type[HTTPThrottle]) -> None:
    backend = InMemoryBackend(namespace="hooks")
    throttle = cls("hooks", rate="1/min", backend=backend, registry=ThrottleRegistry())
    statuses = await _statuses(throttle, ("t1", "/items/1"), ("t2", "/items/1"), ("t1", "/items/2"))
    assert statuses == [200, 200, 429]
    assert sorted(await backend.keys()) == [
        "hooks:hooks:{t1}:GET:/items/%7Bitem_id%7D:fw",
        "hooks:hooks:{t2}:GET:/items/%7Bitem_id%7D:fw",
    ]
    assert (await throttle.stat(_request("t2"), path="/items/{item_id}")).hits_remaining == 0
    assert await throttle.reset(_request("t2"), path="/items/{item_id}")
    assert (await throttle.stat(_request("t2"), path="/items/{item_id}")).hits_remaining == 1


def _request(tenant: str) -> Request:
    """A request outside any app, from tenant `tenant` (what `stat` and `reset` are given)."""
    raw = [(b"x-tenant", tenant.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


class PerPath(HTTPThrottle):
    def get_scoped_key(self, connection: Any, context: Optional[dict[str, Any]] = None) -> str:
        return "path:" + connection.scope["path"]  # 1.2's concrete path, not the template


class Namespaced(HTTPThrottle):
    calls: ClassVar[list[Any]] = []

    def get_namespaced_key(
        self, connection: Any, identifier: Any, context: Optional[dict[str, Any]] = None
    ) -> str:
        self.calls.append(identifier)
        return f"own:{connection.headers['x-tenant']}"


async def test_an_overridden_scoped_key_replaces_the_route_part() -> None:
    backend = InMemoryBackend(namespace="scoped")
    throttle = PerPath("scoped", rate="1/min", backend=backend, registry=ThrottleRegistry())
    statuses = await _statuses(throttle, ("t", "/items/1"), ("t", "/items/2"), ("t", "/items/1"))
    assert statuses == [200, 200, 429]
    assert sorted(await backend.keys()) == [
        "scoped:scoped:{127.0.0.1}:path%3A/items/1:fw",
        "scoped:scoped:{127.0.0.1}:path%3A/items/2:fw",
    ]


async def test_an_overridden_namespaced_key_is_the_key() -> None:
    backend = InMemoryBackend(namespace="named")
    throttle = Namespaced("named", rate="1/min", backend=backend, registry=ThrottleRegistry())
    statuses = await _statuses(throttle, ("a", "/items/1"), ("b", "/items/2"), ("a", "/items/3"))
    assert statuses == [200, 200, 429]
    assert sorted(await backend.keys()) == ["named:own:a:fw", "named:own:b:fw"]
    assert Namespaced.calls == ["127.0.0.1"] * 3  # (the identity the hook is given)


async def test_the_hooks_of_a_plain_throttle_give_its_own_key() -> None:
    backend = InMemoryBackend(namespace="plain")
    throttle = HTTPThrottle("plain", rate="1/min", backend=backend, registry=ThrottleRegistry())
    await _statuses(throttle, ("t", "/items/1"))
    (key,) = await backend.keys()
    request = _request("t")
    request.scope["client"] = ("127.0.0.1", 5)
    ident = await throttle.get_connection_id(request, backend)
    assert ident == "127.0.0.1"
    scoped = throttle.get_scoped_key(request)
    assert scoped == "GET:/**"  # (a request outside any app: no route, every path)
    assert throttle.get_namespaced_key(request, ident) == "plain:{127.0.0.1}:GET:/**"
    assert key == "plain:plain:{127.0.0.1}:GET:/items/%7Bitem_id%7D:fw"


def _by_key(connection: Any) -> str:
    return str(connection.headers["x-tenant"])


async def test_a_hook_set_on_one_throttle_is_asked() -> None:
    # A throttle with an identifier calls it directly on its hot path; a `get_connection_id`
    # or `identify` a test sets on that one throttle (`patch.object`) is still asked.
    from unittest.mock import patch

    backend = InMemoryBackend(namespace="patched")
    throttle = HTTPThrottle(
        "patched", rate="1/min", backend=backend, identifier=_by_key, registry=ThrottleRegistry()
    )

    async def everyone(connection: Any, backend: Any, context: Any = None) -> str:
        return "everyone"

    async def by_identify(connection: Any, backend: Any) -> str:
        return "identified"

    with patch.object(throttle, "get_connection_id", everyone):
        assert await _statuses(throttle, ("a", "/items/1"), ("b", "/items/2")) == [200, 429]
    assert await _statuses(throttle, ("a", "/items/1"), ("b", "/items/2")) == [200, 200]
    with patch.object(throttle, "identify", by_identify):
        assert await _statuses(throttle, ("c", "/items/1"), ("d", "/items/2")) == [200, 429]
    keys = sorted(await backend.keys())
    assert [k for k in keys if "everyone" in k or "identified" in k] == [
        "patched:patched:{everyone}:GET:/items/%7Bitem_id%7D:fw",
        "patched:patched:{identified}:GET:/items/%7Bitem_id%7D:fw",
    ]


async def test_a_throttle_composing_its_own_keys_is_asked_by_connection_only() -> None:
    # Its hooks read the connection: a bucket named by path= (or by an identifier) is not
    # the one its hits count in, so stat and reset say so instead of reading another.
    from traffik.exceptions import ConfigurationError

    throttle = Namespaced("own-by", rate="1/min", backend=InMemoryBackend())
    assert await _statuses(throttle, ("a", "/items/1")) == [200]
    assert (await throttle.stat(_request("a"))).hits_remaining == 0  # by the connection
    for call in (throttle.stat, throttle.reset):
        with pytest.raises(ConfigurationError, match=r"get_namespaced_key.*path="):
            await call(_request("a"), path="/items/{item_id}")
        with pytest.raises(ConfigurationError, match="composes its keys"):
            await call("a", path="/items/{item_id}")
    assert await throttle.reset(_request("a"))
    assert (await throttle.stat(_request("a"))).hits_remaining == 1


@pytest.mark.parametrize("hook", ["get_scoped_key", "get_namespaced_key"])
def test_a_coroutine_key_hook_is_refused_when_the_class_is_made(hook: str) -> None:
    # An `async def` key hook gave a coroutine, whose text made every request a new bucket.
    from traffik.exceptions import ConfigurationError

    async def coroutine_hook(self: Any, connection: Any, *args: Any) -> str:
        return "key"  # pragma: no cover (never called)

    with pytest.raises(ConfigurationError, match=rf"{hook} .*plain method"):
        type("AsyncHook", (HTTPThrottle,), {hook: coroutine_hook})
