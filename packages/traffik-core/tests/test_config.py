"""`traffik.config`: lock defaults kept in the environment, read by backends when built (spec: core.md §11)."""

from __future__ import annotations

import os

import pytest

import traffik
from traffik import config
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import ConfigurationError


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
    with pytest.raises(ValueError, match="must be a finite number of seconds > 0"):
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


@pytest.mark.parametrize(
    ("setter", "value", "fragment"),
    [
        # `str(True)` is "True", which the getter (and every backend built later) refused.
        (config.set_lock_ttl, True, "set_lock_ttl: TRAFFIK_DEFAULT_LOCK_TTL=True is not a number"),
        (config.set_lock_blocking_timeout, False, "TRAFFIK_DEFAULT_BLOCKING_TIMEOUT=False is not"),
        # A lock that lives 0 s expires as it is taken: every holder gets in at once.
        (
            config.set_lock_ttl,
            0,
            "TRAFFIK_DEFAULT_LOCK_TTL=0 must be a finite number of seconds > 0",
        ),
        (config.set_lock_ttl, float("inf"), "must be a finite number"),
        # A string meaning False would have been True.
        (config.set_lock_blocking, "false", "set_lock_blocking('false'): expected True or False"),
        (config.set_lock_blocking, None, "expected True or False"),
    ],
)
def test_setters_refuse_what_their_getters_would_misread(
    setter: object, value: object, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        setter(value)  # type: ignore[operator]
    assert fragment in str(info.value)
    assert not {
        config.DEFAULT_LOCK_TTL_ENV_VAR,
        config.DEFAULT_BLOCKING_ENV_VAR,
        config.DEFAULT_BLOCKING_TIMEOUT_ENV_VAR,
    } & set(os.environ)


def test_a_zero_lock_ttl_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFIK_DEFAULT_LOCK_TTL", "0")
    with pytest.raises(ValueError, match=r"TRAFFIK_DEFAULT_LOCK_TTL='0' must be .* > 0"):
        InMemoryBackend()
    monkeypatch.setenv("TRAFFIK_DEFAULT_BLOCKING_TIMEOUT", "0")  # waiting 0 s is fine
    monkeypatch.delenv("TRAFFIK_DEFAULT_LOCK_TTL")
    assert InMemoryBackend().lock_blocking_timeout == 0.0


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"lock_ttl": -1}, "InMemoryBackend: lock_ttl=-1 must be a finite number of seconds > 0"),
        ({"lock_ttl": 0}, "lock_ttl=0 must be a finite number of seconds > 0"),
        ({"lock_ttl": "soon"}, "lock_ttl='soon' is not a number of seconds"),
        ({"lock_blocking_timeout": -2}, "lock_blocking_timeout=-2 must be a finite number"),
        ({"lock_blocking_timeout": "x"}, "lock_blocking_timeout='x' is not a number"),
        ({"lock_blocking": "no"}, "lock_blocking='no' must be True, False or None"),
    ],
)
def test_backends_check_their_lock_settings_when_built(options: dict, fragment: str) -> None:
    """A negative or zero TTL let every task into the lock at once; a wrong type failed
    with a bare `TypeError` at the first lock."""
    with pytest.raises(ConfigurationError) as info:
        InMemoryBackend(**options)
    assert fragment in str(info.value)
