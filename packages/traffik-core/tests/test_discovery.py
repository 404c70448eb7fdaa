"""Finding backends by name and URL through the `traffik.backends` entry points."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from traffik import backends
from traffik.backends import _plugins
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import (
    BackendNotFoundError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidBackendError,
)


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch) -> dict:
    plugins = dict(_plugins.discover())
    monkeypatch.setattr(backends, "discover", lambda: plugins)
    return plugins


def test_builtin_names() -> None:
    assert backends.get_backend_class("memory") is InMemoryBackend
    assert backends.get_backend_class("InMemory") is InMemoryBackend
    assert {"memory", "inmemory"} <= set(backends.available())


def test_from_url() -> None:
    backend = backends.from_url("memory://")
    assert isinstance(backend, InMemoryBackend)
    named = backends.from_url("memory://app", max_keys=10)
    assert named.namespace == "app" and named.max_keys == 10
    assert isinstance(backends.create_backend("memory", namespace="x"), InMemoryBackend)


def test_unknown_names_say_what_to_install(fake_plugins: dict) -> None:
    for name in ("memcached", "redis", "redis+cluster"):
        fake_plugins.pop(name, None)
    with pytest.raises(BackendNotFoundError, match="pip install traffik-memcached"):
        backends.get_backend_class("memcached")
    with pytest.raises(BackendNotFoundError, match="pip install traffik-redis"):
        backends.from_url("redis+cluster://a:7000,b:7001")
    with pytest.raises(BackendNotFoundError, match=r"Installed: .*memory"):
        backends.from_url("cassandra://db")
    with pytest.raises(ConfigurationError, match="no scheme"):
        backends.from_url("localhost:6379")


def test_missing_client_library(fake_plugins: dict) -> None:
    fake_plugins["fake"] = _plugins.Plugin(
        "fake", "traffik_missing_client_lib:Backend", "traffik-fake"
    )
    with pytest.raises(BackendUnavailableError) as info:
        backends.get_backend_class("fake")
    assert "traffik-fake" in str(info.value) and "traffik_missing_client_lib" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_entry_point_that_is_not_a_backend(fake_plugins: dict) -> None:
    fake_plugins["odd"] = _plugins.Plugin("odd", "traffik.rates:Rate", "traffik-odd")
    with pytest.raises(InvalidBackendError, match="not a ThrottleBackend subclass"):
        backends.get_backend_class("odd")


def test_distribution_name_falls_back_to_known_map() -> None:
    entry_point = SimpleNamespace(name="redis", value="x:y", dist=None)
    assert _plugins._distribution_of(entry_point) == "traffik-redis"


def test_refresh_rereads_entry_points() -> None:
    first = _plugins.discover()
    backends.refresh()
    assert _plugins.discover() is not first


def test_entry_point_naming_a_missing_attribute(fake_plugins: dict) -> None:
    fake_plugins["gone"] = _plugins.Plugin("gone", "traffik.rates:NoSuchBackend", "traffik-gone")
    with pytest.raises(InvalidBackendError, match="traffik-gone"):
        backends.get_backend_class("gone")
