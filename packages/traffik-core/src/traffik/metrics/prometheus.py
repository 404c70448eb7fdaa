"""Prometheus metrics for every throttle decision: `install()` once per process, then scrape.

`install()` adds an observer (`traffik.events`) that exports, on the default registry or the
one given:

- `traffik_decisions_total{throttle, outcome}`: decisions by throttle uid and outcome
  (`allowed`, `refused`, `shadow_refused`, `error`);
- `traffik_decision_duration_seconds{backend}`: how long decisions took, store round trip
  included, by backend class (`InMemoryBackend`, `RedisBackend`, ...);
- `traffik_backend_errors_total{backend, error}`: failed decisions by backend class and
  exception class (`CircuitOpenError` while a store's circuit is open).

In a single process the observer counts in plain Python numbers and hands them to Prometheus
when it is scraped (it is a collector), so a decision pays about a microsecond. Counts made by
several threads at the same instant may, rarely, lose one; an event loop's own are exact.

Under prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR` set before the app
starts) collectors are not shared between processes, so the observer writes through
prometheus-client's own `Counter` and `Histogram` instead, and the scrape endpoint serves
`multiprocess.MultiProcessCollector` as prometheus-client documents. The series are the same.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.utils import floatToGoString
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the library
    raise ImportError(
        "traffik.metrics.prometheus needs prometheus-client, which is not installed; "
        'install it with `pip install "traffik-core[prometheus]"`'
    ) from exc

from traffik.events import DecisionEvent, add_observer, remove_observer
from traffik.metrics import DURATION_SECONDS
from traffik.metrics._labels import backend_label, class_label, throttle_label

__all__ = ["DURATION_BUCKETS", "PrometheusObserver", "install", "uninstall"]

DURATION_BUCKETS = DURATION_SECONDS
"""The histogram's bounds in seconds (`traffik.metrics.DURATION_SECONDS`)."""

_DECISIONS = ("traffik_decisions", "Throttle decisions, by throttle uid and outcome.")
_DURATION = ("traffik_decision_duration_seconds", "Time a decision took, by backend class.")
_ERRORS = ("traffik_backend_errors", "Failed decisions, by backend class and exception class.")
_DECISION_LABELS = ("throttle", "outcome")
_DURATION_LABELS = ("backend",)
_ERROR_LABELS = ("backend", "error")


def _multiprocess() -> bool:
    """The test prometheus-client itself makes to choose its multiprocess values."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ


def _bounds(buckets: Iterable[float]) -> tuple[float, ...]:
    bounds = tuple(sorted(float(bound) for bound in buckets))
    if not bounds or bounds[0] <= 0 or len(set(bounds)) != len(bounds):
        raise ValueError(
            f"buckets={tuple(buckets)!r}: give distinct upper bounds in seconds, all above 0"
        )
    return bounds


class PrometheusObserver:
    """Exports each `DecisionEvent` it is called with; `install()` makes one per registry."""

    def __call__(self, event: DecisionEvent) -> None:
        raise NotImplementedError

    def _unregister(self, registry: CollectorRegistry) -> None:
        raise NotImplementedError


class _CountingObserver(PrometheusObserver):
    """Counts in this process and is the registry's collector for the three metrics."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self._bounds = _bounds(buckets)
        self._decisions: dict[tuple[str, str], int] = {}
        self._uids: set[str] = set()
        self._durations: dict[type, list[float]] = {}
        """Per backend class: a count per bucket (the last one +Inf), then the sum."""
        self._errors: defaultdict[tuple[type, type], int] = defaultdict(int)
        registry.register(self)

    def __call__(self, event: DecisionEvent) -> None:
        decisions = self._decisions
        key = (event.throttle.uid, event.outcome)
        count = decisions.get(key)
        if count is None:  # (a new series: its uid is bounded, `throttle_label`)
            key = (throttle_label(key[0], self._uids), key[1])
            count = decisions.get(key, 0)
        decisions[key] = count + 1
        backend = type(event.backend)
        try:
            tally = self._durations[backend]
        except KeyError:
            tally = self._durations[backend] = [0.0] * (len(self._bounds) + 2)
        duration = event.duration_s
        tally[bisect_left(self._bounds, duration)] += 1
        tally[-1] += duration
        if event.error is not None:
            self._errors[backend, type(event.error)] += 1

    def _unregister(self, registry: CollectorRegistry) -> None:
        registry.unregister(self)

    def describe(self) -> list[Metric]:
        """The three families, empty: the registry checks their names for clashes."""
        return [
            CounterMetricFamily(*_DECISIONS, labels=_DECISION_LABELS),
            HistogramMetricFamily(*_DURATION, labels=_DURATION_LABELS),
            CounterMetricFamily(*_ERRORS, labels=_ERROR_LABELS),
        ]

    def collect(self) -> Iterator[Metric]:
        """The counts so far, read when Prometheus scrapes."""
        decisions = CounterMetricFamily(*_DECISIONS, labels=_DECISION_LABELS)
        for (uid, outcome), count in list(self._decisions.items()):
            decisions.add_metric((str(uid), outcome), count)
        yield decisions
        yield self._collect_durations()
        errors = CounterMetricFamily(*_ERRORS, labels=_ERROR_LABELS)
        merged: dict[tuple[str, str], int] = {}
        for (backend, error), count in list(self._errors.items()):
            labels = (class_label(backend), error.__name__)
            merged[labels] = merged.get(labels, 0) + count
        for labels, count in merged.items():
            errors.add_metric(labels, count)
        yield errors

    def _collect_durations(self) -> HistogramMetricFamily:
        merged: dict[str, list[float]] = {}  # two backend classes may share a name
        for backend, tally in list(self._durations.items()):
            into = merged.setdefault(class_label(backend), [0.0] * len(tally))
            for i, value in enumerate(list(tally)):
                into[i] += value
        family = HistogramMetricFamily(*_DURATION, labels=_DURATION_LABELS)
        les = [floatToGoString(bound) for bound in (*self._bounds, float("inf"))]
        for name, tally in merged.items():
            cumulative = 0.0
            buckets = []
            for le, count in zip(les, tally):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric((name,), buckets, sum_value=tally[-1])
        return family


