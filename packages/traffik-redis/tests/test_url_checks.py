"""Settings a Redis URL or keyword carries that can never work, refused when the backend is built.

A value redis-py would refuse only on first use (a pool of -5 connections, RESP 9, a negative
timeout) used to pass for an outage: the app started "unable to reach" the server and answered
429 for ever. A misspelt Traffik setting was offered a redis-py name, and a Sentinel setting
on a plain URL was ignored."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import SSLConnection

from traffik.backends import from_url
from traffik.backends.redis import RedisBackend
from traffik.exceptions import ConfigurationError


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("max_connections=-5", ("max_connections=-5", "whole number >= 1")),
        ("max_connections=0", ("max_connections=0", "whole number >= 1")),
        ("protocol=9", ("protocol=9", "2 or 3")),
        ("socket_timeout=-1", ("socket_timeout=-1", "> 0")),
        ("socket_connect_timeout=0", ("socket_connect_timeout=0", "> 0")),
        ("health_check_interval=-2", ("health_check_interval=-2", ">= 0")),
        ("socket_read_size=0", ("socket_read_size=0", "whole number >= 1")),
    ],
)
def test_a_client_option_value_redis_py_refuses_fails_from_url(
    query: str, names: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        from_url(f"redis://127.0.0.1:6379/0?{query}")
    message = str(caught.value)
    assert all(name in message for name in names), message
    assert "unreachable" not in message, message


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"url_kwargs": {"max_connections": -1}}, ("max_connections=-1", ">= 1")),
        ({"url_kwargs": {"protocol": "4"}}, ("protocol='4'", "2 or 3")),
        ({"url_kwargs": {"socket_timeout": -0.5}}, ("socket_timeout=-0.5", "> 0")),
        (
            {"connection": "redis+cluster://h1:7000", "cluster_kwargs": {"max_connections": 0}},
            ("max_connections=0", ">= 1"),
        ),
        (
            {"connection": "redis+sentinel://s1:26379/m", "sentinel_kwargs": {"protocol": 1}},
            ("protocol=1", "2 or 3"),
        ),
        ({"connection": "redis+sentinel://s1:26379/m?socket_timeout=-3"}, ("socket_timeout=-3",)),
    ],
)
def test_a_client_option_value_given_as_a_keyword_fails_the_construction(
    kwargs: dict[str, Any], names: tuple[str, ...]
) -> None:
    kwargs.setdefault("connection", "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigurationError) as caught:
        RedisBackend(**kwargs)
    message = str(caught.value)
    assert all(name in message for name in names), message


def test_valid_client_option_values_still_build() -> None:
    backend = from_url(
        "redis://127.0.0.1:6379/0?max_connections=5&protocol=3&socket_timeout=0.5"
        "&health_check_interval=0",
        url_kwargs={"socket_connect_timeout": None},
    )
    assert backend.server.startswith("redis://127.0.0.1:6379/0")


@pytest.mark.parametrize(
    ("url", "suggested"),
    [
        ("redis://h:6379/0?command_timout=0.25", "command_timeout"),
        ("redis://h:6379/0?namespce=app", "namespace"),
        ("redis+cluster://h1:7000?conect_timeout=1", "connect_timeout"),
        ("redis+sentinel://s1:26379/m?circut=false", "circuit"),
    ],
)
def test_a_misspelt_traffik_setting_is_offered_the_traffik_setting(
    url: str, suggested: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        from_url(url)
    message = str(caught.value)
    assert f"did you mean {suggested!r}?" in message, message
    for setting in ("command_timeout", "connect_timeout", "namespace", "on_error", "circuit"):
        assert setting in message, message  # Traffik's settings are listed


def test_a_misspelt_redis_py_option_is_still_offered_redis_pys() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'socket_timeout'"):
        from_url("redis://h:6379/0?socket_timout=1")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connection": "redis://h:6379/0?sentinel_service_name=x"},
        {"connection": "redis://h:6379/0", "sentinel_service_name": "x"},
        {"connection": "redis+cluster://h1:7000", "sentinel_service_name": "x"},
        {"connection": "unix:///tmp/r.sock", "sentinel_kwargs": {"socket_timeout": 1}},
        {"connection": [("h1", 7000)], "sentinel_service_name": "x"},
    ],
)
def test_a_sentinel_setting_without_sentinel_is_refused(kwargs: dict[str, Any]) -> None:
    connection = kwargs.pop("connection")
    build = from_url if isinstance(connection, str) else RedisBackend
    with pytest.raises(ConfigurationError) as caught:
        build(connection, **kwargs)
    message = str(caught.value)
    name = "sentinel_service_name" if "sentinel_kwargs" not in kwargs else "sentinel_kwargs"
    assert name in message and "redis+sentinel://" in message, message


def test_a_sentinel_url_takes_its_service_from_the_query() -> None:
    backend = from_url("redis+sentinel://s1:26379?sentinel_service_name=mymaster")
    assert "mymaster" in backend.server


# -- TLS files, and a database given twice ----------------------------------------------------

CA_PATH = "ssl_ca_path" in inspect.signature(SSLConnection.__init__).parameters
"""Whether this redis-py takes `ssl_ca_path` (redis-py 7 does not: an unknown option there)."""
TLS_FILES = ("ssl_certfile", "ssl_keyfile", "ssl_ca_certs") + (("ssl_ca_path",) if CA_PATH else ())


@pytest.mark.parametrize(
    ("name", "where"),
    [
        (name, where)
        for name in TLS_FILES
        for where in (
            "url",
            "url_kwargs",
            "cluster_url",
            "cluster_kwargs",
            "sentinel_url",
            "sentinel_kwargs",
        )
        if not (name == "ssl_ca_path" and where.startswith("cluster"))  # (not RedisCluster's)
    ],
)
def test_a_tls_file_that_does_not_exist_fails_when_the_backend_is_built_naming_it(
    tmp_path: Path, name: str, where: str
) -> None:
    """Not an outage: the server was never asked (it used to read as "unreachable")."""
    missing = tmp_path / "nowhere" / "client.pem"
    builds = {
        "url": lambda: from_url(f"rediss://127.0.0.1:6380/0?{name}={missing}"),
        "url_kwargs": lambda: RedisBackend(
            "rediss://127.0.0.1:6380/0", url_kwargs={name: str(missing)}
        ),
        "cluster_url": lambda: from_url(f"redis+cluster://h1:7000?ssl=true&{name}={missing}"),
        "cluster_kwargs": lambda: RedisBackend(
            [("h1", 7000)], cluster_kwargs={"ssl": True, name: missing}
        ),
        "sentinel_url": lambda: from_url(f"redis+sentinel://s1:26379/m?{name}={missing}"),
        "sentinel_kwargs": lambda: RedisBackend(
            "redis+sentinel://s1:26379/m", sentinel_kwargs={name: str(missing)}
        ),
    }
    with pytest.raises(ConfigurationError) as caught:
        builds[where]()
    message = str(caught.value)
    assert name in message and str(missing) in message, message
    assert "unreachable" not in message, message


def test_tls_files_that_exist_build(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    query = (
        f"ssl_certfile={tmp_path / 'cert.pem'}&ssl_keyfile={tmp_path / 'key.pem'}"
        f"&ssl_ca_certs={tmp_path / 'ca.pem'}" + (f"&ssl_ca_path={tmp_path}" if CA_PATH else "")
    )
    assert from_url(f"rediss://127.0.0.1:6380/0?{query}").server.startswith("rediss://")


@pytest.mark.parametrize(
    ("name", "kind", "wrong"),
    [("ssl_certfile", "file", "dir")] + ([("ssl_ca_path", "directory", "file")] if CA_PATH else []),
)
def test_a_tls_path_of_the_wrong_kind_fails_naming_it(
    tmp_path: Path, name: str, kind: str, wrong: str
) -> None:
    (tmp_path / "a.pem").write_text("")
    path = tmp_path if wrong == "dir" else tmp_path / "a.pem"
    with pytest.raises(ConfigurationError) as caught:
        from_url(f"rediss://127.0.0.1:6380/0?{name}={path}")
    message = str(caught.value)
    assert name in message and str(path) in message and f"not a {kind}" in message, message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0?db=3", ("/0", "db=3")),
        ("redis://127.0.0.1:6379/3?db=3", ("/3", "db=3")),
        ("rediss://127.0.0.1:6380/1?db=2", ("/1", "db=2")),
        ("redis+sentinel://s1:26379/mymaster/1?db=2", ("/1", "db=2")),
    ],
)
def test_a_database_in_both_the_path_and_the_query_fails_naming_both(
    url: str, shown: tuple[str, str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        from_url(url)
    message = str(caught.value)
    assert all(part in message for part in shown) and "set it once" in message, message


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379?db=3", "redis://127.0.0.1:6379/?db=3"],
)
def test_a_database_given_once_builds(url: str) -> None:
    assert from_url(url).server == url
