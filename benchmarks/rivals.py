"""`python -m benchmarks --rivals`: traffik against the other rate limiters for FastAPI, in one run.

The endpoint of the main benchmark (`benchmarks.apps`), in memory, is timed bare, behind the
no-op dependency, behind traffik's `FixedWindow` throttle (with its default rate-limit
headers, and without), and behind each rival that is installed (`benchmarks.rival_apps`):
one key, then 10,000 clients (each met once before timing starts), one request at a time,
in CPU time, the variants interleaved block after block as in the main benchmark
(`benchmarks.timing.measure`). Each variant's overhead is its request minus the bare one,
within each repetition; `x traffik` is the rival's overhead over traffik's (with headers),
within each repetition too: above 1, traffik costs less.

traffik 1.2 is imported as `traffik` too, so it runs in a process of its own
(`benchmarks.legacy_run`), timed the same way against its own bare app and no-op dependency;
its `x traffik` compares the two processes' `x no-op dependency` figures. It is installed
with `pip install --target` into `~/.cache/traffik-benchmarks/` (`$TRAFFIK_12_PATH`: a
directory holding it instead) on first use; a rival that is missing is reported so, with
the command that installs it. Every request must be answered 200, or the run fails: a
limiter that refused would be measuring another path.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from benchmarks.apps import dependency_app, noop, plain_app
from benchmarks.asgi import Target, asgi_target, clients
from benchmarks.rival_apps import RIVALS, traffik_app
from benchmarks.settings import MODES, Settings
from benchmarks.timing import CPU_TIME, Spread, measure, spread

__all__ = [
    "BARE",
    "LEGACY",
    "NOOP",
    "WORKLOADS",
    "RivalRow",
    "as_json",
    "markdown",
    "measure_rivals",
    "report",
    "timed",
]

BARE, NOOP = "no limiter", "no-op dependency"
TRAFFIK, TRAFFIK_BARE = "traffik FixedWindow", "traffik FixedWindow, headers=None"
LEGACY = "traffik 1.2.2"
_LEGACY_VERSION = "1.2.2"
_ROOT = Path(__file__).resolve().parents[1]
_CACHE = (
    Path.home()
    / ".cache"
    / "traffik-benchmarks"
    / f"traffik-{_LEGACY_VERSION}-py{sys.version_info[0]}.{sys.version_info[1]}"
)
"""Where traffik 1.2 is installed on first use (its wheel is built for each Python)."""
WORKLOADS = ("one key", "many keys")
"""One client, then `Settings.keys` clients (10,000 but in `--smoke`)."""


@dataclass
class RivalRow:
    """One limiter in one workload: µs per request, over no limiter, as no-op dependencies,
    and over traffik's overhead (None where not measured: `missing` says why)."""

    limiter: str
    workload: str
    request_us: Optional[Spread]
    overhead_us: Optional[Spread]
    x_noop: Optional[Spread]
    x_traffik: Optional[Spread]
    missing: Optional[str] = None


def _peers(workload: str, settings: Settings) -> int:
    return 1 if workload == "one key" else settings.keys


def _label(workload: str, settings: Settings) -> str:
    return workload if workload == "one key" else f"{settings.keys:,} keys"


async def timed(apps: dict[str, Any], workload: str, settings: Settings) -> dict[str, list[float]]:
    """Every app timed as `measure` does, after one request from each client: per app, the
    µs per request (`typical`) of each repetition, in order. Raises unless all were 200."""
    peers = clients(_peers(workload, settings))
    targets = [asgi_target(name, app, peers) for name, app in apps.items()]
    for target in targets:  # every client met once, as the stores hold them before timing
        one = target.one
        for i in range(len(peers)):
            await one(i)
        target.cursor = len(peers)
    samples = await measure(
        targets, settings.requests, 1, settings.repetitions, settings.warmup, CPU_TIME
    )
    _check(targets)
    return {name: [ns / 1000 for ns in times] for name, times in samples.typical.items()}


def _check(targets: list[Target]) -> None:
    wrong = {t.name: dict(t.statuses) for t in targets if set(t.statuses) != {200}}
    if wrong:
        raise RuntimeError(f"the rivals' apps must answer 200 only: {wrong}")


def _overheads(times: dict[str, list[float]], name: str) -> list[float]:
    return [t - b for t, b in zip(times[name], times[BARE])]


def _x_noop(times: dict[str, list[float]], name: str) -> list[float]:
    return [o / f for o, f in zip(_overheads(times, name), _overheads(times, NOOP)) if f > 0]


