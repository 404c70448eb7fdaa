"""Store health: a circuit per store that answers at once while the store is down, and probes it.

Each network store a backend talks to (a Redis server, Sentinel service or Cluster; each
memcached node) has one `StoreCircuit` per backend object, so per process. The backend's one
command path reads it: before an operation, `tripped` (one attribute) and, only when it is
set, `check()`; after a success, `failures` (one attribute) and, only when it is not zero,
`answered()`. A closed circuit costs nothing more.

- **closed**: operations run. A timeout or a connection failure counts (`failed`); any
  answer resets the count. After `failure_threshold` failures in a row, spanning at least
  `quiet_period` seconds of silence (a timeout proves the silence by itself; a refused
  connection does not, so a flicker does not open it), the circuit opens.
  `silent` says the failures include a timeout (the store is frozen or hung, not refusing):
  `retry` and `failover` send no more retries to it. Hits that waited for a failed command
  (coalesced ones on one key) count too (`waited`).
- **open**: operations fail at once with `CircuitOpenError` (a `BackendConnectionError`, so
  the throttle's `on_error` answers) without touching the network. A background task probes
  the store, one probe at a time, right away and then every `probe_interval` seconds;
  while a probe runs the state is `half_open`. The probe runs the backend's own command path
  (the circuit lets only the probe's task through), so the first answer closes the circuit.
- The first answer after failures calls the recovery listeners (a fallback charging what it
  admitted, say), whether it closes the circuit or comes before the circuit opened (a
  restart shorter than the quiet period). The command path calls `answered()` only then.

With `CircuitPolicy(enabled=False)` nothing is ever refused, but failures, openings, probes
and recoveries are still tracked. `info()` is the state as a dict, for metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from typing import Any, Callable, Optional

from traffik.circuit_breaker import CircuitState
from traffik.exceptions import CircuitOpenError, ConfigurationError
from traffik.logs import QuietLog

__all__ = ["DEFAULT_POLICY", "CircuitPolicy", "CircuitState", "StoreCircuit", "circuit_policy"]

logger = logging.getLogger("traffik")
_log = QuietLog(logger, interval=30.0)
"""Openings and closings of one store are logged at most once per 30 s (with a count)."""


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"CircuitPolicy({name}={value!r}): must be a whole number >= 1")
    return value


def _seconds(name: str, value: object, minimum: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ConfigurationError(
            f"CircuitPolicy({name}={value!r}): must be a finite number of seconds >= {minimum:g}"
        )
    return float(value)


class CircuitPolicy:
    """When a store's circuit opens and how often it probes (module docstring).

    `failure_threshold` failures in a row (timeouts, refused or lost connections) spanning
    `quiet_period` seconds open it; `probe_interval` seconds pass between two probes while
    it is open; `enabled=False` tracks the store's health without ever refusing.
    """

    __slots__ = ("enabled", "failure_threshold", "probe_interval", "quiet_period")

    def __init__(
        self,
        failure_threshold: int = 3,
        quiet_period: float = 0.25,
        probe_interval: float = 0.25,
        enabled: bool = True,
    ) -> None:
        self.failure_threshold = _count("failure_threshold", failure_threshold)
        self.quiet_period = _seconds("quiet_period", quiet_period, 0)
        self.probe_interval = _seconds("probe_interval", probe_interval, 0.01)
        self.enabled = bool(enabled)

    def __repr__(self) -> str:
        return (
            f"CircuitPolicy(failure_threshold={self.failure_threshold}, "
            f"quiet_period={self.quiet_period:g}, probe_interval={self.probe_interval:g}, "
            f"enabled={self.enabled})"
        )


DEFAULT_POLICY = CircuitPolicy()


def circuit_policy(owner: str, value: Any) -> CircuitPolicy:
    """The policy a backend's `circuit=` option means: True (the default policy), False (never
    refuse, still track), or a `CircuitPolicy`."""
    if value is True:
        return DEFAULT_POLICY
    if value is False:
        return CircuitPolicy(enabled=False)
    if isinstance(value, CircuitPolicy):
        return value
    raise ConfigurationError(
        f"{owner}: circuit={value!r} must be True (the default), False (never refuse) or a "
        "CircuitPolicy(failure_threshold=3, quiet_period=0.25, probe_interval=0.25)"
    )


class StoreCircuit:
    """The health of one store, as this process sees it (module docstring).

    `probe` is a coroutine function that runs one cheap operation through the backend's
    command path (a `PING`, a `version`). `name` names the store in errors and logs.
    """

    __slots__ = (
        "_listeners",
        "_opened_after",
        "_probe",
        "_probing",
        "_streak_start",
        "failures",
        "last_error",
        "name",
        "opened",
        "opened_at",
        "policy",
        "refused",
        "silent",
        "state",
        "tripped",
    )

    def __init__(
        self, name: str, probe: Callable[[], Awaitable[Any]], policy: CircuitPolicy = DEFAULT_POLICY
    ) -> None:
        self.name = name
        self.policy = policy
        self._probe = probe
        self._probing: Optional[asyncio.Task[None]] = None
        self._listeners: list[Callable[[], Any]] = []
        self._streak_start = 0.0
        """`time.monotonic()` since when the store has not answered (the current streak's
        start, moved back by the silence a timeout proves)."""
        self._opened_after = 0
        self.state = CircuitState.CLOSED
        self.tripped = False
        """True while operations are refused (open, or probing, with the policy enabled)."""
        self.failures = 0
        """Failures in a row; 0 once the store answers."""
        self.silent = False
        """True while those failures include a timeout: the store said nothing for a whole
        timeout and has not answered since (frozen or hung, not refusing)."""
        self.opened = 0
        """How many times the circuit has opened."""
        self.refused = 0
        """Operations answered at once while it was open."""
        self.opened_at: Optional[float] = None
        """`time.monotonic()` when it last opened; None while closed."""
        self.last_error: Optional[BaseException] = None

    def __repr__(self) -> str:
        return f"StoreCircuit({self.name!r}, state={self.state.value!r}, failures={self.failures})"

    # -- the command path ----------------------------------------------------------------

    def check(self, operation: str) -> None:
        """Let the probe's operation through; refuse any other at once (`CircuitOpenError`).

        Called only while `tripped`. A probe that died with its event loop is started again
        in this one."""
        task = asyncio.current_task()
        probing = self._probing
        if task is not None and task is probing:
            return
        if probing is None or probing.done() or probing.get_loop() is not _running_loop():
            self._start_probe()
        self.refused += 1
        raise CircuitOpenError(
            f"{self.name}: {operation} not attempted; the store has not answered for "
            f"{time.monotonic() - self._streak_start:.1f}s (circuit open after "
            f"{self._opened_after} failure{'s' if self._opened_after != 1 else ''}, last: "
            f"{self.last_error}); a probe checks it every {self.policy.probe_interval:g}s"
        )

    def failed(self, error: BaseException, silent: float = 0.0) -> None:
        """An operation failed with a timeout or a lost connection; `silent` is how long the
        store is known to have said nothing (the timeout that expired), 0 when unknown."""
        now = time.monotonic()
        if not self.failures:
            self._streak_start = now
        self.failures += 1
        self.last_error = error
        if silent:
            self._streak_start = min(self._streak_start, now - silent)
            self.silent = True
        if (
            self.state is CircuitState.CLOSED
            and self.failures >= self.policy.failure_threshold
            and now - self._streak_start >= self.policy.quiet_period
        ):
            self._open()

    def waited(self, error: BaseException, hits: int) -> None:
        """`hits` operations that waited for the one that failed on `error` (coalesced hits
        on one key, `traffik.backends.lanes`) failed with it: each counts as a failure,
        when `error` is the last failure counted here (a timeout or a lost connection of
        this store), so a hot key opens the circuit as many keys would."""
        if error is self.last_error and self.failures:
            for _ in range(hits):
                self.failed(error)

    def answered(self) -> None:
        """The store answered after failing: reset the failures, close the circuit if it was
        open, and call the recovery listeners (open or not: a blip recovers too)."""
        self.failures = 0
        self.silent = False
        if self.state is not CircuitState.CLOSED:
            self._close()
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                logger.exception("%s: a recovery listener failed", self.name)

    # -- transitions ---------------------------------------------------------------------

    def trip(self, error: BaseException) -> None:
        """Open now (the store was found unreachable at start-up, say), probing right away.

        `error` becomes `last_error` unless this streak of failures recorded one already:
        the store's own (a refused connection) says more than a check that saw it fail."""
        if not self.failures:
            self._streak_start = time.monotonic()
            self.last_error = error
        self.failures = max(self.failures, 1)
        if self.state is CircuitState.CLOSED:
            self._open()

    def _open(self) -> None:
        self.state = CircuitState.OPEN
        self.tripped = self.policy.enabled
        self.opened_at = time.monotonic()
        self._opened_after = self.failures
        self.opened += 1
        _log.log(
            logging.WARNING,
            (self.name, "open"),
            "%s: %d failure%s in a row (last: %s); %s, probing every %gs",
            self.name,
            self.failures,
            "s" if self.failures != 1 else "",
            self.last_error,
            "answering on_error at once" if self.policy.enabled else "circuit disabled",
            self.policy.probe_interval,
        )
        self._start_probe()

    def _close(self) -> None:
        down = time.monotonic() - self._streak_start  # since the store's last answer
        self.state = CircuitState.CLOSED
        self.tripped = False
        self.opened_at = None
        _log.log(
            logging.WARNING,
            (self.name, "closed"),
            "%s answers again after %.1fs; circuit closed (%d operation%s answered at once so far)",
            self.name,
            down,
            self.refused,
            "s" if self.refused != 1 else "",
        )

    def stop(self) -> None:
        """Forget the store's health (the backend closed): closed, no failures, no probe."""
        probing, self._probing = self._probing, None
        if probing is not None and not probing.done() and probing.get_loop() is _running_loop():
            probing.cancel()
        self.state = CircuitState.CLOSED
        self.tripped = False
        self.failures = 0
        self.silent = False
        self.opened_at = None

    # -- the probe -----------------------------------------------------------------------

    def _start_probe(self) -> None:
        loop = _running_loop()
        if loop is None:
            return
        self._probing = loop.create_task(self._probe_until_closed())

    async def _probe_until_closed(self) -> None:
        me = asyncio.current_task()
        while self.state is not CircuitState.CLOSED and self._probing is me:
            self.state = CircuitState.HALF_OPEN
            try:
                await self._probe()
            except Exception as exc:  # (an answer that is no success: the errors name it)
                self.last_error = exc
            else:
                self.answered()
            if self.state is CircuitState.CLOSED or self._probing is not me:
                return
            self.state = CircuitState.OPEN
            await asyncio.sleep(self.policy.probe_interval)

    # -- listeners and metrics -----------------------------------------------------------

    def on_recovery(self, listener: Callable[[], Any]) -> None:
        """Call `listener()` (in the event loop, synchronously) each time the store answers
        after failing (`answered`): when the circuit closes, and after a blip that never
        opened it."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def info(self) -> dict[str, Any]:
        """The circuit's state, for metrics and health endpoints."""
        return {
            "store": self.name,
            "state": self.state.value,
            "enabled": self.policy.enabled,
            "failures": self.failures,
            "opened": self.opened,
            "refused": self.refused,
            "open_for": None
            if self.opened_at is None
            else round(time.monotonic() - self.opened_at, 3),
            "last_error": None if self.last_error is None else str(self.last_error),
        }


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
