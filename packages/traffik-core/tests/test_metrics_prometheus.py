"""traffik.metrics.prometheus: the series it exports, install/uninstall, multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import httpx
import pytest

pytest.importorskip("prometheus_client")

from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from traffik import HTTPThrottle, InMemoryBackend
from traffik.events import DecisionEvent, observers
from traffik.exceptions import BackendConnectionError, CircuitOpenError
from traffik.metrics import prometheus
from traffik.rates import Rate


def decision(
    outcome: str = "allowed",
    uid: str = "api",
    backend: Any = "memory",
    duration_s: float = 0.00004,
    error: Optional[BaseException] = None,
) -> DecisionEvent:
    return DecisionEvent(
        throttle=SimpleNamespace(uid=uid),
        connection=None,
        key="api:127.0.0.1",
        rates=(Rate.parse("2/min"),),
        rate=Rate.parse("2/min"),
        outcome=outcome,
        wait_ms=0.0 if outcome == "allowed" else 30_000.0,
        remaining=1,
        backend=InMemoryBackend() if backend == "memory" else backend,
        duration_s=duration_s,
        error=error,
    )


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the text exposition, by name and labels."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    yield registry
    prometheus.uninstall(registry)


def test_decisions_by_throttle_and_outcome(registry: CollectorRegistry) -> None:
    observer = prometheus.install(registry)
    for event in [decision(), decision(), decision("refused"), decision("allowed", uid="ws")]:
        observer(event)
    found = samples(registry)
    assert value(found, "traffik_decisions_total", throttle="api", outcome="allowed") == 2
    assert value(found, "traffik_decisions_total", throttle="api", outcome="refused") == 1
    assert value(found, "traffik_decisions_total", throttle="ws", outcome="allowed") == 1


def test_durations_by_backend_class(registry: CollectorRegistry) -> None:
    observer = prometheus.install(registry)
    observer(decision(duration_s=0.00002))
    observer(decision(duration_s=0.0003))
    observer(decision(duration_s=30.0))  # past the last bound: only +Inf
    found = samples(registry)
    name = "traffik_decision_duration_seconds"

    def bucket(le: str) -> float:
        return value(found, f"{name}_bucket", backend="InMemoryBackend", le=le)

    assert [bucket("2.5e-05"), bucket("0.00025"), bucket("0.0005"), bucket("2.5")] == [1, 1, 2, 2]
    assert bucket("+Inf") == 3
    assert value(found, f"{name}_count", backend="InMemoryBackend") == 3
    assert value(found, f"{name}_sum", backend="InMemoryBackend") == pytest.approx(30.00032)


def test_backend_errors_by_exception_class(registry: CollectorRegistry) -> None:
    observer = prometheus.install(registry)
    observer(decision("error", error=CircuitOpenError("redis down")))
    observer(decision("error", error=CircuitOpenError("redis down")))
    observer(decision("error", error=BackendConnectionError("timed out")))
    observer(decision("error", backend=None, error=RuntimeError("no backend")))
    found = samples(registry)
    errors = "traffik_backend_errors_total"
    assert value(found, errors, backend="InMemoryBackend", error="CircuitOpenError") == 2
    assert value(found, errors, backend="InMemoryBackend", error="BackendConnectionError") == 1
    assert value(found, errors, backend="InMemoryBackend", error="RuntimeError") == 0
    assert value(found, errors, backend="none", error="RuntimeError") == 1
    assert value(found, "traffik_decisions_total", throttle="api", outcome="error") == 4


def test_install_is_idempotent_and_uninstall_undoes_it(registry: CollectorRegistry) -> None:
    first = prometheus.install(registry)
    assert prometheus.install(registry) is first
    assert observers().count(first) == 1
    first(decision())
    prometheus.uninstall(registry)
    assert first not in observers()
    assert "traffik_decisions" not in generate_latest(registry).decode()
    prometheus.uninstall(registry)  # nothing installed: nothing happens
    again = prometheus.install(registry)
    assert again is not first and again in observers()
    assert (
        value(samples(registry), "traffik_decisions_total", throttle="api", outcome="allowed") == 0
    )


def test_a_name_clash_in_the_registry_is_refused(registry: CollectorRegistry) -> None:
    from prometheus_client import Counter

    Counter("traffik_decisions", "someone else's", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        prometheus.install(registry)


def test_bad_buckets_are_refused(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="distinct upper bounds"):
        prometheus.install(registry, buckets=(0.1, 0.1))


MULTIPROCESS_WORKER = textwrap.dedent(
    """
    import sys
    from types import SimpleNamespace
    from traffik import InMemoryBackend
    from traffik.events import DecisionEvent, observers
    from traffik.metrics import prometheus

    observer = prometheus.install()
    assert observer in observers()
    for outcome in sys.argv[1:]:
        observer(DecisionEvent(SimpleNamespace(uid="api"), None, "k", None, None, outcome,
                               0.0, None, InMemoryBackend(), 0.0001))
    """
)


def test_multiprocess_mode_adds_up_every_process(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for outcomes in (["allowed", "allowed", "refused"], ["allowed", "refused"]):
        subprocess.run([sys.executable, "-c", MULTIPROCESS_WORKER, *outcomes], env=env, check=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    found = samples(registry)
    assert value(found, "traffik_decisions_total", throttle="api", outcome="allowed") == 3
    assert value(found, "traffik_decisions_total", throttle="api", outcome="refused") == 2
    count = "traffik_decision_duration_seconds_count"
    assert value(found, count, backend="InMemoryBackend") == 5


# Through real requests: these need the throttles to report their decisions (traffik.events).


def app_with(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.get("/items")
    async def items(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.mark.anyio
async def test_requests_are_counted(registry: CollectorRegistry) -> None:
    prometheus.install(registry)
    throttle = HTTPThrottle("metrics:items", rate="2/min", backend=InMemoryBackend())
    transport = httpx.ASGITransport(app=app_with(throttle))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        statuses = [(await client.get("/items")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    found = samples(registry)
    decided = "traffik_decisions_total"
    assert value(found, decided, throttle="metrics:items", outcome="allowed") == 2
    assert value(found, decided, throttle="metrics:items", outcome="refused") == 1
    count = "traffik_decision_duration_seconds_count"
    assert value(found, count, backend="InMemoryBackend") == 3


@pytest.mark.anyio
async def test_a_failing_backend_is_counted(registry: CollectorRegistry) -> None:
    from traffik.testing import FailingBackend

    prometheus.install(registry)
    backend = FailingBackend(InMemoryBackend())
    throttle = HTTPThrottle("metrics:failing", rate="2/min", backend=backend, on_error="allow")
    transport = httpx.ASGITransport(app=app_with(throttle))
    with backend.failing(BackendConnectionError("down")):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/items")).status_code == 200
    found = samples(registry)
    assert value(found, "traffik_decisions_total", throttle="metrics:failing", outcome="error") == 1
    errors = [
        count
        for (name, labels), count in found.items()
        if name == "traffik_backend_errors_total" and ("error", "BackendConnectionError") in labels
    ]
    assert errors == [1]
