"""`CircuitBreaker`: stop calling a failing backend for a while, then let one probe test it."""

from __future__ import annotations

import enum
import math
import time
from typing import Any, Callable

from traffik.exceptions import ConfigurationError

__all__ = ["CircuitBreaker", "CircuitState"]


class CircuitState(enum.Enum):
    """Where a breaker stands: calls pass (`closed`), are refused (`open`), or one probe runs (`half_open`)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"CircuitBreaker({name}={value!r}): must be a whole number >= 1")
    return value


class CircuitBreaker:
    """Counts failures of a backend and opens after `failure_threshold` in a row.

    - `closed`: every call is allowed; a success resets the failure count.
    - `open`: calls are refused until `recovery_timeout` seconds have passed since it
      opened; the next `allow_execution()` then moves to `half_open` and becomes the probe.
    - `half_open`: one probe at a time; other callers are refused while it runs. Each
      successful probe counts, `success_threshold` of them close the circuit, and any
      failure opens it again.

    The breaker is local to the process. Every method runs without an `await` inside, so
    each is atomic on the event loop: no lock, and one breaker works across event loops.
    The methods are coroutines for compatibility with traffik 1.2. `clock` returns seconds
    (monotonic by default; inject one in tests), and `opened_at` in `info()` is its reading
    (traffik 1.2 documented a datetime but returned this). The `state` properties report the
    stored state: an open circuit whose timeout has passed stays `open` until a caller asks.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        success_threshold: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (
            isinstance(recovery_timeout, bool)
            or not isinstance(recovery_timeout, (int, float))
            or not math.isfinite(recovery_timeout)
            or recovery_timeout <= 0
        ):
            raise ConfigurationError(
                f"CircuitBreaker(recovery_timeout={recovery_timeout!r}): must be a finite number of seconds > 0"
            )
        if not callable(clock):
            raise ConfigurationError(
                f"CircuitBreaker(clock={clock!r}): must be a callable returning seconds, like time.monotonic"
            )
        self.failure_threshold = _check_count("failure_threshold", failure_threshold)
        self.success_threshold = _check_count("success_threshold", success_threshold)
        self.recovery_timeout = float(recovery_timeout)
        self.clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at: float | None = None
        self._probe_in_progress = False

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self._state.value!r}, failures={self._failures}, "
            f"failure_threshold={self.failure_threshold}, recovery_timeout={self.recovery_timeout}, "
            f"success_threshold={self.success_threshold})"
        )

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def is_open(self) -> bool:
        return self._state is CircuitState.OPEN

    @property
    def is_closed(self) -> bool:
        return self._state is CircuitState.CLOSED

    @property
    def is_half_open(self) -> bool:
        return self._state is CircuitState.HALF_OPEN

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self.clock()
        self._successes = 0
        self._probe_in_progress = False

    def _close(self) -> None:
        self._state = CircuitState.CLOSED
        self._opened_at = None
        self._failures = 0
        self._successes = 0
        self._probe_in_progress = False

    async def allow_execution(self) -> bool:
        """True when the caller may use the backend; in `half_open` the caller becomes the probe."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            opened_at = self._opened_at
            if opened_at is not None and self.clock() - opened_at < self.recovery_timeout:
                return False
            self._state = CircuitState.HALF_OPEN
            self._successes = 0
        elif self._probe_in_progress:
            return False
        self._probe_in_progress = True
        return True

    async def record_success(self) -> None:
        """A call succeeded: reset the failures, or count a successful probe."""
        if self._state is CircuitState.CLOSED:
            self._failures = 0
        elif self._state is CircuitState.HALF_OPEN:
            self._successes += 1
            self._probe_in_progress = False
            if self._successes >= self.success_threshold:
                self._close()

    async def record_failure(self) -> None:
        """A call failed: count it; open at the threshold, or again after a failed probe."""
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or (
            self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._open()

    async def force_open(self) -> None:
        """Open now, restarting the recovery timeout."""
        self._open()

    async def force_close(self) -> None:
        """Close now and forget the failures."""
        self._close()

    async def info(self) -> dict[str, Any]:
        """The breaker's state as a dict (`failures`/`successes` are aliases of the `_count` keys)."""
        return {
            "state": self._state.value,
            "failures": self._failures,
            "successes": self._successes,
            "failure_count": self._failures,
            "success_count": self._successes,
            "opened_at": self._opened_at,
            "probe_in_progress": self._probe_in_progress,
        }
