"""Every backend reads its settings from its URL's query (`url_options`), so an app configured
by `TRAFFIK_BACKEND_URL` alone sets the namespace and the throttles' defaults on any store,
and each store's own settings; the decisions then run as with keywords, on real servers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle
from traffik.backends import from_url
from traffik.exceptions import ConfigurationError

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite", "redis", "memcached"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://?max_keys=100"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/t.db?timeout=2&max_keys=100"
    if request.param == "redis":
        return request.getfixturevalue("redis_url") + "?command_timeout=0.5&socket_keepalive=true"
    return request.getfixturevalue("memcached_url") + "?command_timeout=0.5&pool_size=3"


async def test_every_backend_reads_the_common_settings_from_its_url(store_url: str) -> None:
    url = f"{store_url}&namespace=from-url-{id(store_url)}&on_error=allow&cache_refusals=no"
    backend = from_url(url)
    assert backend.namespace == f"from-url-{id(store_url)}"
    assert backend.defaults.on_error == "allow"
    assert backend.refusals is None
    throttle = HTTPThrottle("url-settings", rate="2/min", backend=backend)

    async def page(request: Request) -> PlainTextResponse:
        await throttle.hit(request)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", page)])
    async with backend:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert [(await client.get("/")).status_code for _ in range(3)] == [200, 200, 429]
        # the counters live under the URL's namespace: clearing it gives the budget back
        await backend.clear()
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/")).status_code == 200


def test_each_backend_names_a_misspelt_setting_in_its_url(store_url: str) -> None:
    # Redis leaves the items that are not Traffik's to redis-py, which names them too.
    message = "unknown option 'namespce'" if "redis" in store_url else "did you mean 'namespace'"
    with pytest.raises(ConfigurationError, match=message):
        from_url(store_url + "&namespce=x")
    with pytest.raises(ConfigurationError, match=r"set both in the URL.*to different values"):
        from_url(store_url + "&namespace=a", namespace="b")


def test_a_setting_in_the_url_and_the_same_as_a_keyword_agrees(store_url: str) -> None:
    # The deployment guide's `from_url(os.environ[...], namespace="api")` with a URL that
    # carries `?namespace=api` (the README's one variable for everything).
    assert from_url(store_url + "&namespace=api", namespace="api").namespace == "api"


def test_redis_leaves_redis_py_settings_in_its_url() -> None:
    backend = from_url("redis://127.0.0.1:6379/0?namespace=app&socket_keepalive=true")
    assert backend.namespace == "app"
    assert repr(backend) == (
        "RedisBackend('redis://127.0.0.1:6379/0?socket_keepalive=true', namespace='app')"
    )
