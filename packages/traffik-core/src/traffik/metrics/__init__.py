"""Metrics for throttle decisions, exported to Prometheus or OpenTelemetry.

`traffik.metrics.prometheus` (`pip install "traffik-core[prometheus]"`) and
`traffik.metrics.opentelemetry` (`pip install "traffik-core[opentelemetry]"`) are observers of
`traffik.events`: each is imported only when asked for, so the core needs neither library.
"""

from __future__ import annotations

__all__ = ["DURATION_SECONDS"]

DURATION_SECONDS = (
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Histogram bounds of a decision's duration, in seconds, for both exporters: from an
in-memory decision (tens of µs) to a store timing out."""
