"""`BackendDefaults`: the throttle policy a backend carries for throttles that set none.

traffik 1.2 lets a backend supply a default identifier, throttled handler and `on_error`
policy, and default lock settings. They are not storage, so every backend accepts them in
one place (`ThrottleBackend(**defaults)`) instead of each re-declaring them. A lock setting
left at None takes the process default (`traffik.config`) when the backend is built; a
given one is checked then (a lock TTL above 0, a wait of 0 or more, a bool).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from traffik.call_shapes import check_called_as
from traffik.config import (
    check_seconds,
    get_lock_blocking,
    get_lock_blocking_timeout,
    get_lock_ttl,
)
from traffik.exceptions import ConfigurationError
from traffik.on_error import check_on_error

__all__ = ["BackendDefaults"]


class BackendDefaults:
    """A backend's `identifier`, `handle_throttled`, `on_error` and lock defaults.

    `shadow=True` makes every throttle on the backend that sets no `shadow` of its own a shadow
    throttle (it decides and counts, and never refuses: one switch for a whole app).
    `cache_refusals` turns the backend's memory of refused clients on or off
    (`traffik.refusals`; None: on for stores outside the process)."""

    __slots__ = (
        "cache_refusals",
        "handle_throttled",
        "identifier",
        "lock_blocking",
        "lock_blocking_timeout",
        "lock_ttl",
        "on_error",
        "shadow",
    )

    NAMES = frozenset(__slots__)

    def __init__(
        self,
        owner: str,
        *,
        identifier: Optional[Callable[..., Any]] = None,
        handle_throttled: Optional[Callable[..., Any]] = None,
        on_error: Any = "throttle",
        lock_ttl: Optional[float] = None,
        lock_blocking: Optional[bool] = None,
        lock_blocking_timeout: Optional[float] = None,
        shadow: bool = False,
        cache_refusals: Optional[bool] = None,
    ) -> None:
        for name, value in (("identifier", identifier), ("handle_throttled", handle_throttled)):
            if value is not None:
                check_called_as(value, name, owner)
        self.identifier = identifier
        self.handle_throttled = handle_throttled
        self.on_error = check_on_error(on_error, owner)
        self.shadow = bool(shadow)
        self.cache_refusals = cache_refusals
        if lock_blocking is not None and not isinstance(lock_blocking, bool):
            raise ConfigurationError(
                f"{owner}: lock_blocking={lock_blocking!r} must be True, False or None "
                "(None: the process default)"
            )
        self.lock_ttl = (
            get_lock_ttl()
            if lock_ttl is None
            else check_seconds(f"{owner}: lock_ttl", lock_ttl, positive=True)
        )
        self.lock_blocking = get_lock_blocking() if lock_blocking is None else lock_blocking
        self.lock_blocking_timeout = (
            get_lock_blocking_timeout()
            if lock_blocking_timeout is None
            else check_seconds(f"{owner}: lock_blocking_timeout", lock_blocking_timeout)
        )

    @classmethod
    def build(cls, owner: str, options: dict[str, Any]) -> BackendDefaults:
        """From a backend's extra keyword arguments; an unknown one is a `TypeError` naming it."""
        unknown = sorted(set(options) - cls.NAMES)
        if unknown:
            raise TypeError(
                f"{owner}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"besides its own options a backend takes {', '.join(sorted(cls.NAMES))}"
            )
        return cls(owner, **options)
