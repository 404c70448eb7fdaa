"""OpenTelemetry metrics, and a span, for every throttle decision: `install()` once per process.

`install()` adds an observer (`traffik.events`) that records, through the OpenTelemetry API
(the SDK, exporters and providers are the application's to configure):

- counter `traffik.decisions` with `traffik.throttle` (the uid) and `traffik.outcome`;
- histogram `traffik.decision.duration` in seconds, with `traffik.backend` (the backend class);
- counter `traffik.backend.errors` with `traffik.backend` and `traffik.error` (the exception
  class);
- a span `traffik.decision` per decision, once a tracer provider is configured, with
  `traffik.throttle`, `traffik.outcome`, `traffik.backend`, `traffik.wait_ms`, and
  `traffik.remaining` and `traffik.rate` when known. It is made after the decision, with the
  start and end the decision had, as a child of the span current in the request (a server
  span of an instrumented app); a failed decision's span records the exception.

The global providers may be set before or after `install()`; until a tracer provider is set
no span is made, which costs nothing.
"""

from __future__ import annotations

from time import time_ns
from typing import Any, Optional

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the library
    raise ImportError(
        "traffik.metrics.opentelemetry needs opentelemetry-api, which is not installed; "
        'install it with `pip install "traffik-core[opentelemetry]"`'
    ) from exc

from traffik import __version__
from traffik.events import DecisionEvent, add_observer, remove_observer
from traffik.metrics import DURATION_SECONDS
from traffik.metrics._labels import backend_label, throttle_label

__all__ = ["DURATION_BOUNDARIES", "SPAN_NAME", "OpenTelemetryObserver", "install", "uninstall"]

SPAN_NAME = "traffik.decision"
DURATION_BOUNDARIES = DURATION_SECONDS
"""The histogram's bounds in seconds (`traffik.metrics.DURATION_SECONDS`)."""

_SCOPE = "traffik"
_UNSET_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


class OpenTelemetryObserver:
    """Records each `DecisionEvent` it is called with as metrics and, optionally, a span.

    `meter_provider` and `tracer_provider` default to the global ones. `spans=False` records
    the metrics only.
    """

    def __init__(
        self,
        meter_provider: Optional[metrics.MeterProvider] = None,
        tracer_provider: Optional[trace.TracerProvider] = None,
        *,
        spans: bool = True,
    ) -> None:
        self.meter_provider = meter_provider
        self.tracer_provider = tracer_provider
        self.spans = spans
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider)
        self._decisions = meter.create_counter(
            "traffik.decisions", unit="{decision}", description="Throttle decisions."
        )
        self._duration = meter.create_histogram(
            "traffik.decision.duration",
            unit="s",
            description="Time a throttle decision took, the store's round trip included.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDARIES,
        )
        self._errors = meter.create_counter(
            "traffik.backend.errors", unit="{error}", description="Failed throttle decisions."
        )
        self._tracer: Optional[trace.Tracer] = (
            tracer_provider.get_tracer(_SCOPE, __version__) if tracer_provider is not None else None
        )
        self._attributes: dict[Any, dict[str, str]] = {}
        """Metric attributes, made once per throttle and outcome, and per backend."""
        self._uids: set[str] = set()

    def __call__(self, event: DecisionEvent) -> None:
        attributes = self._attributes
        key = (event.throttle.uid, event.outcome)
        decided = attributes.get(key)
        if decided is None:
            uid = throttle_label(key[0], self._uids)
            decided = attributes.get((uid, key[1]))
            if decided is None:
                decided = {"traffik.throttle": uid, "traffik.outcome": key[1]}
                attributes[uid, key[1]] = decided
            if uid == key[0]:  # (a uid past the bound is not remembered: it is looked up again)
                attributes[key] = decided
        self._decisions.add(1, decided)
        backend = backend_label(event.backend)
        timed = attributes.get(backend)
        if timed is None:
            timed = attributes[backend] = {"traffik.backend": backend}
        self._duration.record(event.duration_s, timed)
        error = event.error
        if error is not None:
            self._errors.add(1, {"traffik.backend": backend, "traffik.error": type(error).__name__})
        if self.spans:
            tracer = self._tracer or self._global_tracer()
            if tracer is not None:
                self._span(tracer, event, decided, backend)

    def _global_tracer(self) -> Optional[trace.Tracer]:
        """The global provider's tracer once one is set (it cannot change after that)."""
        if self.tracer_provider is not None:
            return None
        provider = trace.get_tracer_provider()
        if isinstance(provider, _UNSET_PROVIDERS):
            return None
        self._tracer = provider.get_tracer(_SCOPE, __version__)
        return self._tracer

    @staticmethod
    def _span(
        tracer: trace.Tracer, event: DecisionEvent, decided: dict[str, str], backend: str
    ) -> None:
        end = time_ns()
        attributes: dict[str, Any] = {
            **decided,
            "traffik.backend": backend,
            "traffik.wait_ms": float(event.wait_ms),
        }
        if event.remaining is not None:
            attributes["traffik.remaining"] = event.remaining
        if event.rate is not None:
            attributes["traffik.rate"] = str(event.rate)
        span = tracer.start_span(
            SPAN_NAME, start_time=end - int(event.duration_s * 1e9), attributes=attributes
        )
        error = event.error
        if error is not None:
            span.record_exception(error, timestamp=end)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end(end_time=end)


_installed: list[OpenTelemetryObserver] = []


def install(
    meter_provider: Optional[metrics.MeterProvider] = None,
    tracer_provider: Optional[trace.TracerProvider] = None,
    *,
    spans: bool = True,
) -> OpenTelemetryObserver:
    """Record every decision of this process (module docstring), on the global providers
    unless others are given.

    Installing again with the same arguments returns the observer already installed; with
    others, it replaces it. The observer can also be given to one throttle alone, as
    `HTTPThrottle(on_decision=observer)`, without installing it.
    """
    for observer in _installed:
        if (
            observer.meter_provider is meter_provider
            and observer.tracer_provider is tracer_provider
            and observer.spans == spans
        ):
            add_observer(observer)
            return observer
    uninstall()
    made = OpenTelemetryObserver(meter_provider, tracer_provider, spans=spans)
    _installed.append(made)
    add_observer(made)
    return made


def uninstall() -> None:
    """Stop recording decisions; nothing happens when nothing was installed."""
    while _installed:
        remove_observer(_installed.pop())