def _row(times: dict[str, list[float]], name: str, workload: str) -> RivalRow:
    """`name`'s figures; `x traffik` when traffik ran in the same repetitions (not itself)."""
    overheads, x_noop = _overheads(times, name), _x_noop(times, name)
    over: list[float] = []
    if TRAFFIK in times and name != TRAFFIK:
        over = [o / m for o, m in zip(overheads, _overheads(times, TRAFFIK)) if m > 0]
    return RivalRow(
        name,
        workload,
        spread(times[name]),
        spread(overheads),
        spread(x_noop) if x_noop else None,
        spread(over) if over else None,
    )


def legacy_path() -> tuple[Optional[Path], Optional[str]]:
    """Where traffik 1.2 is installed for the run (installed there now if need be), or why not."""
    given = os.environ.get("TRAFFIK_12_PATH")
    place = Path(given) if given else _CACHE
    if (place / "traffik" / "__init__.py").exists():
        return place, None
    if given:
        return None, f"$TRAFFIK_12_PATH={given} holds no traffik package"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--target", str(place), "--no-deps", f"traffik=={_LEGACY_VERSION}"]
    command += ["annotated-types>=0.7", "typing_extensions>=4.12"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        return (
            None,
            f"pip could not install traffik=={_LEGACY_VERSION}: {done.stderr.strip()[-200:]}",
        )
    return place, None


def _legacy(mode: str) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """traffik 1.2's figures from its own process (`benchmarks.legacy_run`), or why not."""
    place, why = legacy_path()
    if place is None:
        return None, why
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.legacy_run", str(place), mode],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        return None, f"traffik 1.2 did not run: {done.stderr.strip()[-300:]}"
    return json.loads(done.stdout.strip().splitlines()[-1]), None


async def measure_rivals(settings: Settings) -> list[RivalRow]:
    """Every limiter in every workload, traffik 1.2 included (its own process)."""
    apps: dict[str, Any] = {
        BARE: plain_app(),
        NOOP: dependency_app(noop),
        TRAFFIK: traffik_app(headers=True),
        TRAFFIK_BARE: traffik_app(headers=False),
    }
    missing: dict[str, str] = {}
    for rival in RIVALS:
        if rival.installed():
            apps[rival.name] = rival.app()
        else:
            missing[rival.name] = f"not installed: pip install {rival.distribution}"
    legacy, why = _legacy(settings.mode)  # first, alone: two timed processes would share CPUs
    rows: list[RivalRow] = []
    for workload in WORKLOADS:
        times = await timed(apps, workload, settings)
        rows += [_row(times, name, workload) for name in apps if name not in (BARE, NOOP)]
        rows += [
            RivalRow(name, workload, None, None, None, None, note) for name, note in missing.items()
        ]
        mine = _x_noop(times, TRAFFIK)
        if legacy is None:
            rows.append(RivalRow(LEGACY, workload, None, None, None, None, why))
            continue
        theirs = legacy[workload]
        x_noop = _x_noop(theirs, LEGACY)
        row = _row(theirs, LEGACY, workload)
        if x_noop and mine and spread(mine)["median"] > 0:  # (a no-op costing nothing: none)
            ratio = spread(x_noop)["median"] / spread(mine)["median"]
            row.x_traffik = {"median": ratio, "min": ratio, "max": ratio}
        rows.append(row)
    return rows


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
        "### traffik against the other limiters (FastAPI, in memory, µs per request, CPU time)",
        "",
        f"{settings.repetitions} repetitions of {settings.requests} requests per limiter, "
        "interleaved. `overhead`: over no limiter; `x no-op dependency`: that overhead over "
        "a no-op `Depends`; `x traffik`: over traffik FixedWindow's overhead (above 1: "
        "traffik costs less), within each repetition (traffik 1.2: the two processes' "
        "`x no-op dependency`).",
        "",
        "| limiter | workload | request µs | overhead µs | x no-op dependency | x traffik |",
        "|---|---|---:|---:|---|---|",
    ]
    for row in rows:
        label = _label(row.workload, settings)
        if row.missing:
            lines.append(f"| {row.limiter} | {label} | {row.missing} | | | |")
            continue
        lines.append(
            f"| {row.limiter} | {label} | {_us(row.request_us)} | {_us(row.overhead_us)} "
            f"| {_x(row.x_noop)} | {_x(row.x_traffik)} |"
        )
    return "\n".join(lines)


def as_json(rows: list[RivalRow], settings: Settings) -> dict[str, Any]:
    return {"settings": settings.as_dict(), "rows": [asdict(row) for row in rows]}


def report(mode: str) -> dict[str, Any]:
    """Measure in `mode`, print the table, and return the JSON document's part."""
    settings = MODES[mode]
    rows = asyncio.run(measure_rivals(settings))
    print("\n" + markdown(rows, settings))
    return as_json(rows, settings)
