"""`python -m benchmarks --real-server`: requests per second of one uvicorn worker, with and without a throttle.

The same FastAPI endpoint as the ASGI benchmark (`benchmarks.apps`) is served by one uvicorn
worker (uvloop and httptools when installed, as `uvicorn[standard]` has them; no access log)
on a free loopback port, in five variants: no limiter, behind a no-op FastAPI dependency
(what `Depends` alone costs: the bound on any dependency, a throttle included), an
in-memory `FixedWindow` `HTTPThrottle` whose limit nobody reaches (rate-limit headers on,
the default) attached two ways: as the endpoint's dependency, and by `ThrottleMiddleware`
(no `Depends` to pay for), and the hand-fused middleware (`benchmarks.fused`: the same
work written by hand, the bound on any middleware doing it). The load
generator (`benchmarks.http_load`) runs in this process: `CONNECTIONS` keep-alive HTTP/1.1
connections, one request in flight each, for a fixed time after a warm-up. Runs alternate
between the variants (A B C D D C B A ...), so drift on the machine falls on all. Nothing is pinned
to a CPU: on a small shared machine a pinned server waits for whatever else runs on its core
while another core idles. Reported: the median requests per second of each variant and their
ratio (the target is at least `TARGET`), the same ratio over runs side by side, and the CPU
each request cost the server and the load generator (the latter must stay well below the
former for the figure to measure the server).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

from fastapi import FastAPI

from benchmarks.apps import dependency_app, noop, plain_app
from benchmarks.fused import fused_middleware
from benchmarks.http_load import REQUEST, KeepAliveLoad, installed, new_loop
from benchmarks.targets import printed
from traffik import HTTPThrottle, InMemoryBackend
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware

__all__ = [
    "REAL_SERVER_MODES",
    "VARIANTS",
    "ServedRun",
    "Worker",
    "as_dict",
    "as_json",
    "fused_app",
    "measure",
    "middleware_app",
    "noop_app",
    "report",
    "throttled_app",
]

CONNECTIONS = 8
TARGET = 0.9
NOISY = 0.15
"""Runs spread wider than this (interquartile range over median) get a warning in the report."""
HUGE_RATE = "1000000000/min"
_ROOT = Path(__file__).resolve().parents[1]
BASE, DEPENDENCY, THROTTLED = "no limiter", "no-op dependency", "FixedWindow (memory)"
MIDDLEWARE = "FixedWindow (memory, middleware)"
FUSED = "hand-fused middleware (memory)"
VARIANTS = {
    BASE: "benchmarks.apps:plain_app",
    DEPENDENCY: "benchmarks.real_server:noop_app",
    THROTTLED: "benchmarks.real_server:throttled_app",
    MIDDLEWARE: "benchmarks.real_server:middleware_app",
    FUSED: "benchmarks.real_server:fused_app",
}
_READY_SECONDS = 20.0
_DRAIN_SECONDS = 5.0


@dataclass(frozen=True)
class RealServerMode:
    """Seconds of warm-up and of counting per run, and runs per variant."""

    warmup: float
    seconds: float
    runs: int


REAL_SERVER_MODES = {
    "full": RealServerMode(0.5, 2.0, 25),
    "quick": RealServerMode(0.3, 1.0, 9),
    "smoke": RealServerMode(0.2, 0.5, 1),
}
"""Short runs, many of them: a run and the other variant's next one are close in time, so
a neighbour's burst of CPU lands on both."""


def throttled_app() -> FastAPI:
    """The endpoint behind a FixedWindow throttle in memory that never refuses (uvicorn factory)."""
    throttle = HTTPThrottle("real-server", rate=HUGE_RATE, backend=InMemoryBackend())
    return dependency_app(throttle)


def middleware_app() -> FastAPI:
    """The endpoint with no dependency, behind `ThrottleMiddleware` applying the same
    throttle to every request (uvicorn factory)."""
    throttle = HTTPThrottle("real-server", rate=HUGE_RATE, backend=InMemoryBackend())
    app = plain_app()
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(throttle)])
    return app


