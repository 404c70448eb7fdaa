"""The arguments of the recovering `on_error` handlers, checked: a bad one is a `ConfigurationError`.

Each check names the handler (`owner`) and the argument, and says what would be valid, so
`retry(max_retries=-1)` fails where it is written. `traffik.error_handlers` uses them.
"""

from __future__ import annotations

import math

from traffik.backoff import BackoffStrategy
from traffik.exceptions import ConfigurationError

__all__ = [
    "check_backend",
    "check_backoff",
    "check_initialized",
    "check_retries",
    "check_seconds",
    "exception_types",
]


def exception_types(owner: str, name: str, value: object) -> tuple[type[BaseException], ...]:
    types = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ConfigurationError(
            f"{owner}({name}={value!r}): must be an exception class or a non-empty tuple of them, "
            "like (BackendError,)"
        )
    return types


def check_backend(owner: str, backend: object) -> None:
    from traffik.backends.base import ThrottleBackend

    if not isinstance(backend, ThrottleBackend):
        raise ConfigurationError(
            f"{owner}(backend={backend!r}): must be a ThrottleBackend, "
            "like InMemoryBackend(namespace='fallback')"
        )


def check_initialized(owner: str, initialized: object) -> None:
    if initialized is not None and not isinstance(initialized, bool):
        raise ConfigurationError(
            f"{owner}(initialized={initialized!r}): must be None, True or False"
        )


def check_retries(owner: str, max_retries: object) -> None:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(
            f"{owner}(max_retries={max_retries!r}): must be a whole number >= 0"
        )


def check_seconds(owner: str, name: str, value: object, minimum: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ConfigurationError(
            f"{owner}({name}={value!r}): must be a finite number >= {minimum:g}"
        )
    return float(value)


def check_backoff(owner: str, backoff: object) -> BackoffStrategy:
    if not callable(backoff):
        raise ConfigurationError(
            f"{owner}(backoff={backoff!r}): must be a callable (attempt, base_delay) -> seconds, "
            "like ExponentialBackoff() from traffik.backoff"
        )
    return backoff
