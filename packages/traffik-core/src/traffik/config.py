"""Process-wide settings: the default lock settings (kept in `os.environ`) and Traffik's constants.

As in traffik 1.2, the lock defaults live in environment variables, so a deployment can set
them without code and `set_lock_*` changes them for the whole process. Getters read the
environment on every call; a backend reads them once, when it is built, for every `lock_*`
argument it was not given: changing them later leaves existing backends alone.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Optional

from traffik.exceptions import ConfigurationError

__all__ = [
    "ANONYMOUS_IDENTIFIER",
    "APP_CONTEXT_ATTR",
    "BACKEND_APP_CONTEXT_KEY",
    "CONNECTION_IDS_CONTEXT_KEY",
    "DEFAULT_BLOCKING_ENV_VAR",
    "DEFAULT_BLOCKING_TIMEOUT_ENV_VAR",
    "DEFAULT_LOCK_TTL_ENV_VAR",
    "THROTTLED_STATE_KEY",
    "THROTTLE_DEFAULT_SCOPE",
    "check_seconds",
    "get_lock_blocking",
    "get_lock_blocking_timeout",
    "get_lock_ttl",
    "set_lock_blocking",
    "set_lock_blocking_timeout",
    "set_lock_ttl",
]

ANONYMOUS_IDENTIFIER = "__anonymous__"
"""The identity of a connection whose server gives no peer address."""

BACKEND_APP_CONTEXT_KEY = "__traffik_throttle_backend__"
"""The attribute of `app.state` under which `backend.lifespan` records the app's backend."""

APP_CONTEXT_ATTR = "state"
"""The attribute of an app that holds `BACKEND_APP_CONTEXT_KEY`."""

THROTTLED_STATE_KEY = "__traffik_throttled_state__"
"""Where a connection's last wait (ms) is kept, in `scope["state"]` (0.0 when allowed)."""

CONNECTION_IDS_CONTEXT_KEY = "__traffik_connection_ids__"
"""Where identities are cached per throttle uid, in `scope["state"]` (`cache_ids=True`)."""

THROTTLE_DEFAULT_SCOPE = "default"
"""traffik 1.2's default context `scope`; Traffik puts a scope in a key only when one is given."""

DEFAULT_LOCK_TTL_ENV_VAR = "TRAFFIK_DEFAULT_LOCK_TTL"
DEFAULT_BLOCKING_ENV_VAR = "TRAFFIK_DEFAULT_BLOCKING"
DEFAULT_BLOCKING_TIMEOUT_ENV_VAR = "TRAFFIK_DEFAULT_BLOCKING_TIMEOUT"

_TRUE = frozenset({"1", "true", "yes", "on"})


def check_seconds(name: str, value: object, *, positive: bool = False) -> float:
    """`value` as a number of seconds: finite and at least 0 (above 0 when `positive`).

    Args:
        name: What the value is (`"set_lock_ttl(...)"`, `"lock_ttl"`), named in the message.
        value: A number, or a string of one (the environment's); not a bool.
        positive: Whether 0 is refused too (a lock TTL of 0 would expire at once).

    Returns:
        The seconds, as a float.

    Raises:
        ConfigurationError: When `value` is no number of seconds in that range.
    """
    seconds: Optional[float] = None
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError, ValueError):
            seconds = float(value)  # type: ignore[arg-type]
    bound = "> 0 (None: no expiry)" if positive else ">= 0"
    if seconds is None:
        raise ConfigurationError(
            f"{name}={value!r} is not a number of seconds; give a finite number {bound}"
        )
    if not (seconds > 0 if positive else seconds >= 0) or math.isinf(seconds):
        raise ConfigurationError(f"{name}={value!r} must be a finite number of seconds {bound}")
    return seconds


def _read_seconds(env_var: str, *, positive: bool) -> Optional[float]:
    value = os.environ.get(env_var)
    return None if value is None else check_seconds(env_var, value, positive=positive)


def _write_seconds(setter: str, env_var: str, value: Optional[float], *, positive: bool) -> None:
    if value is None:
        os.environ.pop(env_var, None)
    else:
        check_seconds(f"{setter}: {env_var}", value, positive=positive)
        os.environ[env_var] = str(value)


def get_lock_ttl() -> Optional[float]:
    """Seconds a lock lives unless given (`TRAFFIK_DEFAULT_LOCK_TTL`, above 0); None: no expiry."""
    return _read_seconds(DEFAULT_LOCK_TTL_ENV_VAR, positive=True)


def set_lock_ttl(value: Optional[float]) -> None:
    """Set (None: unset) the default lock TTL in seconds; 0, negative or not a number is a
    `ConfigurationError` (a `ValueError`)."""
    _write_seconds("set_lock_ttl", DEFAULT_LOCK_TTL_ENV_VAR, value, positive=True)


def get_lock_blocking() -> bool:
    """Whether locks wait by default (`TRAFFIK_DEFAULT_BLOCKING`, default True). Any value
    other than `1`, `true`, `yes` or `on` (in any case) means False."""
    value = os.environ.get(DEFAULT_BLOCKING_ENV_VAR)
    return True if value is None else value.strip().lower() in _TRUE


def set_lock_blocking(value: bool) -> None:
    """Set whether locks wait by default; anything but True or False is a `ConfigurationError`
    (`set_lock_blocking("false")` would otherwise mean True)."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"set_lock_blocking({value!r}): expected True or False")
    os.environ[DEFAULT_BLOCKING_ENV_VAR] = "1" if value else "0"


def get_lock_blocking_timeout() -> Optional[float]:
    """Seconds a blocking lock waits at most (`TRAFFIK_DEFAULT_BLOCKING_TIMEOUT`); None: forever."""
    return _read_seconds(DEFAULT_BLOCKING_TIMEOUT_ENV_VAR, positive=False)


def set_lock_blocking_timeout(value: Optional[float]) -> None:
    """Set (None: unset) the default blocking timeout in seconds; 0 is allowed."""
    _write_seconds(
        "set_lock_blocking_timeout", DEFAULT_BLOCKING_TIMEOUT_ENV_VAR, value, positive=False
    )
