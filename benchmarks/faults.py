"""`python -m benchmarks --faults`: request latency while the store is frozen, with and without its circuit.

For Redis and Memcached (each started locally for the run: a server from the environment
cannot be frozen), one throttled app per variant, `WORKERS` clients each sending one request
after another. The server is frozen (SIGSTOP) for a while, then thawed. Reported per store and
variant: the requests started after the first second of the freeze (p50, p90, p99, max, all
answered by `on_error="throttle"`), and how long after the thaw the store decided again.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

from fastapi import Depends, FastAPI, Request

from benchmarks import servers
from benchmarks.asgi import asgi_target, clients
from traffik import HTTPThrottle
from traffik.backends.base import ThrottleBackend
from traffik.testing.processes import freeze, thaw

__all__ = ["FAULT_MODES", "FaultRow", "run_faults"]

WORKERS = 16
_ENV = {"redis": "TRAFFIK_REDIS_URL", "memcached": "TRAFFIK_MEMCACHED_URL"}


@dataclass(frozen=True)
class FaultMode:
    """Seconds of traffic before the freeze, of the freeze, and after the thaw."""

    before: float
    frozen: float
    after: float


FAULT_MODES = {
    "full": FaultMode(1.0, 5.0, 2.0),
    "quick": FaultMode(0.5, 3.0, 1.5),
    "smoke": FaultMode(0.3, 1.5, 1.0),
}


@dataclass
class FaultRow:
    store: str
    circuit: bool
    requests: int
    """Requests started between the first second of the freeze and the thaw."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    per_second: float
    statuses: dict[int, int]
    recovery_ms: Optional[float]
    """From the thaw to the end of the first request the store decided (a 200)."""


def _backend(store: str, url: str, circuit: bool) -> ThrottleBackend:
    if store == "redis":
        from traffik.backends.redis import RedisBackend

        return RedisBackend(url, namespace="bench-faults", circuit=circuit)
    from traffik.backends.memcached import MemcachedBackend

    return MemcachedBackend(url, namespace="bench-faults", circuit=circuit)


def _app(backend: ThrottleBackend) -> FastAPI:
    throttle = HTTPThrottle("faults", "1000000/hour", backend=backend, on_error="throttle")
    app = FastAPI()

    @app.get("/")
    async def root(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    return app


async def _variant(store: str, server: servers.Server, circuit: bool, mode: FaultMode) -> FaultRow:
    backend = _backend(store, server.url, circuit)
    app = _app(backend)
    peers = clients(WORKERS * 4)
    targets = [asgi_target(f"faults-{n}", app, peers) for n in range(WORKERS)]
    samples: list[tuple[float, float, bool]] = []
    """(started, seconds, decided by the store) per request."""
    running = True

    async def worker(n: int) -> None:
        target, i = targets[n], n
        while running:
            admitted = target.statuses[200]
            started = time.monotonic()
            await target.one(i)
            samples.append((started, time.monotonic() - started, target.statuses[200] > admitted))
            i += WORKERS
            await asyncio.sleep(0)

    def statuses() -> dict[int, int]:
        total: dict[int, int] = {}
        for target in targets:
            for status, count in target.statuses.items():
                total[status] = total.get(status, 0) + count
        return total

    assert server.process is not None
    try:
        await backend.initialize()
        workers = [asyncio.ensure_future(worker(n)) for n in range(WORKERS)]
        await asyncio.sleep(mode.before)
        counts_before = statuses()
        freeze(server.process)
        frozen_at = time.monotonic()
        await asyncio.sleep(mode.frozen)
        thaw(server.process)
        thawed_at = time.monotonic()
        counts_frozen = {k: v - counts_before.get(k, 0) for k, v in statuses().items()}
        await asyncio.sleep(mode.after)
        running = False
        await asyncio.gather(*workers)
    finally:
        thaw(server.process)
        await backend.close()
    measured = sorted(s[1] for s in samples if frozen_at + 1.0 <= s[0] < thawed_at)
    cuts = statistics.quantiles(measured, n=100) if len(measured) > 1 else [measured[0]] * 99
    back = [s[0] + s[1] - thawed_at for s in samples if s[0] >= thawed_at and s[2]]
    return FaultRow(
        store,
        circuit,
        len(measured),
        cuts[49] * 1000,
        cuts[89] * 1000,
        cuts[98] * 1000,
        measured[-1] * 1000,
        len(measured) / max(mode.frozen - 1.0, 1e-9),
        {k: v for k, v in sorted(counts_frozen.items()) if v},
        back[0] * 1000 if back else None,
    )


async def run_faults(mode_name: str, stores: list[str]) -> tuple[list[FaultRow], dict[str, str]]:
    """Every variant on every store of `stores` that is Redis or Memcached; the rows and why a
    store was not measured."""
    mode = FAULT_MODES[mode_name]
    rows: list[FaultRow] = []
    skipped: dict[str, str] = {}
    for store in [s for s in stores if s in ("redis", "memcached")]:
        if os.environ.get(_ENV[store]):
            skipped[store] = f"${_ENV[store]} is set: freezing needs a server of the run's own"
            continue
        try:
            server = servers.start(store)
        except servers.ServerUnavailable as exc:
            skipped[store] = str(exc)
            continue
        try:
            for circuit in (True, False):
                rows.append(await _variant(store, server, circuit, mode))
        finally:
            server.stop()
    return rows, skipped


def _ms(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2f}"


def report(rows: list[FaultRow], skipped: dict[str, str], mode_name: str) -> str:
    """The Markdown table, then why stores were skipped."""
    mode = FAULT_MODES[mode_name]
    lines = [
        f"## A frozen store ({mode.frozen:g} s, {WORKERS} clients one request after another)",
        "",
        "Requests started from the first second of the freeze to the thaw, all answered by "
        '`on_error="throttle"`; recovery: from the thaw to the first decision by the store.',
        "",
        "| store | circuit | requests | per s | p50 ms | p90 ms | p99 ms | max ms | statuses while frozen | recovery ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.store} | {'on' if row.circuit else 'off'} | {row.requests} | "
            f"{row.per_second:.0f} | {_ms(row.p50_ms)} | {_ms(row.p90_ms)} | {_ms(row.p99_ms)} | "
            f"{_ms(row.max_ms)} | {row.statuses} | {_ms(row.recovery_ms)} |"
        )
    for store, reason in skipped.items():
        lines.append(f"\n{store}: not measured ({reason})")
    return "\n".join(lines)


def as_json(rows: list[FaultRow], skipped: dict[str, str], mode_name: str) -> str:
    doc: dict[str, Any] = {
        "mode": mode_name,
        "settings": asdict(FAULT_MODES[mode_name]),
        "workers": WORKERS,
        "rows": [asdict(row) for row in rows],
        "skipped": skipped,
    }
    return json.dumps(doc, indent=2)
