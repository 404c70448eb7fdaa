"""Every error Traffik raises, in one tree.

```
TraffikError (alias TraffikException)
├── ConfigurationError (also ValueError)       bad rate, cost, strategy or throttle settings
│   └── BackendNotFoundError                   no backend registered under a name or URL scheme
│       ├── BackendUnavailableError (also ImportError)  registered, but its client library is missing
│       └── InvalidBackendError                the entry point does not give a backend class
├── BackendError                               a storage operation failed
│   ├── BackendConnectionError                 closed, unreachable or timed out
│   │   └── CircuitOpenError                   not attempted: the store's circuit is open (it is down)
│   ├── BackendCapacityError                   a store holds as many keys as it may
│   └── LockError (also RuntimeError)
│       ├── LockAcquisitionError
│       ├── LockReleaseError
│       ├── LockTimeoutError (also TimeoutError)
│       └── LockPoolError                      traffik 1.2's; Traffik's locks have no pool to exhaust
├── QuotaError
│   ├── QuotaAppliedError
│   └── QuotaCancelledError
└── ConnectionThrottled                        429; a Starlette HTTPException when Starlette is installed
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, overload

__all__ = [
    "BackendCapacityError",
    "BackendConnectionError",
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "CircuitOpenError",
    "ConfigurationError",
    "ConnectionThrottled",
    "InvalidBackendError",
    "LockAcquisitionError",
    "LockError",
    "LockPoolError",
    "LockReleaseError",
    "LockTimeoutError",
    "QuotaAppliedError",
    "QuotaCancelledError",
    "QuotaError",
    "TraffikError",
    "TraffikException",
]


class TraffikError(Exception):
    """Base class of every Traffik error."""


TraffikException = TraffikError


class ConfigurationError(TraffikError, ValueError):
    """A setting is invalid; the message names it and what would be valid."""


class BackendNotFoundError(ConfigurationError):
    """No backend is registered under the requested name or URL scheme."""


class BackendUnavailableError(BackendNotFoundError, ImportError):
    """A backend is registered but its client library cannot be imported."""


class InvalidBackendError(BackendNotFoundError):
    """An entry point in `traffik.backends` does not load a `ThrottleBackend` subclass."""


class BackendError(TraffikError):
    """A storage operation failed; throttles route it to their `on_error` policy."""

    def __init__(self, *args: object, cause: BaseException | None = None) -> None:
        super().__init__(*args)
        self._cause = cause

    @property
    def cause(self) -> BaseException | None:
        return self._cause or self.__cause__


class BackendConnectionError(BackendError):
    """The backend is closed, unreachable, or did not answer in time."""


class CircuitOpenError(BackendConnectionError):
    """The operation was not attempted: the store failed repeatedly and its circuit is open
    (`traffik.backends.health`); a background probe closes it once the store answers."""


class BackendCapacityError(BackendError):
    """A store (in memory, SQLite) holds as many keys as it may and refuses a new one."""


class LockError(BackendError, RuntimeError):
    """Base class of lock errors."""


class LockAcquisitionError(LockError):
    """A lock could not be acquired (non-blocking miss, timeout, or re-entry)."""


class LockReleaseError(LockError):
    """A lock was released by a task that does not own it."""


class LockTimeoutError(LockError, TimeoutError):
    """A lock's time to live ran out while its body was still running."""


class LockPoolError(LockError):
    """traffik 1.2's error for an exhausted lock pool, for code that catches it; Traffik's
    locks are made on demand, so nothing raises it."""


class QuotaError(TraffikError):
    """Base class of quota-context errors."""


class QuotaAppliedError(QuotaError):
    """The quota context was already applied."""


class QuotaCancelledError(QuotaError):
    """The quota context was cancelled."""


