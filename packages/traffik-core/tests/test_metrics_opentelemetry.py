"""traffik.metrics.opentelemetry: metrics read back from the SDK's in-memory reader, and spans."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, Optional

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")

from fastapi import Depends, FastAPI, Request
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from traffik import HTTPThrottle, InMemoryBackend
from traffik.events import DecisionEvent, observers
from traffik.exceptions import CircuitOpenError
from traffik.metrics import opentelemetry as otel
from traffik.rates import Rate


def decision(
    outcome: str = "allowed",
    uid: str = "api",
    duration_s: float = 0.00004,
    remaining: Optional[int] = 1,
    error: Optional[BaseException] = None,
) -> DecisionEvent:
    rate = Rate.parse("2/min")
    return DecisionEvent(
        throttle=SimpleNamespace(uid=uid),
        connection=None,
        key="api:127.0.0.1",
        rates=(rate,),
        rate=rate,
        outcome=outcome,
        wait_ms=0.0 if outcome == "allowed" else 30_000.0,
        remaining=remaining,
        backend=InMemoryBackend(),
        duration_s=duration_s,
        error=error,
    )


class Telemetry:
    """An SDK meter and tracer provider that keep what they record in memory."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def points(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """The data points of metric `name`, by their attributes."""
        data = self.reader.get_metrics_data()
        if data is None:  # nothing recorded yet
            return {}
        return {
            frozenset(point.attributes.items()): point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        }

    def shutdown(self) -> None:
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    otel.uninstall()
    telemetry.shutdown()


def attributes(**values: Any) -> frozenset[tuple[str, Any]]:
    return frozenset((f"traffik.{name}", value) for name, value in values.items())


def test_decisions_durations_and_errors(telemetry: Telemetry) -> None:
    observer = otel.OpenTelemetryObserver(telemetry.meter_provider, telemetry.tracer_provider)
    observer(decision())
    observer(decision())
    observer(decision("refused", duration_s=0.0003))
    observer(decision("error", error=CircuitOpenError("redis down")))
    decisions = telemetry.points("traffik.decisions")
    assert decisions[attributes(throttle="api", outcome="allowed")].value == 2
    assert decisions[attributes(throttle="api", outcome="refused")].value == 1
    assert decisions[attributes(throttle="api", outcome="error")].value == 1
    duration = telemetry.points("traffik.decision.duration")[attributes(backend="InMemoryBackend")]
    assert duration.count == 4
    assert duration.sum == pytest.approx(0.00042)
    assert tuple(duration.explicit_bounds) == otel.DURATION_BOUNDARIES
    errors = telemetry.points("traffik.backend.errors")
    assert errors[attributes(backend="InMemoryBackend", error="CircuitOpenError")].value == 1


def test_one_span_per_decision_timed_as_the_decision(telemetry: Telemetry) -> None:
    observer = otel.OpenTelemetryObserver(telemetry.meter_provider, telemetry.tracer_provider)
    observer(decision("refused", duration_s=0.002, remaining=0))
    (span,) = telemetry.exporter.get_finished_spans()
    assert span.name == otel.SPAN_NAME == "traffik.decision"
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time - span.start_time == 2_000_000
    assert dict(span.attributes or {}) == {
        "traffik.throttle": "api",
        "traffik.outcome": "refused",
        "traffik.backend": "InMemoryBackend",
        "traffik.wait_ms": 30_000.0,
        "traffik.remaining": 0,
        "traffik.rate": "2/min",
    }


def test_a_failed_decision_span_records_the_error(telemetry: Telemetry) -> None:
    observer = otel.OpenTelemetryObserver(telemetry.meter_provider, telemetry.tracer_provider)
    observer(decision("error", remaining=None, error=CircuitOpenError("redis down")))
    (span,) = telemetry.exporter.get_finished_spans()
    assert "traffik.remaining" not in (span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "CircuitOpenError: redis down"
    (recorded,) = span.events
    assert recorded.name == "exception"
    assert (recorded.attributes or {})["exception.type"] == "traffik.exceptions.CircuitOpenError"


def test_spans_off(telemetry: Telemetry) -> None:
    observer = otel.OpenTelemetryObserver(
        telemetry.meter_provider, telemetry.tracer_provider, spans=False
    )
    observer(decision())
    assert telemetry.exporter.get_finished_spans() == ()
    assert telemetry.points("traffik.decisions")


def test_install_is_idempotent_and_uninstall_undoes_it(telemetry: Telemetry) -> None:
    first = otel.install(telemetry.meter_provider, telemetry.tracer_provider)
    assert otel.install(telemetry.meter_provider, telemetry.tracer_provider) is first
    assert observers().count(first) == 1
    other = otel.install(telemetry.meter_provider, telemetry.tracer_provider, spans=False)
    assert other is not first
    assert first not in observers() and other in observers()
    otel.uninstall()
    assert other not in observers()
    otel.uninstall()  # nothing installed: nothing happens


GLOBAL_PROVIDER_SET_LATER = textwrap.dedent(
    """
    from types import SimpleNamespace
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from traffik.events import DecisionEvent
    from traffik.metrics import opentelemetry as otel

    def event():
        return DecisionEvent(SimpleNamespace(uid="api"), None, "k", None, None, "allowed",
                             0.0, None, None, 0.0001)

    observer = otel.install()  # at import time, before the app configures telemetry
    observer(event())  # no provider yet: no span, no error
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    observer(event())
    spans = exporter.get_finished_spans()
    assert [span.attributes["traffik.backend"] for span in spans] == ["none"], spans
    """
)


def test_the_global_tracer_provider_may_be_set_after_install() -> None:
    # The global provider can be set once per process: in a process of its own.
    subprocess.run([sys.executable, "-c", GLOBAL_PROVIDER_SET_LATER], check=True)


# Through real requests: these need the throttles to report their decisions (traffik.events).


@pytest.mark.anyio
async def test_requests_are_recorded(telemetry: Telemetry) -> None:
    otel.install(telemetry.meter_provider, telemetry.tracer_provider)
    throttle = HTTPThrottle("otel:items", rate="2/min", backend=InMemoryBackend())
    app = FastAPI()

    @app.get("/items")
    async def items(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        statuses = [(await client.get("/items")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    decisions = telemetry.points("traffik.decisions")
    assert decisions[attributes(throttle="otel:items", outcome="allowed")].value == 2
    assert decisions[attributes(throttle="otel:items", outcome="refused")].value == 1
    spans = telemetry.exporter.get_finished_spans()
    assert [(span.attributes or {})["traffik.outcome"] for span in spans] == [
        "allowed",
        "allowed",
        "refused",
    ]
    assert [(span.attributes or {})["traffik.remaining"] for span in spans] == [1, 0, 0]
