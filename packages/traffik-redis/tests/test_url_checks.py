"""Settings a Redis URL or keyword carries that can never work, refused when the backend is built.

A value redis-py would refuse only on first use (a pool of -5 connections, RESP 9, a negative
timeout) used to pass for an outage: the app started "unable to reach" the server and answered
429 for ever. A misspelt Traffik setting was offered a redis-py name, and a Sentinel setting
on a plain URL was ignored."""

from __future__ import annotations

from typing import Any

import pytest

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