def _reason_phrase(status_code: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


if TYPE_CHECKING:  # (what type checkers see: `ConnectionThrottled` is an `HTTPException`)
    from starlette.exceptions import HTTPException as _HTTPException
else:
    try:
        from starlette.exceptions import HTTPException as _HTTPException
    except ImportError:  # (the core alone: a plain `TraffikError`)

        class _HTTPException:
            """Stands for Starlette's `HTTPException` when Starlette is not installed."""


_ORDER = ("status_code", "detail", "headers")
"""`ConnectionThrottled`'s positional order: Starlette's `HTTPException`'s."""
_ORDER_1_2 = ("wait_period", "status_code", "detail", "headers")
"""traffik 1.2's positional order."""
_KEYWORDS = frozenset((*_ORDER_1_2, "rate"))


def _is_status(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _traffik12_order(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    """Whether positional `args` are in traffik 1.2's order: the first cannot be a status
    (None, a number outside 100-599, a float), the second is a status (an int, never a
    detail), or `status_code` is also given by keyword."""
    first = args[0]
    return (
        first is None
        or (_is_number(first) and not _is_status(first))
        or (len(args) > 1 and isinstance(args[1], int) and not isinstance(args[1], bool))
        or "status_code" in kwargs
    )


def _throttled_arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`ConnectionThrottled`'s arguments by name, from either positional order."""
    unknown = sorted(set(kwargs) - _KEYWORDS)
    if unknown:
        raise TypeError(
            f"ConnectionThrottled() got an unexpected keyword {unknown[0]!r}; "
            f"it takes {', '.join(sorted(_KEYWORDS))}"
        )
    order = _ORDER_1_2 if args and _traffik12_order(args, kwargs) else _ORDER
    if len(args) > len(order):
        raise TypeError(
            f"ConnectionThrottled() takes at most {len(order)} positional arguments "
            f"({', '.join(order)}), {len(args)} given"
        )
    named = dict(zip(order, args))
    twice = sorted(named.keys() & kwargs.keys())
    if twice:
        raise TypeError(f"ConnectionThrottled() got multiple values for {twice[0]!r}")
    named.update(kwargs)
    status_code = named.setdefault("status_code", 429)
    if not _is_status(status_code):
        raise _not_a_status(status_code)
    return named


def _not_a_status(status_code: object) -> ConfigurationError:
    return ConfigurationError(
        f"ConnectionThrottled(status_code={status_code!r}): must be an HTTP status, a "
        "whole number from 100 to 599; a wait in seconds goes in wait_period= "
        "(ConnectionThrottled(429, wait_period=30))"
    )


class ConnectionThrottled(_HTTPException, TraffikError):
    """A throttled connection: status 429 and `Retry-After` with the wait in whole seconds.

    It takes Starlette's `HTTPException` order, `ConnectionThrottled(503, "slow down")`, with
    `wait_period` (seconds, for `Retry-After`) by keyword, and traffik 1.2's order,
    `ConnectionThrottled(30)` or `ConnectionThrottled(30, 503, "slow down", headers)`, told
    apart by the first argument: a real HTTP status (an int from 100 to 599) starts
    Starlette's order; None or any other number is 1.2's `wait_period`. So does a status
    as the second argument, or `status_code=` given by keyword. 1.2 code whose wait may be
    100 to 599 seconds and that passes nothing else must name it: `wait_period=`. `rate`
    is the rate that refused (with several rates, the one whose wait this is), when known.

    Raises:
        ConfigurationError: When the status is not a whole number from 100 to 599.
        TypeError: For an unknown keyword, too many arguments, or one given twice.
    """

    @overload
    def __init__(
        self,
        status_code: int = 429,
        detail: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        *,
        wait_period: Optional[float] = None,
        rate: Any = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        wait_period: Optional[float],
        status_code: int = 429,
        detail: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        *,
        rate: Any = None,
    ) -> None: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        named = _throttled_arguments(args, kwargs)
        self._fill(
            named["status_code"],
            named.get("detail"),
            named.get("headers"),
            named.get("wait_period"),
            named.get("rate"),
        )

    @classmethod
    def of(
        cls,
        status_code: int,
        detail: Any,
        headers: Optional[Mapping[str, str]],
        wait_period: Optional[float],
        rate: Any = None,
    ) -> ConnectionThrottled:
        """One made from arguments given by name, as the default handler gives them: the
        same exception as `ConnectionThrottled(status_code, detail, headers,
        wait_period=wait_period, rate=rate)`, without telling two positional orders apart.

        Raises:
            ConfigurationError: When the status is not a whole number from 100 to 599.
        """
        if not _is_status(status_code):
            raise _not_a_status(status_code)
        made = cls.__new__(cls)
        made._fill(status_code, detail, headers, wait_period, rate)
        return made

    def _fill(
        self,
        status_code: int,
        detail: Any,
        headers: Optional[Mapping[str, str]],
        wait_period: Optional[float],
        rate: Any,
    ) -> None:
        merged = dict(headers or {})
        if wait_period is not None:
            seconds = str(math.ceil(wait_period))
            for name in [name for name in merged if name.lower() == "retry-after"]:
                del merged[name]  # (the wait is the one `Retry-After`, however it was spelt)
            merged["Retry-After"] = seconds
            if detail is None:
                detail = f"{_reason_phrase(status_code)}. Retry after {seconds} second(s)."
        if detail is None:
            detail = _reason_phrase(status_code)
        self.wait_period = wait_period
        self.rate = rate
        self.status_code = status_code
        self.detail = detail
        self.headers = merged
        Exception.__init__(self, status_code, detail)

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, detail={self.detail!r})"