class _SharedObserver(PrometheusObserver):
    """Writes through prometheus-client's metrics, which multiprocess mode shares on disk."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self._decisions = Counter(*_DECISIONS, _DECISION_LABELS, registry=registry)
        self._durations = Histogram(
            *_DURATION, _DURATION_LABELS, registry=registry, buckets=_bounds(buckets)
        )
        self._errors = Counter(*_ERRORS, _ERROR_LABELS, registry=registry)
        self._children: dict[Any, Any] = {}
        self._uids: set[str] = set()

    def __call__(self, event: DecisionEvent) -> None:
        children = self._children
        key = (event.throttle.uid, event.outcome)
        counter = children.get(key)
        if counter is None:
            uid = throttle_label(key[0], self._uids)
            counter = self._decisions.labels(uid, key[1])
            if uid == key[0]:  # (a uid past the bound is not remembered: it is looked up again)
                children[key] = counter
        counter.inc()
        backend = backend_label(event.backend)
        histogram = children.get(backend)
        if histogram is None:
            histogram = children[backend] = self._durations.labels(backend)
        histogram.observe(event.duration_s)
        if event.error is not None:
            self._errors.labels(backend, type(event.error).__name__).inc()

    def _unregister(self, registry: CollectorRegistry) -> None:
        for metric in (self._decisions, self._durations, self._errors):
            registry.unregister(metric)


_installed: list[tuple[CollectorRegistry, PrometheusObserver]] = []


def install(
    registry: Optional[CollectorRegistry] = None, *, buckets: Sequence[float] = DURATION_BUCKETS
) -> PrometheusObserver:
    """Export every decision of this process to `registry` (prometheus-client's default one).

    Installing again on the same registry returns the observer already there (`buckets`
    then changes nothing). The observer can also be given to one throttle alone, as
    `HTTPThrottle(on_decision=observer)`, without installing it.
    """
    registry = REGISTRY if registry is None else registry
    for known, observer in _installed:
        if known is registry:
            add_observer(observer)
            return observer
    made: PrometheusObserver = (_SharedObserver if _multiprocess() else _CountingObserver)(
        registry, buckets
    )
    _installed.append((registry, made))
    add_observer(made)
    return made


def uninstall(registry: Optional[CollectorRegistry] = None) -> None:
    """Stop exporting to `registry` (the default one) and remove the metrics from it.

    A later `install()` starts them again from zero, which Prometheus reads as a restart.
    Nothing happens when nothing was installed there.
    """
    registry = REGISTRY if registry is None else registry
    for i, (known, observer) in enumerate(_installed):
        if known is registry:
            del _installed[i]
            remove_observer(observer)
            observer._unregister(registry)
            return
