"""What telling clients apart behind a proxy adds to a request: `remote_address` against the socket peer, in memory.

A FastAPI app behind an in-memory `FixedWindow` `HTTPThrottle` is timed with the socket peer
as the client (the default identity: no proxy), and behind a trusted proxy (`10.0.0.1`) that
names the client in `X-Forwarded-For`, two ways:

- `remote_address(["10.0.0.0/8"])` as the throttle's identifier;
- uvicorn's `ProxyHeadersMiddleware(trusted_hosts="10.0.0.0/8")` around the app, with the
  default identity (what `uvicorn --proxy-headers --forwarded-allow-ips` does), the way
  most limiters are deployed behind a proxy.

Each way is timed with IPv4 clients and with IPv6 clients (counted per /64), and with
returning clients (`CLIENTS` of them, in turn) and with a new client on every request
(everything is worked out for a client met for the first time: its identity, its key, its
bucket). Blocks
are interleaved repetition after repetition and timed in CPU time; a figure is µs per
request over the socket peer's within each repetition.

`python -m benchmarks.identity [--quick | --smoke]` prints the table on its own.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

from benchmarks.apps import dependency_app
from benchmarks.asgi import _SCOPE, Target, scoped_target
from benchmarks.settings import Settings, mode_of, report_rows
from benchmarks.timing import CPU_TIME, Spread, measure, spread
from traffik import HTTPThrottle, InMemoryBackend
from traffik.identity import remote_address

__all__ = ["CLIENTS", "Identity", "markdown", "report", "run"]

CLIENTS = 1000
"""Returning clients, each one request in turn."""
_PROXY = ("10.0.0.1", 40000)
_TRUSTED = "10.0.0.0/8"
_RATE = "1000000000/d"
_MIN_REPETITIONS = 15


@dataclass
class Identity:
    """One way of identifying: µs per request over the socket peer's (median of the
    repetitions' block medians, min-max), for returning and for new clients."""

    way: str
    clients: str
    returning_us: Spread
    new_us: Spread


def _v4(n: int) -> str:
    return f"203.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def _v6(n: int) -> str:
    return f"2001:db8:{n >> 16 & 0xFFFF:x}:{n & 0xFFFF:x}:{n % 7:x}::1"


def _through_proxy(address: Callable[[int], str], new: bool) -> Callable[[int], dict[str, Any]]:
    """Request i from a client behind the proxy (client `CLIENTS + i` when `new`)."""

    def scope_of(i: int) -> dict[str, Any]:
        n = CLIENTS + i if new else i % CLIENTS
        forwarded = (b"x-forwarded-for", address(n).encode())
        return {**_SCOPE, "client": _PROXY, "headers": [*_SCOPE["headers"], forwarded]}

    return scope_of


def _peer(i: int) -> dict[str, Any]:
    return {**_SCOPE, "client": (_v4(i % CLIENTS), 40000)}


def _throttle(name: str, identifier: Any = None) -> HTTPThrottle:
    return HTTPThrottle(
        f"bench:identity:{name}", rate=_RATE, backend=InMemoryBackend(), identifier=identifier
    )


async def _told_apart(targets: list[Target], throttles: dict[str, HTTPThrottle]) -> None:
    """Raise unless each app counted every client it met apart (a proxy taken for the
    client would measure one bucket)."""
    for target in targets:
        backend = throttles[target.name].backend
        assert isinstance(backend, InMemoryBackend)
        buckets = len(await backend.keys())
        expected = target.cursor if target.name.endswith("new") else CLIENTS
        if buckets != expected:
            raise RuntimeError(f"{target.name}: {buckets} buckets for {expected} clients")


def _targets() -> tuple[list[Target], dict[str, HTTPThrottle]]:
    """The variants, and the throttle each counts with."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    throttles = {"peer": _throttle("peer")}
    targets = [scoped_target("peer", dependency_app(throttles["peer"]), _peer)]
    for family, address in (("IPv4", _v4), ("IPv6", _v6)):
        for new in (False, True):
            when = "new" if new else "returning"
            scope_of = _through_proxy(address, new)
            name = f"remote_address|{family}|{when}"
            throttles[name] = _throttle(name, remote_address([_TRUSTED]))
            targets.append(scoped_target(name, dependency_app(throttles[name]), scope_of))
            name = f"uvicorn ProxyHeadersMiddleware|{family}|{when}"
            throttles[name] = _throttle(name)
            inner: Any = dependency_app(throttles[name])
            app = ProxyHeadersMiddleware(inner, trusted_hosts=_TRUSTED)
            targets.append(scoped_target(name, app, scope_of))
    return targets, throttles


async def run(settings: Settings) -> list[Identity]:
    """Every way and family, returning and new clients, over the socket peer's."""
    targets, throttles = _targets()
    repetitions = (
        settings.repetitions
        if settings.mode == "smoke"
        else max(settings.repetitions, _MIN_REPETITIONS)
    )
    samples = await measure(
        targets, settings.requests, 1, repetitions, settings.warmup + CLIENTS, CPU_TIME
    )
    await _told_apart(targets, throttles)
    times = samples.typical
    statuses = {target.name: dict(target.statuses) for target in targets}
    if any(set(counts) != {200} for counts in statuses.values()):
        raise RuntimeError(f"the identity benchmark's apps must answer 200 only: {statuses}")
    peer = times["peer"]

    def over(name: str) -> Spread:
        return spread([t - p for t, p in zip(times[name], peer)], 1 / 1000)

    rows = []
    for way in ("remote_address", "uvicorn ProxyHeadersMiddleware"):
        for family in ("IPv4", "IPv6"):
            rows.append(
                Identity(
                    way,
                    family,
                    over(f"{way}|{family}|returning"),
                    over(f"{way}|{family}|new"),
                )
            )
    return rows


def _us(value: Spread) -> str:
    return f"{value['median']:.2f} ({value['min']:.2f}-{value['max']:.2f})"


def markdown(rows: list[Identity]) -> str:
    lines = [
        "### Clients behind a proxy (in memory, FixedWindow, µs per request over the socket "
        "peer's, CPU time)\n",
        "| identified by | clients | returning clients | a new client per request |",
        "|---|---|---|---|",
    ]
    for row in rows:
        way = "`remote_address`" if row.way == "remote_address" else f"{row.way} + the peer"
        lines.append(f"| {way} | {row.clients} | {_us(row.returning_us)} | {_us(row.new_us)} |")
    lines.append(
        f"\nThe proxy names the client in `X-Forwarded-For`; {CLIENTS:,} returning clients "
        "in turn, or a client never seen before on every request."
    )
    return "\n".join(lines)


def report(mode: str) -> list[dict[str, Any]]:
    """Measure in `mode`, print the table, and return the rows for the JSON document."""
    return report_rows(run, markdown, mode)


if __name__ == "__main__":
    report(mode_of(sys.argv))
