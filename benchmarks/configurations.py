"""What a throttle's configuration adds to a request, in memory: an identifier of its own, several rates.

The benchmark's FastAPI endpoint with no limiter, behind a no-op dependency, and behind an
in-memory throttle configured each way a user commonly configures one:

- one rate, the socket peer as the client (the default: what the main run measures);
- one rate, an identifier of its own (an API key read from a header);
- two rates (`"…/d;…/h"`, decided as one: `docs/multiple-limits.md`);
- two rates and an identifier;
- a rate callable (a client's plan), and a cost callable;
- two such throttles on one store decided as one (`traffik.fastapi.throttled(a, b)` as a
  dependency).

Each for `FixedWindow` (a window counter) and `TokenBucket` (a state), `CLIENTS` clients in
turn, a limit nobody reaches. Blocks are interleaved repetition after repetition
(`benchmarks.timing.measure`) and timed in CPU time; a figure is µs per request over no
limiter, and `x no-op` that over the no-op dependency's, within each repetition. No
target: these say what a configuration costs next to the default one.

`python -m benchmarks.configurations [--quick | --smoke]` prints the table on its own.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional

from benchmarks.apps import dependency_app, noop, plain_app
from benchmarks.asgi import _SCOPE, scoped_target
from benchmarks.settings import Settings, mode_of, report_rows
from benchmarks.timing import CPU_TIME, Spread, measure, spread
from traffik import HTTPThrottle, InMemoryBackend
from traffik.strategies import FixedWindow, TokenBucket

__all__ = ["CLIENTS", "CONFIGURATIONS", "Configuration", "markdown", "report", "run"]

CLIENTS = 1000
"""Clients, each one request in turn."""
_MIN_REPETITIONS = 15
_DAY, _HOUR = "40000000/d", "4000000/h"
"""Rates nobody reaches, within `TokenBucket`'s exact range."""


def _tier(request: Any, context: Any) -> str:
    """A rate callable: the client's plan's rates (every client on one plan here)."""
    return _DAY


def _size(request: Any, context: Any) -> int:
    """A cost callable: what the request costs (one unit here)."""
    return 1


CONFIGURATIONS: dict[str, tuple[Any, bool, Any]] = {
    "one rate": (_DAY, False, 1),
    "one rate, an identifier": (_DAY, True, 1),
    "two rates": (f"{_DAY};{_HOUR}", False, 1),
    "two rates, an identifier": (f"{_DAY};{_HOUR}", True, 1),
    "a rate callable": (_tier, False, 1),
    "a cost callable": (_DAY, False, _size),
    "two throttles as one": (_DAY, False, 1),
}
"""Each configuration's rate, whether it has an identifier of its own, and its cost (the
last: two such throttles on one store in one `traffik.fastapi.throttled(a, b)` dependency)."""
TOGETHER = "two throttles as one"
_STRATEGIES = {"FixedWindow": FixedWindow, "TokenBucket": TokenBucket}


@dataclass
class Configuration:
    """One configuration of one strategy: µs per request over no limiter, and that as a
    multiple of the no-op dependency's (median over repetitions, min-max)."""

    strategy: str
    configuration: str
    overhead_us: Spread
    x_noop: Spread


def _api_key(request: Any) -> str:
    """The identifier: the client's API key."""
    return str(request.headers["x-api-key"])


def _scope(i: int) -> dict[str, Any]:
    """Request i, from client `i % CLIENTS`: its own peer address and API key."""
    n = i % CLIENTS
    headers = [*_SCOPE["headers"], (b"x-api-key", b"key-%d" % n)]
    return {**_SCOPE, "client": (f"10.1.{n >> 8}.{n & 255}", 40000), "headers": headers}


def _app(strategy: str, configuration: str) -> Any:
    """The endpoint behind the configuration's throttle (or throttles)."""
    if configuration != TOGETHER:
        return dependency_app(_throttle(strategy, configuration))
    from fastapi import FastAPI

    from traffik.fastapi import throttled

    store = InMemoryBackend()  # (one store: their hits are one step there)
    pair = [_throttle(strategy, configuration, name, store) for name in ("a", "b")]
    app = FastAPI()

    @app.get("/", response_model=None, dependencies=[throttled(*pair)])
    async def endpoint() -> dict[str, bool]:
        return {"ok": True}

    return app


def _throttle(
    strategy: str, configuration: str, name: str = "", store: Optional[InMemoryBackend] = None
) -> HTTPThrottle:
    rate, identified, cost = CONFIGURATIONS[configuration]
    return HTTPThrottle(
        f"bench:configuration:{strategy}:{configuration}{name}",
        rate=rate,
        backend=InMemoryBackend() if store is None else store,
        strategy=_STRATEGIES[strategy](),
        identifier=_api_key if identified else None,
        cost=cost,
    )


async def run(settings: Settings) -> list[Configuration]:
    """Every strategy and configuration, against no limiter and the no-op dependency."""
    targets = [
        scoped_target("no limiter", plain_app(), _scope),
        scoped_target("no-op", dependency_app(noop), _scope),
    ]
    for strategy in _STRATEGIES:
        for configuration in CONFIGURATIONS:
            app = _app(strategy, configuration)
            targets.append(scoped_target(f"{strategy}|{configuration}", app, _scope))
    repetitions = (
        settings.repetitions
        if settings.mode == "smoke"
        else max(settings.repetitions, _MIN_REPETITIONS)
    )
    samples = await measure(
        targets, settings.requests, 1, repetitions, settings.warmup + CLIENTS, CPU_TIME
    )
    statuses = {target.name: dict(target.statuses) for target in targets}
    if any(set(counts) != {200} for counts in statuses.values()):
        raise RuntimeError(f"the configuration benchmark's apps must answer 200 only: {statuses}")
    typical = samples.typical
    base, floor = typical["no limiter"], typical["no-op"]
    rows = []
    for strategy in _STRATEGIES:
        for configuration in CONFIGURATIONS:
            values = typical[f"{strategy}|{configuration}"]
            over = [v - b for v, b in zip(values, base)]
            ratios = [(v - b) / (f - b) for v, b, f in zip(values, base, floor) if f > b]
            rows.append(
                Configuration(
                    strategy,
                    configuration,
                    spread(over, 1 / 1000),
                    spread(ratios or [float("nan")]),
                )
            )
    return rows


def markdown(rows: list[Configuration]) -> str:
    lines = [
        "### What a configuration costs (in memory, µs per request over no limiter, CPU time)\n",
        "| strategy | configuration | overhead | x no-op dependency |",
        "|---|---|---|---|",
    ]
    for row in rows:
        over, ratio = row.overhead_us, row.x_noop
        lines.append(
            f"| {row.strategy} | {row.configuration} | {over['median']:.2f} "
            f"({over['min']:.2f}-{over['max']:.2f}) | {ratio['median']:.2f} |"
        )
    lines.append(
        f"\n{CLIENTS:,} clients in turn; the identifier reads an API key from a header; two "
        "rates are decided as one."
    )
    return "\n".join(lines)


def report(mode: str) -> list[dict[str, Any]]:
    """Measure in `mode`, print the table, and return the rows for the JSON document."""
    return report_rows(run, markdown, mode)


if __name__ == "__main__":
    report(mode_of(sys.argv))
