"""`traffik.config`: lock defaults kept in the environment, read by backends when built (spec: core.md §11)."""

from __future__ import annotations

import os

import pytest

import traffik
from traffik import config
from traffik.backends.inmemory import InMemoryBackend


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        config.DEFAULT_LOCK_TTL_ENV_VAR,
        config.DEFAULT_BLOCKING_ENV_VAR,
        config.DEFAULT_BLOCKING_TIMEOUT_ENV_VAR,
    ):
        monkeypatch.delenv(name, raising=False)


def test_names_of_the_environment_variables() -> None:
    assert config.DEFAULT_LOCK_TTL_ENV_VAR == "TRAFFIK_DEFAULT_LOCK_TTL"
    assert config.DEFAULT_BLOCKING_ENV_VAR == "TRAFFIK_DEFAULT_BLOCKING"
    assert config.DEFAULT_BLOCKING_TIMEOUT_ENV_VAR == "TRAFFIK_DEFAULT_BLOCKING_TIMEOUT"


def test_defaults_when_unset() -> None:
    assert config.get_lock_ttl() is None
    assert config.get_lock_blocking() is True
    assert config.get_lock_blocking_timeout() is None


def test_setters_write_the_environment() -> None:
    config.set_lock_ttl(2.5)
    config.set_lock_blocking(False)
    config.set_lock_blocking_timeout(0)
    assert os.environ["TRAFFIK_DEFAULT_LOCK_TTL"] == "2.5"
    assert os.environ["TRAFFIK_DEFAULT_BLOCKING"] == "0"
    assert os.environ["TRAFFIK_DEFAULT_BLOCKING_TIMEOUT"] == "0"
    assert (
        config.get_lock_ttl(),
        config.get_lock_blocking(),
        config.get_lock_blocking_timeout(),
    ) == (
        2.5,
        False,
        0.0,
    )
    config.set_lock_blocking(True)
    assert os.environ["TRAFFIK_DEFAULT_BLOCKING"] == "1"
    config.set_lock_ttl(None)
    config.set_lock_blocking_timeout(None)
    assert "TRAFFIK_DEFAULT_LOCK_TTL" not in os.environ
    assert config.get_lock_blocking_timeout() is None


@pytest.mark.parametrize(
    ("value", "blocking"),
    [
        ("1", True),
        ("TRUE", True),
        (" yes ", True),
        ("On", True),
        ("", False),
        ("no", False),
        ("off", False),
        ("garbage", False),
    ],
)
def test_blocking_is_read_leniently(
    monkeypatch: pytest.MonkeyPatch, value: str, blocking: bool
) -> None:
    monkeypatch.setenv("TRAFFIK_DEFAULT_BLOCKING", value)
    assert config.get_lock_blocking() is blocking


def test_bad_seconds_are_value_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="must be a finite number of seconds >= 0"):
        config.set_lock_ttl(-1)
    with pytest.raises(ValueError, match="not a number of seconds"):
        config.set_lock_blocking_timeout("soon")  # type: ignore[arg-type]
    monkeypatch.setenv("TRAFFIK_DEFAULT_LOCK_TTL", "abc")
    with pytest.raises(ValueError, match="TRAFFIK_DEFAULT_LOCK_TTL='abc'"):
        config.get_lock_ttl()
    assert "TRAFFIK_DEFAULT_BLOCKING_TIMEOUT" not in os.environ


def test_backends_read_the_environment_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFIK_DEFAULT_LOCK_TTL", "3")
    monkeypatch.setenv("TRAFFIK_DEFAULT_BLOCKING", "off")
    monkeypatch.setenv("TRAFFIK_DEFAULT_BLOCKING_TIMEOUT", "0.5")
    built = InMemoryBackend()
    given = InMemoryBackend(lock_ttl=1.0, lock_blocking=True, lock_blocking_timeout=2.0)
    config.set_lock_ttl(9)  # later changes leave existing backends alone
    assert (built.lock_ttl, built.lock_blocking, built.lock_blocking_timeout) == (3.0, False, 0.5)
    assert (given.lock_ttl, given.lock_blocking, given.lock_blocking_timeout) == (1.0, True, 2.0)
    assert InMemoryBackend().lock_ttl == 9.0


def test_constants_and_top_level_names() -> None:
    assert config.ANONYMOUS_IDENTIFIER == "__anonymous__"
    assert config.THROTTLED_STATE_KEY == "__traffik_throttled_state__"
    assert config.BACKEND_APP_CONTEXT_KEY == "__traffik_throttle_backend__"
    assert config.CONNECTION_IDS_CONTEXT_KEY == "__traffik_connection_ids__"
    assert (config.APP_CONTEXT_ATTR, config.THROTTLE_DEFAULT_SCOPE) == ("state", "default")
    for name in ("get_lock_ttl", "set_lock_blocking_timeout", "ANONYMOUS_IDENTIFIER"):
        assert getattr(traffik, name) is getattr(config, name)