def fused_app() -> FastAPI:
    """The endpoint with no dependency, behind the hand-fused floor of the middleware's work
    (`benchmarks.fused`) for every request (uvicorn factory)."""
    app = plain_app()
    app.add_middleware(fused_middleware("real-server", HUGE_RATE, "GET:/", "/"))
    return app


def noop_app() -> FastAPI:
    """The endpoint behind a no-op dependency (uvicorn factory)."""
    return dependency_app(noop)


@dataclass
class LoadRun:
    """One run of the load generator against one variant."""

    variant: str
    requests: int
    seconds: float
    statuses: dict[int, int]
    server_cpu_us: Optional[float]
    """Server CPU time per counted request, from /proc; None elsewhere."""
    client_cpu_us: float
    """This process's CPU time per counted request: the load generator's cost."""

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class ServedRun:
    """Every run of a `--real-server` measurement, and how it was set up."""

    mode: str
    meta: dict[str, Any]
    runs: list[LoadRun] = field(default_factory=list)

    def of(self, variant: str) -> list[LoadRun]:
        return [run for run in self.runs if run.variant == variant]

    def median(self, variant: str) -> float:
        return statistics.median(run.per_second for run in self.of(variant))

    def ratio_of(self, variant: str, base: str = BASE) -> float:
        """Median requests per second of `variant` over the median of `base`."""
        below = self.median(base)
        return self.median(variant) / below if below else 0.0

    @property
    def ratio(self) -> float:
        """Median requests per second throttled over median without a limiter."""
        return self.ratio_of(THROTTLED)

    @property
    def paired_ratio(self) -> float:
        """The median, over rounds of runs next to each other in time (one run of each
        variant), of throttled over unlimited."""
        return self.paired_ratio_of(THROTTLED)

    def paired_ratio_of(self, variant: str) -> float:
        """`paired_ratio` for `variant`."""
        ratios = []
        width = len(VARIANTS)
        for start in range(0, len(self.runs) - width + 1, width):
            by_variant = {run.variant: run for run in self.runs[start : start + width]}
            base, limited = by_variant.get(BASE), by_variant.get(variant)
            if base is not None and limited is not None and base.per_second:
                ratios.append(limited.per_second / base.per_second)
        return statistics.median(ratios) if ratios else 0.0

    def spread(self, variant: str) -> Optional[float]:
        """The interquartile range of the runs' requests per second, over their median."""
        rates = [run.per_second for run in self.of(variant)]
        if len(rates) < 4 or not statistics.median(rates):
            return None
        low, _, high = statistics.quantiles(rates, n=4)
        return (high - low) / statistics.median(rates)

    def server_cpu_us(self, variant: str) -> Optional[float]:
        known = [run.server_cpu_us for run in self.of(variant) if run.server_cpu_us is not None]
        return statistics.median(known) if known else None


# -- the server --------------------------------------------------------------------------


