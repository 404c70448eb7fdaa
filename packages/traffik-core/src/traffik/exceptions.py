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

from collections.abc import Mapping
from typing import Any

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


def _throttled_bases() -> tuple[type[Exception], ...]:
    try:
        from starlette.exceptions import HTTPException
    except ImportError:
        return (TraffikError,)
    return (HTTPException, TraffikError)


class ConnectionThrottled(*_throttled_bases()):  # type: ignore[misc]
    """A throttled connection: status 429 and `Retry-After` with the wait in whole seconds.

    The arguments come in `HTTPException`'s order (`ConnectionThrottled(429, "slow down")`);
    `wait_period` (seconds, for `Retry-After`) is keyword-only. traffik 1.2's keywords
    (`wait_period=`, `status_code=`, `detail=`, `headers=`) all keep working. `rate` is the
    rate that refused (with several rates, the one whose wait this is), when known.
    """

    def __init__(
        self,
        status_code: int = 429,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        wait_period: int | None = None,
        rate: Any = None,
    ) -> None:
        if detail is None:
            detail = _reason_phrase(status_code)
            if wait_period is not None:
                detail = f"{detail}. Retry after {wait_period} second(s)."
        merged = dict(headers or {})
        if wait_period is not None:
            merged["Retry-After"] = str(wait_period)
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
