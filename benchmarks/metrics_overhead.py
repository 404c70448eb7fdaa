"""What exporting decisions to Prometheus adds to a request: metrics on vs off, in memory.

One FastAPI app per workload, behind an in-memory `FixedWindow` `HTTPThrottle`, is timed
with and without `traffik.metrics.prometheus` installed (on a registry of its own), blocks
interleaved repetition after repetition as in the main benchmark; the overhead is on - off
within each repetition, in CPU time. With no observer a decision builds no event, so "off"
is the throttle as it runs in production without metrics. A request takes some 100 µs
and varies by a few µs from block to block, so the difference needs many repetitions (at
least 25 here); the observer alone (building a `DecisionEvent` and exporting it, timed over
many calls) is shown too, as the part of the overhead that is precise.

`python -m benchmarks.metrics_overhead [--quick | --smoke]` prints the table on its own.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from benchmarks.apps import dependency_app
from benchmarks.asgi import Target, asgi_target, clients
from benchmarks.settings import Settings, mode_of, report_rows
from benchmarks.targets import printed
from benchmarks.timing import CPU_TIME, Spread, run_block, spread
from traffik import HTTPThrottle, InMemoryBackend

__all__ = ["TARGET_US", "Overhead", "markdown", "measure", "report"]

TARGET_US = 2.0
"""Issue 15: metrics on costs at most 2 µs more per request than metrics off."""

_MIN_REPETITIONS = 25
_CALLS = 10_000
"""Observer calls per timed block of the observer alone."""

_WORKLOADS = {
    # workload: (rate, clients); a 1/h key is spent by the warm-up, so every timed request is refused
    "allowed": ("1000000000/h", 1000),
    "refused": ("1/h", 10),
}


@dataclass
class Overhead:
    """One workload: µs per request off and on (median of block medians, min-max), and on - off."""

    workload: str
    off_us: Spread
    on_us: Spread
    overhead_us: Spread
    observer_us: Spread
    statuses: dict[int, int]
    target_us: float = TARGET_US
    met: Optional[bool] = None


def _target(name: str, workload: str, peers: int, rate: str) -> Target:
    throttle = HTTPThrottle(f"bench:metrics:{workload}", rate=rate, backend=InMemoryBackend())
    return asgi_target(name, dependency_app(throttle), clients(peers))


def _observer_alone(observer: Callable[[Any], Any], outcome: str, repetitions: int) -> Spread:
    """µs per `observer(DecisionEvent(...))`, event built as a throttle builds it."""
    from traffik.events import DecisionEvent

    throttle = HTTPThrottle("bench:metrics:alone", rate="1/h")
    backend = InMemoryBackend()
    rates = (throttle.rate,)
    per_call = []
    for _ in range(repetitions):
        gc.disable()
        began = CPU_TIME()
        for _ in range(_CALLS):
            observer(
                DecisionEvent(
                    throttle, None, "key", rates, rates[0], outcome, 0.0, 0, backend, 0.00001
                )
            )
        per_call.append((CPU_TIME() - began) / _CALLS / 1000)
        gc.enable()
    return spread(per_call)


async def _one(workload: str, settings: Settings) -> Overhead:
    from prometheus_client import CollectorRegistry

    from traffik.metrics import prometheus

    rate, peers = _WORKLOADS[workload]
    registry = CollectorRegistry()
    off = _target("off", workload, peers, rate)
    on = _target("on", workload, peers, rate)
    states: list[tuple[Target, Callable[[], Any]]] = [
        (off, lambda: prometheus.uninstall(registry)),
        (on, lambda: prometheus.install(registry)),
    ]
    n = settings.requests
    repetitions = (
        settings.repetitions
        if settings.mode == "smoke"
        else max(settings.repetitions, _MIN_REPETITIONS)
    )
    times: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for target, switch in states:
            switch()
            await run_block(target, settings.warmup, 1, CPU_TIME)
            target.statuses.clear()
        for rep in range(repetitions):
            for target, switch in states[rep % 2 :] + states[: rep % 2]:
                switch()
                gc.collect(0)
                gc.disable()
                try:
                    block = await run_block(target, n, 1, CPU_TIME)
                finally:
                    gc.enable()
                block.sort()
                times[target.name].append(block[len(block) // 2] / 1000)
        alone = _observer_alone(prometheus.install(registry), workload, repetitions)
    finally:
        prometheus.uninstall(registry)
    overhead = spread([a - b for a, b in zip(times["on"], times["off"])])
    return Overhead(
        workload,
        spread(times["off"]),
        spread(times["on"]),
        overhead,
        alone,
        dict(sorted((off.statuses + on.statuses).items())),
        met=printed(overhead["median"]) <= TARGET_US,
    )


async def measure(settings: Settings) -> list[Overhead]:
    """Every workload, metrics on vs off; empty when prometheus-client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return []
    return [await _one(workload, settings) for workload in _WORKLOADS]


def markdown(rows: list[Overhead]) -> str:
    head = "### Metrics on vs off (in memory, FixedWindow, µs per request, CPU time)\n\n"
    if not rows:
        return (
            head
            + 'Not measured: prometheus-client is not installed (`pip install "traffik-core[prometheus]"`).'
        )
    lines = [
        "| workload | metrics off | metrics on | overhead | target | | event + observer alone |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [_us(row.off_us), _us(row.on_us), _us(row.overhead_us)]
        verdict = "met" if row.met else "**MISSED**"
        lines.append(
            f"| {row.workload} | {' | '.join(cells)} | <= {row.target_us:g} | {verdict} "
            f"| {_us(row.observer_us)} |"
        )
    return head + "\n".join(lines)


def _us(value: Spread) -> str:
    return f"{value['median']:.2f} ({value['min']:.2f}-{value['max']:.2f})"


def report(mode: str) -> list[dict[str, Any]]:
    """Measure in `mode`, print the table, and return the rows for the JSON document."""
    return report_rows(measure, markdown, mode)


if __name__ == "__main__":
    report(mode_of(sys.argv))
