"""Metrics for throttle decisions, exported to Prometheus or OpenTelemetry.

`traffik.metrics.prometheus` (`pip install "traffik-core[prometheus]"`) and
`traffik.metrics.opentelemetry` (`pip install "traffik-core[opentelemetry]"`) are observers of
`traffik.events`: each is imported only when asked for, so the core needs neither library.
"""

from __future__ import annotations

__all__: list[str] = []