def _server_options() -> list[str]:
    loop = "uvloop" if installed("uvloop") else "asyncio"
    http = "httptools" if installed("httptools") else "h11"
    return ["--loop", loop, "--http", http]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """One uvicorn worker serving `app` (a factory path) on a free loopback port; `prefix`
    is a command the worker runs under (`benchmarks.instructions`: callgrind), with `env`
    added to this process's environment, given `ready_seconds` to answer."""

    def __init__(
        self,
        app: str,
        prefix: tuple[str, ...] = (),
        env: Optional[dict[str, str]] = None,
        ready_seconds: float = _READY_SECONDS,
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.env = env
        self.ready_seconds = ready_seconds
        self.port = 0
        self.process: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[IO[bytes]] = None

    def start(self) -> None:
        for _ in range(3):  # another process may take the free port first
            self.port = _free_port()
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by `stop`)
            command = [
                *self.prefix,
                sys.executable,
                "-m",
                "uvicorn",
                self.app,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "warning",
                *_server_options(),
            ]
            self.process = subprocess.Popen(
                command,
                cwd=_ROOT,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=None if self.env is None else {**os.environ, **self.env},
            )
            if self._ready():
                return
            self.stop()
        raise RuntimeError(f"uvicorn serving {self.app} did not start: {self._tail()}")

    def _ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    # (once connected, the answer is waited for: one request, however slow
                    # the worker's first one is, so a count of its work knows how many)
                    sock.settimeout(max(deadline - time.monotonic(), 0.5))
                    sock.sendall(REQUEST)
                    if sock.recv(16).startswith(b"HTTP/1.1 200"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def _tail(self) -> str:
        return self.output()[-500:] or "no output"

    def output(self) -> str:
        """What the worker (and the command it runs under) wrote so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()

    def cpu_seconds(self) -> Optional[float]:
        """CPU time the server's threads have run so far, to the nanosecond (Linux's
        schedstat); None where there is no /proc."""
        if self.process is None:
            return None
        total = 0
        try:
            for task in Path(f"/proc/{self.process.pid}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return total / 1e9

    def stop(self, wait: float = 5.0) -> str:
        """Ends the worker (SIGTERM: uvicorn shuts down cleanly; killed after `wait` s) and
        answers what it wrote."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        written = self.output()
        if self._log is not None:
            self._log.close()
            self._log = None
        return written


async def _drive(server: Worker, variant: str, mode: RealServerMode, connections: int) -> LoadRun:
    load = KeepAliveLoad(server.port, connections)
    await load.open()
    try:
        await asyncio.sleep(mode.warmup)
        server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
        started = time.perf_counter()
        load.counting = True
        await asyncio.sleep(mode.seconds)
        load.counting = False
        seconds = time.perf_counter() - started
        server_after, client_after = server.cpu_seconds(), time.process_time()
    finally:
        await load.close(_DRAIN_SECONDS)
    per = max(load.requests, 1)
    server_us = (
        None
        if server_cpu is None or server_after is None
        else (server_after - server_cpu) / per * 1e6
    )
    return LoadRun(
        variant,
        load.requests,
        seconds,
        dict(load.statuses),
        server_us,
        (client_after - client_cpu) / per * 1e6,
    )


def measure(mode: str, connections: int = CONNECTIONS) -> ServedRun:
    """Both variants served and loaded in turn (A B B A ...), `REAL_SERVER_MODES[mode]` long."""
    settings = REAL_SERVER_MODES[mode]
    import uvicorn

    served = ServedRun(
        mode,
        {
            "uvicorn": uvicorn.__version__,
            "server_options": " ".join(_server_options()),
            "connections": connections,
            "warmup_s": settings.warmup,
            "seconds": settings.seconds,
            "runs_per_variant": settings.runs,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "target_ratio": TARGET,
        },
    )
    servers = {variant: Worker(app) for variant, app in VARIANTS.items()}
    loop = new_loop()
    try:
        for server in servers.values():
            server.start()
        names = list(VARIANTS)
        for index in range(settings.runs):
            for variant in names if index % 2 == 0 else names[::-1]:
                run = _drive(servers[variant], variant, settings, connections)
                served.runs.append(loop.run_until_complete(run))
    finally:
        loop.close()
        for server in servers.values():
            server.stop()
    return served


# -- the report ----------------------------------------------------------------------------


def _met(ratio: float) -> bool:
    """The target, on the ratio as printed (3 decimals)."""
    return printed(ratio, 3) >= TARGET


