"""A backend's settings in its URL's query (`traffik.backends.url_options`): an app configured
by one environment variable sets more than the address, and a mistake there names itself."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle
from traffik.backends import from_url
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.sqlite import SQLiteBackend
from traffik.backends.url_options import flag, number, split_url_options, whole
from traffik.exceptions import ConfigurationError


def test_sqlite_settings_come_from_the_query(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db?timeout=2.5&max_keys=100&sweep_interval=3&namespace=app"
    backend = from_url(url + "&on_error=allow&shadow=yes&persistent=off&cache_refusals=0")
    assert isinstance(backend, SQLiteBackend)
    assert backend.path == f"{tmp_path}/t.db"
    assert (backend.timeout, backend.max_keys, backend.namespace) == (2.5, 100, "app")
    assert backend.defaults.on_error == "allow"
    assert backend.defaults.shadow is True
    assert backend.persistent is False
    assert backend.refusals is None


def test_memory_settings_come_from_the_query() -> None:
    backend = from_url("memory://app?max_keys=10&at_capacity=refuse&sweep_interval=0.5")
    assert isinstance(backend, InMemoryBackend)
    assert backend.namespace == "app"
    assert from_url("memory://?namespace=other").namespace == "other"
    assert from_url("memory://app", namespace="kw").namespace == "kw"  # (as before)


@pytest.mark.anyio
async def test_the_query_settings_hold_when_deciding(tmp_path: Path) -> None:
    # max_keys=1 from the URL: a second client's key is refused by the store, and the
    # on_error=allow from the URL lets it through.
    url = f"sqlite:///{tmp_path}/cap.db?max_keys=1&on_error=allow"
    throttle = HTTPThrottle("capped", rate="1/min", backend=url)

    async def page(request: Request) -> PlainTextResponse:
        await throttle.hit(request)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", page)])
    first = httpx.ASGITransport(app=app, client=("10.0.0.1", 1))
    second = httpx.ASGITransport(app=app, client=("10.0.0.2", 1))
    async with httpx.AsyncClient(transport=first, base_url="http://t") as one:
        assert [(await one.get("/")).status_code for _ in range(2)] == [200, 429]
    async with httpx.AsyncClient(transport=second, base_url="http://t") as two:
        # over max_keys: the store refuses the key, on_error="allow" admits every request
        assert [(await two.get("/")).status_code for _ in range(3)] == [200, 200, 200]
    await throttle.get_backend().close()


@pytest.mark.parametrize(
    ("url", "keywords", "message"),
    [
        ("sqlite:///x.db?timeot=2", {}, "sets 'timeot'.*did you mean 'timeout'"),
        ("sqlite:///x.db?colour=red", {}, "sets 'colour'.*it takes cache_refusals, fail_fast"),
        ("sqlite:///x.db?timeout=abc", {}, "timeout='abc'; it must be a finite number"),
        ("sqlite:///x.db?timeout=inf", {}, "timeout='inf'; it must be a finite number"),
        ("sqlite:///x.db?max_keys=1.5", {}, "max_keys='1.5'; it must be a whole number"),
        ("sqlite:///x.db?max_keys=1&max_keys=2", {}, "sets 'max_keys' twice"),
        ("sqlite:///x.db?timeout=2", {"timeout": 3}, "'timeout' is set both in the URL"),
        ("sqlite:///x.db?shadow=maybe", {}, "shadow='maybe'; it must be true or false"),
        ("sqlite:///x.db?on_error=ignore", {}, "on_error='ignore'; it must be one of 'throttle'"),
        ("sqlite:///x.db?timeout=0", {}, "timeout"),  # (converted, then the backend's own check)
        ("memory://a?namespace=b", {}, "names the namespace twice"),
        ("memory://?at_capacity=drop", {}, "at_capacity='drop'; it must be one of 'evict'"),
    ],
)
def test_a_bad_query_names_the_setting_and_what_is_valid(
    url: str, keywords: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        from_url(url, **keywords)


def test_a_query_reaches_the_constructor_only_through_from_url() -> None:
    with pytest.raises(ConfigurationError, match=r"build it with from_url\(url\)"):
        SQLiteBackend("sqlite:///x.db?timeout=2")


def test_other_items_stay_in_the_url_for_a_client_library_that_reads_them() -> None:
    url, options = split_url_options(
        "redis://h:6379/0?socket_timeout=1&namespace=app&x=%20y",
        "RedisBackend",
        {"namespace": str},
        {},
        keep_others=True,
    )
    assert url == "redis://h:6379/0?socket_timeout=1&x=%20y"
    assert options == {"namespace": "app"}


def test_converters() -> None:
    assert [flag(v) for v in ("1", "TRUE", "yes", "On", "0", "false", "NO", "off")] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    assert whole("1_000") == 1000
    assert number("0.25") == 0.25
    for convert, bad in ((flag, "2"), (whole, "ten"), (number, "nan")):
        with pytest.raises(ValueError):
            convert(bad)


def test_a_backend_that_lists_no_url_options_keeps_its_query() -> None:
    from traffik.backends.base import ThrottleBackend

    class Custom(ThrottleBackend):
        pass

    backend = Custom.from_url("custom://db?sslmode=require&namespace=x")
    assert backend.connection == "custom://db?sslmode=require&namespace=x"


def test_a_backend_that_opts_in_takes_the_common_settings_too() -> None:
    # Listing its own names in `url_options` opts in to the URL's settings: the ones every
    # backend takes (namespace, on_error, ...) come with them.
    from traffik.backends.base import ThrottleBackend

    class Custom(ThrottleBackend):
        url_options = MappingProxyType({"pool": whole})

        def __init__(self, connection: Any = None, *, pool: int = 1, **options: Any) -> None:
            super().__init__(connection, **options)
            self.pool = pool

    backend = Custom.from_url("custom://db?pool=4&namespace=app&on_error=allow")
    assert (backend.connection, backend.pool, backend.namespace) == ("custom://db", 4, "app")
    assert backend.defaults.on_error == "allow"


# -- secrets never shown ---------------------------------------------------------------------

SECRET = "s3cret-pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret-pw@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("redis://:s3cret-pw@cache/0", "redis://:***@cache/0"),
        ("rediss://u:s3cret-pw/with:odd@chars@h:1/0", "rediss://u:***@h:1/0"),
        ("unix://u:s3cret-pw@/tmp/redis.sock?db=2", "unix://u:***@/tmp/redis.sock?db=2"),
        (
            "redis://h/0?password=s3cret-pw&client_name=api",
            "redis://h/0?password=***&client_name=api",
        ),
        (
            "redis+sentinel://s1/mymaster?sentinel_password=s3cret-pw",
            "redis+sentinel://s1/mymaster?sentinel_password=***",
        ),
        ("memcached://h:11211?auth_token=s3cret-pw", "memcached://h:11211?auth_token=***"),
        ("user:s3cret-pw@cache:6379", "user:***@cache:6379"),  # (no scheme)
        ("redis://user@cache/0", "redis://user@cache/0"),  # (a user name alone is kept)
        ("sqlite:///var/app@2/traffik.db", "sqlite:///var/app@2/traffik.db"),
    ],
)
def test_redact_url_hides_passwords_and_secret_query_values(url: str, shown: str) -> None:
    from traffik.backends.url_options import redact_url

    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "user:s3cret-pw@cache:6379",  # no scheme
        "sqlite://u:s3cret-pw@/app.db?nosuch=1",  # an option the URL cannot carry
        "memory://u:s3cret-pw@app?shadow=maybe",  # a value that does not convert
        "memory://u:s3cret-pw@app?shadow=1&shadow=0",  # set twice
        "memory://app?password=s3cret-pw",
    ],
)
def test_a_bad_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        from_url(url)
    assert SECRET not in str(raised.value), raised.value
    assert "***" in str(raised.value), raised.value
