"""traffik 1.2's `lock_config=` of every strategy: checked and kept, though no decision takes a lock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from traffik.exceptions import ConfigurationError

__all__ = ["LOCK_CONFIG_KEYS", "check_lock_config"]

LOCK_CONFIG_KEYS = (
    "blocking",
    "blocking_timeout",
    "enforce_ttl_locally",
    "local_ttl_factor",
    "reentrant",
    "ttl",
)
"""The keys of traffik 1.2's `LockConfig`: the arguments of `backend.lock(...)`."""


def check_lock_config(owner: str, lock_config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """A copy of `lock_config` (empty for None), refused unless it is a mapping of the
    `LockConfig` keys.

    Args:
        owner: The strategy's class name, named in the error message.
        lock_config: The mapping given, or None.

    Returns:
        A new dict with the same items.

    Raises:
        ConfigurationError: When `lock_config` is not a mapping, or has a key that
            `LockConfig` does not.
    """
    if lock_config is None:
        return {}
    if not isinstance(lock_config, Mapping):
        raise ConfigurationError(
            f"{owner}(lock_config={lock_config!r}): must be a mapping such as "
            "{'ttl': 5.0}, or None"
        )
    for key in lock_config:
        if key not in LOCK_CONFIG_KEYS:
            raise ConfigurationError(
                f"{owner}(lock_config={dict(lock_config)!r}): unknown key {key!r}; use "
                f"{', '.join(LOCK_CONFIG_KEYS)}"
            )
    return dict(lock_config)