def _cpu(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def report(served: ServedRun) -> str:
    """The Markdown section: one row per variant, then the ratio against the target."""
    meta = served.meta
    lines = [
        "### One uvicorn worker over loopback HTTP",
        "",
        f"uvicorn {meta['uvicorn']} ({meta['server_options']}, one worker, no access log); "
        f"{meta['connections']} keep-alive connections, one request in flight each; "
        f"{meta['seconds']:g} s counted per run after {meta['warmup_s']:g} s of warm-up, "
        f"{meta['runs_per_variant']} runs per variant, interleaved; {meta['cpus']} CPUs shared "
        "by the server and the load generator.",
        "",
        "| app | median req/s | runs (req/s) | server CPU µs/req | load generator CPU µs/req "
        "| statuses |",
        "|---|---:|---|---:|---:|---|",
    ]
    for variant in VARIANTS:
        runs = served.of(variant)
        statuses: Counter[int] = Counter()
        for run in runs:
            statuses.update(run.statuses)
        lines.append(
            f"| {variant} | {served.median(variant):,.0f} "
            f"| {', '.join(f'{run.per_second:,.0f}' for run in runs)} "
            f"| {_cpu(served.server_cpu_us(variant))} "
            f"| {_cpu(statistics.median(run.client_cpu_us for run in runs))} "
            f"| {', '.join(f'{code}: {n}' for code, n in sorted(statuses.items()))} |"
        )

    def verdict(ratio: float) -> str:
        return "met" if _met(ratio) else "NOT met"

    cpu = {variant: served.server_cpu_us(variant) for variant in VARIANTS}
    middleware = served.ratio_of(MIDDLEWARE)
    lines += [
        "",
        f"FixedWindow / no limiter, as a dependency: **{served.ratio:.3f}** of the requests "
        f"per second, median of each (target ≥ {TARGET}: {verdict(served.ratio)}); "
        f"{served.paired_ratio:.3f} as the median of runs side by side in time. FastAPI's "
        f"`Depends` alone (a no-op dependency / no limiter): {served.ratio_of(DEPENDENCY):.3f}, "
        "the most any dependency can reach; FixedWindow / no-op dependency: "
        f"{served.ratio_of(THROTTLED, DEPENDENCY):.3f}.",
        f"FixedWindow / no limiter, by `ThrottleMiddleware`: **{middleware:.3f}** (target ≥ "
        f"{TARGET}: {verdict(middleware)}); {served.paired_ratio_of(MIDDLEWARE):.3f} side by side. "
        "The middleware's work written by hand for this configuration (`benchmarks.fused`): "
        f"{served.ratio_of(FUSED):.3f}, the most any middleware doing it reaches here.",
    ]
    base_cpu = cpu[BASE]
    if base_cpu:
        lines.append(
            "Server CPU per request over no limiter: "
            + ", ".join(
                f"{name} {used - base_cpu:+.0f} µs ({base_cpu / used:.3f} as many "
                "requests on one busy core)"
                for name, used in ((n, cpu[n]) for n in (DEPENDENCY, THROTTLED, MIDDLEWARE, FUSED))
                if used
            )
            + "."
        )
    spreads = [spread for spread in map(served.spread, VARIANTS) if spread is not None]
    if spreads and max(spreads) > NOISY:
        lines.append(
            f"The runs of one variant spread by up to {max(spreads):.0%} of their median "
            "(interquartile range): something else wants these CPUs, and the requests per "
            "second follow its load; the CPU per request is the steadier figure."
        )
    return "\n".join(lines)


def as_dict(served: ServedRun) -> dict[str, Any]:
    """Everything measured, JSON-ready."""
    return {
        "mode": served.mode,
        "meta": served.meta,
        "median_per_second": {variant: served.median(variant) for variant in VARIANTS},
        "ratio": served.ratio,
        "paired_ratio": served.paired_ratio,
        "dependency_ratio": served.ratio_of(DEPENDENCY),
        "ratio_to_dependency": served.ratio_of(THROTTLED, DEPENDENCY),
        "server_cpu_us": {variant: served.server_cpu_us(variant) for variant in VARIANTS},
        "spread": {variant: served.spread(variant) for variant in VARIANTS},
        "middleware_ratio": served.ratio_of(MIDDLEWARE),
        "middleware_paired_ratio": served.paired_ratio_of(MIDDLEWARE),
        "fused_ratio": served.ratio_of(FUSED),
        "target_met": _met(served.ratio),
        "middleware_target_met": _met(served.ratio_of(MIDDLEWARE)),
        "runs": [{**asdict(run), "per_second": run.per_second} for run in served.runs],
    }


def as_json(served: ServedRun) -> str:
    return json.dumps({"real_server": as_dict(served)}, indent=2)
