"""`python -m benchmarks --rivals`: traffik against the other rate limiters for FastAPI, in one run.

The endpoint of the main benchmark (`benchmarks.apps`) is timed bare, behind the floor,
behind traffik's `FixedWindow` throttle (with its default rate-limit headers, and without),
and behind each rival that is installed (`benchmarks.rival_apps`), in each workload
(`WORKLOADS`): in memory on one key, then 10,000 clients (each met once before timing
starts), in CPU time; on Redis on one key, one request at a time and 50 at once, in wall
time (the wait for the server is the cost). The variants run interleaved block after block
as in the main benchmark (`benchmarks.timing.measure`). The floor is the no-op dependency
in memory, and on Redis a no-op dependency making one raw `EVALSHA` (redis-py). Each
variant's overhead is its request minus the bare one within each repetition, `x floor` that
over the floor's, and `x traffik` a rival's overhead over traffik's (with headers), within
each repetition too: above 1, traffik costs less. On Redis, one request at a time, the
commands each request sends are counted too (`MONITOR`, after the timing; the commands a
script runs are not the client's).

traffik 1.2 is imported as `traffik` too, so it runs in a process of its own
(`benchmarks.legacy_run`), timed the same way against its own bare app and floor; its
`x traffik` compares the two processes' `x floor`. A rival that is missing is reported so,
with the command that installs it. Every request must be answered 200, or the run fails: a
limiter that refused would be measuring another path.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

from benchmarks.apps import dependency_app, noop, plain_app, round_trip_dependency
from benchmarks.asgi import Target, asgi_target, clients
from benchmarks.rival_apps import KEY_PREFIX, RIVALS, close_all, traffik_app
from benchmarks.servers import one_cpu
from benchmarks.settings import CONCURRENCY, MODES, Settings
from benchmarks.timing import CPU_TIME, WALL_TIME, Spread, measure, spread

__all__ = [
    "BARE",
    "FLOOR",
    "LEGACY",
    "WORKLOADS",
    "RivalRow",
    "as_json",
    "commands",
    "floor_app",
    "markdown",
    "measure_rivals",
    "report",
    "timed",
]

BARE, FLOOR = "no limiter", "floor"
TRAFFIK, TRAFFIK_BARE = "traffik FixedWindow", "traffik FixedWindow, headers=None"
LEGACY = "traffik 1.2.2"
WORKLOADS = (
    ("memory", "one key"),
    ("memory", "many keys"),
    ("redis", "one key"),
    ("redis", "one key, 50 at once"),
)
"""(store, workload): one client or `Settings.keys` clients (10,000 but in `--smoke`), one
request at a time or `CONCURRENCY` at once (`asyncio.gather`)."""
_FLOORS = {"memory": "no-op dependency", "redis": "no-op dependency + EVALSHA"}


@dataclass
class RivalRow:
    """One limiter in one workload: µs per request, over no limiter, as floors, over
    traffik's overhead, and (Redis) server commands per request; None where not measured
    (`missing` says why)."""

    limiter: str
    store: str
    workload: str
    request_us: Optional[Spread]
    overhead_us: Optional[Spread]
    x_floor: Optional[Spread]
    x_traffik: Optional[Spread]
    commands: Optional[float] = None
    missing: Optional[str] = None


def _label(workload: str, settings: Settings) -> str:
    return f"{settings.keys:,} keys" if workload == "many keys" else workload


async def floor_app(url: Optional[str]) -> Any:
    """The floor: the no-op dependency, or on Redis the same making one raw `EVALSHA`."""
    if url is None:
        return dependency_app(noop)
    from redis.asyncio import Redis

    raw = Redis.from_url(url)
    sha = await raw.script_load("return 1")
    return dependency_app(round_trip_dependency(lambda: raw.evalsha(sha, 1, f"{KEY_PREFIX}-raw")))


async def timed(
    apps: dict[str, Any],
    store: str,
    workload: str,
    settings: Settings,
    server_pid: Optional[int] = None,
) -> dict[str, list[float]]:
    """Every app timed as `measure` does, after one request from each client: per app, the
    µs per request (`typical`: at once, a batch's time over its requests) of each
    repetition, in order; one request at a time on one CPU with the server `server_pid`,
    when given (one the run started, which the caller passes unless `--spread-cpus`:
    `servers.one_cpu`). Raises unless all were 200."""
    peers = clients(settings.keys if workload == "many keys" else 1)
    width = CONCURRENCY if workload.endswith("at once") else 1
    targets = [asgi_target(name, app, peers) for name, app in apps.items()]
    for target in targets:  # every client met once, as the stores hold them before timing
        one = target.one
        for i in range(len(peers)):
            await one(i)
        target.cursor = len(peers)
    memory = store == "memory"
    pinned = server_pid if width == 1 and not memory else None
    with one_cpu(pinned):
        samples = await measure(
            targets,
            settings.block(store, width),
            width,
            settings.repetitions,
            settings.warmup,
            CPU_TIME if memory else WALL_TIME,
        )
    _check(targets)
    return {name: [ns / 1000 for ns in times] for name, times in samples.typical.items()}


async def commands(apps: dict[str, Any], url: str, settings: Settings) -> dict[str, float]:
    """The commands the Redis at `url` received per request of each app, scripts' own
    commands left out (`benchmarks.stores.client_commands`), over
    `Settings.counted_decisions` requests."""
    from redis.asyncio import Redis

    from benchmarks.stores import client_commands

    stats, raw = Redis.from_url(url), Redis.from_url(url)
    counted: dict[str, float] = {}
    try:
        for name, app in apps.items():
            target = asgi_target(name, app, clients(1))
            await target.one(0)  # (connected, scripts loaded)
            n = settings.counted_decisions

            async def work(target: Target = target, n: int = n) -> None:
                for i in range(1, n + 1):
                    await target.one(i)

            counted[name] = await client_commands(stats, raw, work) / n
            _check([target])
    finally:
        await stats.aclose()
        await raw.aclose()
    return counted


def _check(targets: list[Target]) -> None:
    wrong = {t.name: dict(t.statuses) for t in targets if set(t.statuses) != {200}}
    if wrong:
        raise RuntimeError(f"the rivals' apps must answer 200 only: {wrong}")


def _overheads(times: dict[str, list[float]], name: str) -> list[float]:
    return [t - b for t, b in zip(times[name], times[BARE])]


def _x_floor(times: dict[str, list[float]], name: str) -> list[float]:
    return [o / f for o, f in zip(_overheads(times, name), _overheads(times, FLOOR)) if f > 0]


def _row(times: dict[str, list[float]], name: str, store: str, workload: str) -> RivalRow:
    """`name`'s figures; `x traffik` when traffik ran in the same repetitions (not itself)."""
    overheads, x_floor = _overheads(times, name), _x_floor(times, name)
    over: list[float] = []
    if TRAFFIK in times and name != TRAFFIK:
        over = [o / m for o, m in zip(overheads, _overheads(times, TRAFFIK)) if m > 0]
    return RivalRow(
        name,
        store,
        workload,
        spread(times[name]),
        spread(overheads),
        spread(x_floor) if x_floor else None,
        spread(over) if over else None,
    )


async def _apps(url: Optional[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The apps of one store (in memory for None), and the rivals missing, with why."""
    apps: dict[str, Any] = {
        BARE: plain_app(),
        FLOOR: await floor_app(url),
        TRAFFIK: traffik_app(True, url),
        TRAFFIK_BARE: traffik_app(False, url),
    }
    missing: dict[str, str] = {}
    for rival in RIVALS:
        if rival.installed():
            apps[rival.name] = await rival.app(url)
        else:
            missing[rival.name] = f"not installed: pip install {rival.distribution}"
    return apps, missing


async def _clear(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"*{KEY_PREFIX}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


async def measure_rivals(settings: Settings) -> list[RivalRow]:
    """Every limiter in every workload, traffik 1.2 included (its own process, first: two
    timed processes at once would share the CPUs)."""
    from benchmarks import legacy_run, servers

    try:
        server: Optional[servers.Server] = servers.start("redis")
        unavailable = None
    except servers.ServerUnavailable as exc:
        server, unavailable = None, f"Redis not available: {exc}"
    url = server.url if server else None
    pid = server.pid if server and settings.one_cpu else None
    try:
        legacy, why = legacy_run.measure_apart(settings.mode, url, pid)
        rows: list[RivalRow] = []
        for store, workload in WORKLOADS:
            if store == "redis" and url is None:
                rows.append(
                    RivalRow(TRAFFIK, store, workload, None, None, None, None, None, unavailable)
                )
                continue
            apps, missing = await _apps(None if store == "memory" else url)
            times = await timed(apps, store, workload, settings, pid)
            sequential = store == "redis" and not workload.endswith("at once")
            counted = await commands(apps, url, settings) if sequential and url else {}
            names = [name for name in apps if name not in (BARE, FLOOR)]
            for name in names:
                row = _row(times, name, store, workload)
                row.commands = counted.get(name)
                rows.append(row)
            rows += [
                RivalRow(name, store, workload, None, None, None, None, None, note)
                for name, note in missing.items()
            ]
            rows.append(_legacy_row(legacy, why, times, store, workload))
    finally:
        close_all()
        if url:
            await _clear(url)
        if server:
            server.stop()
    return rows


def _legacy_row(
    legacy: Optional[dict[str, Any]],
    why: Optional[str],
    times: dict[str, list[float]],
    store: str,
    workload: str,
) -> RivalRow:
    """traffik 1.2's row from its process's figures (`x traffik`: the two `x floor`s)."""
    key = f"{store} {workload}"
    if legacy is None or key not in legacy["times"]:
        return RivalRow(LEGACY, store, workload, None, None, None, None, None, why or "not run")
    theirs = legacy["times"][key]
    row = _row(theirs, LEGACY, store, workload)
    row.commands = legacy["commands"].get(key)
    x_floor, mine = _x_floor(theirs, LEGACY), _x_floor(times, TRAFFIK)
    if x_floor and mine and spread(mine)["median"] > 0:  # (a floor costing nothing: none)
        ratio = spread(x_floor)["median"] / spread(mine)["median"]
        row.x_traffik = {"median": ratio, "min": ratio, "max": ratio}
    return row


def _us(value: Optional[Spread]) -> str:
    return "" if value is None else f"{value['median']:.2f}"


def _x(value: Optional[Spread]) -> str:
    if value is None:
        return ""
    if value["min"] == value["max"]:
        return f"{value['median']:.2f}"
    return f"{value['median']:.2f} ({value['min']:.2f}-{value['max']:.2f})"


def markdown(rows: list[RivalRow], settings: Settings) -> str:
    lines = [
        "### traffik against the other limiters (FastAPI, µs per request)",
        "",
        f"{settings.repetitions} repetitions per limiter, interleaved; CPU time in memory, "
        "wall time on Redis. `overhead`: over no limiter; `x floor`: that overhead over the "
        "floor's (a no-op `Depends`; on Redis one making a raw `EVALSHA`); `x traffik`: over "
        "traffik FixedWindow's overhead (above 1: traffik costs less), within each "
        "repetition (traffik 1.2: the two processes' `x floor`); `commands`: Redis commands "
        "per request.",
        "",
        "| limiter | store | workload | request µs | overhead µs | x floor | x traffik | commands |",
        "|---|---|---|---:|---:|---|---|---:|",
    ]
    for row in rows:
        where = f"| {row.limiter} | {row.store} | {_label(row.workload, settings)} |"
        if row.missing:
            lines.append(f"{where} {row.missing} | | | | |")
            continue
        count = "" if row.commands is None else f"{row.commands:.2f}"
        lines.append(
            f"{where} {_us(row.request_us)} | {_us(row.overhead_us)} "
            f"| {_x(row.x_floor)} | {_x(row.x_traffik)} | {count} |"
        )
    return "\n".join(lines)


def as_json(rows: list[RivalRow], settings: Settings) -> dict[str, Any]:
    return {"settings": settings.as_dict(), "rows": [asdict(row) for row in rows]}


def report(mode: str, one_cpu: bool = True) -> dict[str, Any]:
    """Measure in `mode` (sequential Redis requests on one CPU with the server unless not
    `one_cpu`), print the table, and return the JSON document's part."""
    settings = replace(MODES[mode], one_cpu=one_cpu)
    rows = asyncio.run(measure_rivals(settings))
    print("\n" + markdown(rows, settings))
    return as_json(rows, settings)
