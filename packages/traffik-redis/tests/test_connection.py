"""What `connection=` accepts, and the errors for what it does not: no server needed."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis, Sentinel

import traffik.backends.redis
import traffik.backends.redis.aioredis
from traffik.backends import from_url
from traffik.backends.redis import RedisBackend
from traffik.exceptions import ConfigurationError


def test_public_api() -> None:
    assert traffik.backends.redis.__all__ == ["RedisBackend"]
    assert traffik.backends.redis.aioredis.RedisBackend is RedisBackend


@pytest.mark.parametrize(
    ("url", "server", "cluster"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0", False),
        ("rediss://:s3cret@cache:6380/1", "rediss://:***@cache:6380/1", False),
        ("unix:///tmp/redis.sock?db=2", "unix:///tmp/redis.sock?db=2", False),
        ("redis+cluster://h1:7000,h2:7001", "redis+cluster://h1:7000,h2:7001", True),
        ("redis+cluster://user:pw@[::1]:7000,h2", "redis+cluster://user:***@[::1]:7000,h2", True),
        (
            "redis+sentinel://s1:26379,s2/mymaster/3",
            "redis+sentinel://s1:26379,s2/mymaster/3",
            False,
        ),
    ],
)
def test_urls(url: str, server: str, cluster: bool) -> None:
    for backend in (from_url(url, namespace="app"), RedisBackend(connection=url, namespace="app")):
        assert isinstance(backend, RedisBackend)
        assert backend.server.startswith(server)
        assert backend.cluster is cluster
        assert "s3cret" not in repr(backend)


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:6379",
        "redis://h:6379/",
        "redis://h:6379/15",
        "redis://h/?client_name=api&max_connections=20&health_check_interval=5",
        "redis://u:p@h/0?protocol=3",
        "rediss://h/0?ssl_cert_reqs=none&ssl_check_hostname=false",
        "unix:///tmp/redis.sock?db=2&client_name=api",
        "redis+cluster://h1:7000?read_from_replicas=yes&client_name=api",
        "redis+sentinel://s1/mymaster/2?socket_keepalive=true",
    ],
)
def test_urls_with_redis_py_options_are_accepted(url: str) -> None:
    RedisBackend(url, namespace="app", url_kwargs={"client_name": "api", "encoding": "utf-8"})


def test_a_bad_url_option_names_what_is_valid() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisBackend("redis://127.0.0.1:6401?foo=bar", namespace="app")
    message = str(caught.value)
    assert "redis://127.0.0.1:6401?foo=bar" in message
    assert "socket_timeout" in message and "client_name" in message


def test_defaults() -> None:
    backend = RedisBackend()
    assert backend.server == "redis://localhost:6379/0"
    assert backend.namespace == "redis"
    assert (backend.connect_timeout, backend.command_timeout) == (2.0, 1.0)
    assert backend.connection is None and not backend.initialized


@pytest.mark.anyio
async def test_given_clients() -> None:
    # Python 3.9's redis-py clients need an event loop to be built in.
    client = Redis(host="cache", port=6390, db=4)
    assert RedisBackend(client).server == "cache:6390/4"
    sentinel = Sentinel([("s1", 26379)])
    assert "mymaster" in RedisBackend(sentinel, sentinel_service_name="mymaster").server
    await client.aclose()


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"connection": "http://localhost"}, ConfigurationError, "http"),
        ({"connection": "localhost:6379"}, ConfigurationError, "localhost:6379"),
        ({"connection": "redis+cluster://"}, ConfigurationError, "no host"),
        ({"connection": "redis+cluster://h1:7000/2"}, ConfigurationError, "database 0"),
        ({"connection": "redis+cluster://h1:port"}, ConfigurationError, "h1:port"),
        ({"connection": "redis+sentinel://s1:26379"}, ConfigurationError, "service"),
        ({"connection": "redis+sentinel://s1/m/x"}, ConfigurationError, "'x'"),
        ({"connection": "redis://h/?socket_timeout=soon"}, ConfigurationError, "socket_timeout"),
        ({"connection": "redis://127.0.0.1:6401/2x"}, ConfigurationError, "database '2x'"),
        ({"connection": "redis://127.0.0.1:6401/abc"}, ConfigurationError, "database 'abc'"),
        ({"connection": "rediss://h:6401/1/2"}, ConfigurationError, "database '1/2'"),
        ({"connection": "redis://127.0.0.1:6401?foo=bar"}, ConfigurationError, "option 'foo'"),
        ({"connection": "redis://h/0?ssl_certfile=c.pem"}, ConfigurationError, "ssl_certfile"),
        ({"connection": "unix:///tmp/r.sock?host=h"}, ConfigurationError, "option 'host'"),
        (
            {"connection": "redis://h/0?single_connection_client=1"},
            ConfigurationError,
            "option 'single_connection_client'",
        ),
        ({"connection": "redis+cluster://h1:7000?foo=1"}, ConfigurationError, "option 'foo'"),
        ({"connection": "redis+sentinel://s1/m?foo=1"}, ConfigurationError, "option 'foo'"),
        (
            {"connection": "redis://h/0", "url_kwargs": {"socket_timout": 1}},
            ConfigurationError,
            "option 'socket_timout'",
        ),
        (
            {"connection": "redis+cluster://h1:7000", "cluster_kwargs": {"foo": 1}},
            ConfigurationError,
            "option 'foo'",
        ),
        ({"connection": "sentinel"}, ConfigurationError, "sentinel_service_name"),
        ({"connection": []}, ConfigurationError, "empty"),
        ({"connection": [("h1", "7000")]}, TypeError, "('h1', '7000')"),
        ({"connection": ["h1:7000"]}, TypeError, "'h1:7000'"),
        ({"connection": 42}, TypeError, "42"),
        ({"lock_type": "redlock"}, ConfigurationError, "dropped"),
        ({"lock_type": "zookeeper"}, ConfigurationError, "zookeeper"),
        ({"command_timeout": 0}, ConfigurationError, "command_timeout=0"),
        ({"connect_timeout": "2"}, ConfigurationError, "connect_timeout='2'"),
        ({"namespace": ""}, ConfigurationError, "namespace=''"),
        ({"on_error": "ignore"}, ConfigurationError, "ignore"),
    ],
)
@pytest.mark.anyio
async def test_bad_arguments_name_the_value(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    if kwargs.get("connection") == "sentinel":
        kwargs = {"connection": Sentinel([("s1", 26379)])}
    with pytest.raises(error) as caught:
        RedisBackend(**kwargs)
    assert names in str(caught.value)


def test_keys_on_several_slots_are_a_refused_command_not_an_unreachable_server() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisClusterException

    from traffik.backends.redis.errors import translate
    from traffik.exceptions import BackendConnectionError, BackendError

    slots = RedisClusterException("EVALSHA - all keys must map to the same key slot")
    error = translate(slots, "redis+cluster://n1:7000", "decide")
    assert type(error) is BackendError  # not counted by the circuit as the server being down
    assert "several hash slots" in str(error) and "{client}" in str(error)
    down = translate(RedisConnectionError("refused"), "redis://h:6379/0", "decide")
    assert isinstance(down, BackendConnectionError)


@pytest.mark.parametrize(
    "url", ["redis://h:6379/0?password=s3cret", "redis+sentinel://s1/mymaster?password=s3cret"]
)
def test_a_password_in_the_query_is_never_shown(url: str) -> None:
    backend = from_url(url, namespace="app")
    assert "s3cret" not in repr(backend) and "s3cret" not in backend.server
    assert "password=***" in repr(backend)


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:6379/zero?password=s3cret",
        "redis+sentinel://s1/mymaster/zero?password=s3cret",
        "rediss://user:s3cret/odd@h:6380/0",  # ('/' unencoded: redis-py reads 's3cret' as the port)
    ],
)
def test_a_bad_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        from_url(url)
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value), raised.value


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url", ["redis://user:s3cret@127.0.0.1:1/0", "redis://127.0.0.1:1/0?password=s3cret"]
)
async def test_an_unreachable_store_is_logged_by_its_url_without_the_password(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What an operator reads while the store is down: the throttle, the store, the error,
    never its password (port 1 refuses the connection at once)."""
    import logging

    from starlette.requests import Request

    from traffik import HTTPThrottle

    backend = from_url(url, namespace="app", connect_timeout=0.5)
    uid = f"down-{'query' if '?' in url else 'user'}"
    throttle = HTTPThrottle(uid, rate="5/min", backend=backend, skip_handler=True)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("a", 1)}
    caplog.set_level(logging.DEBUG)
    try:
        await throttle.hit(Request(scope))
        assert await throttle.stat(Request(scope)) is None
    finally:
        await backend.close()
    text = caplog.text + "".join(str(r.exc_info) for r in caplog.records if r.exc_info)
    assert "s3cret" not in text
    lines = [r.getMessage() for r in caplog.records if uid in r.getMessage()]
    assert len(lines) == 2 and all(repr(backend) in line for line in lines), lines
    assert "***" in repr(backend)
