"""Decision events: one hook every throttle decision passes through.

An observer is a plain callable taking a `DecisionEvent`. Register one for the whole process
with `add_observer` (metrics exporters do: `traffik.metrics.prometheus`,
`traffik.metrics.opentelemetry`), or for one throttle with `HTTPThrottle(on_decision=...)`.
Observers run synchronously after the decision, in the request's task; what they raise is
logged (once per interval) and never reaches the request. A coroutine function is refused by
`add_observer`, and a coroutine an observer returns is closed unrun and logged. With no
observer registered a decision measures nothing and builds no event.

Outcomes: `"allowed"`, `"refused"`, `"shadow_refused"` (a shadow throttle would have
refused; the connection went through) and `"error"` (the decision failed; `error` holds the
exception, and the throttle's `on_error` policy answered).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any, Callable, Optional

from traffik.logs import QuietLog

__all__ = [
    "ALLOWED",
    "ERROR",
    "OUTCOMES",
    "REFUSED",
    "SHADOW_REFUSED",
    "DecisionEvent",
    "Observer",
    "add_observer",
    "observers",
    "remove_observer",
]

ALLOWED = "allowed"
REFUSED = "refused"
SHADOW_REFUSED = "shadow_refused"
ERROR = "error"
OUTCOMES = (ALLOWED, REFUSED, SHADOW_REFUSED, ERROR)

logger = logging.getLogger("traffik")
_quiet = QuietLog(logger)


class DecisionEvent:
    """What one decision did.

    Attributes:
        throttle: The throttle that decided (its `uid` names it).
        connection: The Starlette `Request` or `WebSocket`.
        key: The client's bucket key, or None when the decision failed before it existed.
        rates: The throttle's rates for this decision (a tuple of `Rate`), or None.
        rate: The rate that refused (the first rate when admitted), or None.
        outcome: One of `OUTCOMES`.
        wait_ms: Milliseconds until the client may try again (0 when admitted).
        remaining: Hits left in the tightest rate after this one, when known.
        backend: The backend that was asked.
        duration_s: Seconds the decision took (the store's round trip included).
        error: The exception, for the `"error"` outcome; else None.
    """

    __slots__ = (
        "backend",
        "connection",
        "duration_s",
        "error",
        "key",
        "outcome",
        "rate",
        "rates",
        "remaining",
        "throttle",
        "wait_ms",
    )

    def __init__(
        self,
        throttle: Any,
        connection: Any,
        key: Optional[str],
        rates: Optional[tuple[Any, ...]],
        rate: Any,
        outcome: str,
        wait_ms: float,
        remaining: Optional[float],
        backend: Any,
        duration_s: float,
        error: Optional[BaseException] = None,
    ) -> None:
        self.throttle = throttle
        self.connection = connection
        self.key = key
        self.rates = rates
        self.rate = rate
        self.outcome = outcome
        self.wait_ms = wait_ms
        self.remaining = remaining
        self.backend = backend
        self.duration_s = duration_s
        self.error = error

    def __repr__(self) -> str:
        uid = getattr(self.throttle, "uid", self.throttle)
        return (
            f"DecisionEvent({uid!r}, key={self.key!r}, outcome={self.outcome!r}, "
            f"wait_ms={self.wait_ms!r}, remaining={self.remaining!r})"
        )


Observer = Callable[[DecisionEvent], Any]

_observers: list[Observer] = []


def add_observer(observer: Observer) -> Callable[[], None]:
    """Call `observer(event)` after every decision of every throttle in this process.

    Returns a function that removes it again. Adding the same observer twice adds it once.
    """
    if not callable(observer):
        raise TypeError(f"add_observer: {observer!r} is not callable")
    call = observer if inspect.isfunction(observer) else type(observer).__call__
    if inspect.iscoroutinefunction(observer) or inspect.iscoroutinefunction(call):
        raise TypeError(
            f"add_observer: {observer!r} is a coroutine function; observers run synchronously "
            "in the request's task, so its coroutine would never run: pass a plain function "
            "(hand the event to a queue or a task of your own to do async work)"
        )
    if observer not in _observers:
        _observers.append(observer)
    return lambda: remove_observer(observer)


def remove_observer(observer: Observer) -> None:
    """Stop calling `observer`; nothing happens when it was not added."""
    with contextlib.suppress(ValueError):
        _observers.remove(observer)


def observers() -> tuple[Observer, ...]:
    """The process-wide observers, in the order they were added."""
    return tuple(_observers)


def notify(event: DecisionEvent, own: Optional[Observer]) -> None:
    """Pass `event` to the throttle's own observer, then to the process-wide ones: those added
    when it began (a copy: an observer that removes itself, or adds one, changes the next
    event's)."""
    for observer in (own, *_observers) if own is not None else tuple(_observers):
        try:
            result = observer(event)
            if result is not None and inspect.isawaitable(result):
                _unawaited(observer, result)
        except Exception as exc:  # an observer never breaks a request
            _quiet.log(
                logging.WARNING,
                ("observer", _name(observer), type(exc).__name__),
                "decision observer %r raised %r; ignored",
                observer,
                exc,
                exc_info=exc,
            )


def _name(observer: Observer) -> str:
    """What names an observer's kind of failure in the log: its code's module and qualified
    name (two observers failing alike are each logged; no reference is kept to either)."""
    code = observer if hasattr(observer, "__qualname__") else type(observer)
    return f"{getattr(code, '__module__', '')}.{getattr(code, '__qualname__', '')}"


def _unawaited(observer: Observer, result: Any) -> None:
    """An observer returned an awaitable (an `async def` given as `on_decision`): it is never
    awaited, so it is closed (no "never awaited" warning later) and the observer named."""
    close = getattr(result, "close", None)
    if close is not None:
        close()
    _quiet.log(
        logging.WARNING,
        ("observer", _name(observer), "awaitable"),
        "decision observer %r returned a coroutine, which is never run: observers are "
        "synchronous (pass a plain function; hand the event to a queue or a task of your own "
        "to do async work)",
        observer,
    )
