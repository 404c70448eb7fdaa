"""`python -m benchmarks --instructions`: instructions per request under callgrind, a figure the machine's load cannot move.

Times on a shared machine move with whatever else runs on it; the number of instructions a
request executes does not. Each variant (`benchmarks.instruction_run`: the main benchmark's
endpoint bare, behind the no-op dependency, throttled in memory by each built-in strategy
and on SQLite, the middleware benchmark's three Starlette apps, and the rivals of
`benchmarks.rivals`; and the real server's four variants, each a uvicorn worker sent its
requests one at a time over one keep-alive connection, counted whole: HTTP parsing and the
event loop included) makes `FEW` then `MANY` requests in a process of its own under
`valgrind --tool=callgrind` (collector off, hash seed fixed, address randomization off), and
the difference over `MANY - FEW` is its instructions per request: start-up, imports and the
first request's work cancel out. Ratios are then taken as in the timed benchmark: over no
limiter (overhead), over the no-op dependency's overhead (`x no-op dependency`, the in-memory
target is 1.4), and a rival's overhead over traffik's (`x traffik`: above 1, traffik
executes fewer). An instruction is not a nanosecond: a syscall (SQLite's file locks and
writes) counts few instructions and costs many; the timed benchmark stays the measure of
time.

Needs `valgrind` on the PATH. Most of a run is Python starting under callgrind, twice per
variant: about 15 minutes on 2 CPUs with `--quick` (100 and 300 requests), 20 without (300
and 900).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from benchmarks.http_load import REQUEST, installed
from benchmarks.instruction_run import GROUPS, LEGACY, ON_REDIS, RIVAL_VARIANTS, needs
from benchmarks.real_server import VARIANTS as SERVED_VARIANTS

__all__ = [
    "Counted",
    "as_json",
    "count",
    "groups",
    "markdown",
    "one_at_a_time",
    "report",
    "tabulate",
]

_ROOT = Path(__file__).resolve().parents[1]
_SIZES = {"full": (300, 900), "quick": (100, 300), "smoke": (5, 15)}
_COLLECTED = re.compile(r"Collected : (\d+)")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)")
_SERVED_PREFIX = "served: "
_REDIS_GROUP = "FastAPI dependency on Redis"
RATIO_GROUPS = ("FastAPI dependency", _REDIS_GROUP)
"""The groups whose overheads are also given as floors (`x floor`): the no-op dependency,
and on Redis one making a raw `EVALSHA`."""
TARGET = 1.4
"""Issue 16's in-memory target, as instructions: a throttled request at most 1.4 no-op
dependencies over no limiter."""
SERVED_GROUP = "uvicorn worker over loopback HTTP"
"""The real server's variants (`benchmarks.real_server.VARIANTS`), each a uvicorn worker run
under callgrind and sent its requests one at a time over one keep-alive connection."""
SERVED_TARGET = 0.9
"""Issue 16's real-server target, as instructions: a worker with the throttle serves at
least 0.9 of the requests one without a limiter serves (`x bare` = bare / variant)."""
_SERVED_READY_SECONDS = 600.0


def groups() -> dict[str, tuple[str, ...]]:
    """`instruction_run.GROUPS` and `SERVED_GROUP` (its variants named `served: <real
    server variant>`): the first of each is its bare request, the second its floor, the
    third traffik's FixedWindow."""
    return {**GROUPS, SERVED_GROUP: tuple(_SERVED_PREFIX + name for name in SERVED_VARIANTS)}


@dataclass
class Counted:
    """One variant's instructions per request, and its ratios (None where they do not apply
    or it could not run: `missing` says why)."""

    group: str
    variant: str
    per_request: Optional[float]
    overhead: Optional[float]
    x_floor: Optional[float]
    x_traffik: Optional[float]
    missing: Optional[str] = None
    served: Optional[float] = None
    """`SERVED_GROUP` only: the worker's requests per instruction over a bare worker's."""


def _collected(variant: str, requests: int, legacy: Optional[Path], env: dict[str, str]) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "benchmarks.instruction_run", variant, str(requests)]
    if variant.removesuffix(ON_REDIS) == LEGACY and legacy is not None:
        command.append(str(legacy))
    if shutil.which("setarch"):
        command = ["setarch", "-R", *command]
    done = subprocess.run(
        command,
        cwd=_ROOT,
        env={**os.environ, **env, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{variant} under callgrind failed: {done.stderr.strip()[-400:]}")
    return int(found.group(1))


def _served(variant: str, requests: int) -> int:
    """Instructions of a uvicorn worker serving `variant` (`real_server.VARIANTS`) for
    `requests` requests, one at a time on one keep-alive connection (the first is its
    readiness check), start-up and shut-down included."""
    from benchmarks.real_server import VARIANTS, Worker

    prefix: tuple[str, ...] = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")
    if shutil.which("setarch"):
        prefix = ("setarch", "-R", *prefix)
    worker = Worker(VARIANTS[variant], prefix, {"PYTHONHASHSEED": "0"}, _SERVED_READY_SECONDS)
    worker.start()
    try:
        answered = one_at_a_time(worker.port, requests - 1)
    finally:
        written = worker.stop(wait=_SERVED_READY_SECONDS)
    found = _COLLECTED.search(written)
    if found is None or set(answered) != {200}:
        raise RuntimeError(f"{variant} served under callgrind: {dict(answered)}, {written[-400:]}")
    return int(found.group(1))


def one_at_a_time(port: int, requests: int) -> Counter[int]:
    """`requests` GETs of `/` to `127.0.0.1:port` on one keep-alive connection, each sent
    once the previous answer is whole (by its `Content-Length`); the statuses answered."""
    statuses: Counter[int] = Counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(requests):
            sock.sendall(REQUEST)
            received = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"the worker on port {port} closed the connection")
                received += chunk
                head, _, body = received.partition(b"\r\n\r\n")
                if not _:
                    continue
                length = _CONTENT_LENGTH.search(head)
                if length is None:
                    raise RuntimeError(f"an answer without Content-Length: {head!r}")
                if len(body) >= int(length.group(1)):
                    break
            statuses[int(head.split(b" ", 2)[1])] += 1
    return statuses


def _per_request(
    variant: str, sizes: tuple[int, int], legacy: Optional[Path], env: dict[str, str]
) -> float:
    few, many = sizes
    if variant.startswith(_SERVED_PREFIX):
        name = variant.removeprefix(_SERVED_PREFIX)
        return (_served(name, many) - _served(name, few)) / (many - few)
    more, less = _collected(variant, many, legacy, env), _collected(variant, few, legacy, env)
    return (more - less) / (many - few)


def count(mode: str) -> list[Counted]:
    """Every variant counted (two at a time), then `tabulate`d."""
    if shutil.which("valgrind") is None:
        raise RuntimeError("--instructions needs valgrind on the PATH (apt install valgrind)")
    from benchmarks import servers
    from benchmarks.legacy_run import legacy_path

    legacy, why = legacy_path()
    sizes = _SIZES[mode]
    missing = {variant: reason for variant in RIVAL_VARIANTS if (reason := needs(variant))}
    if legacy is None:
        for variant in (LEGACY, LEGACY + ON_REDIS):
            missing[variant] = why or "traffik 1.2 is not available"
    if not installed("uvicorn"):
        for variant in groups()[SERVED_GROUP]:
            missing[variant] = "uvicorn is not installed: pip install uvicorn"
    try:
        server: Optional[servers.Server] = servers.start("redis")
    except servers.ServerUnavailable as exc:
        server = None
        for variant in GROUPS[_REDIS_GROUP][1:]:
            missing[variant] = f"Redis not available: {exc}"
    every = groups()
    wanted = list(dict.fromkeys(v for group in every.values() for v in group if v not in missing))
    env = {"TRAFFIK_REDIS_URL": server.url} if server else {}
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            counted = pool.map(lambda v: _per_request(v, sizes, legacy, env), wanted)
            counts = dict(zip(wanted, counted))
    finally:
        if server:
            server.stop()
    return tabulate(counts, missing)


def tabulate(counts: dict[str, float], missing: dict[str, str]) -> list[Counted]:
    """The rows of `GROUPS` from the instructions per request of each variant (`counts`) and
    why the others could not run (`missing`): the overhead over the group's bare request,
    over its floor's overhead (`RATIO_GROUPS` only: the middleware's target is in µs, and a
    no-op middleware's overhead is next to nothing), and (rivals) over traffik
    FixedWindow's overhead."""
    rows: list[Counted] = []
    for group, variants in groups().items():
        bare, floor, traffik = variants[0], variants[1], variants[2]
        if bare in missing:  # (the served group, without a worker to count)
            rows += [Counted(group, v, None, None, None, None, missing[v]) for v in variants]
            continue
        floor_over, mine = counts[floor] - counts[bare], counts[traffik] - counts[bare]
        ratio = (group in RATIO_GROUPS or group == SERVED_GROUP) and floor_over > 0
        for variant in variants:
            if variant in missing:
                rows.append(Counted(group, variant, None, None, None, None, missing[variant]))
                continue
            over = counts[variant] - counts[bare]
            rows.append(
                Counted(
                    group,
                    variant,
                    counts[variant],
                    over if variant != bare else None,
                    over / floor_over if ratio and variant not in (bare, floor) else None,
                    over / mine if variant in RIVAL_VARIANTS and mine else None,
                    served=counts[bare] / counts[variant] if group == SERVED_GROUP else None,
                )
            )
    return rows


def _k(value: Optional[float]) -> str:
    return "" if value is None else f"{value / 1000:.1f}k"


def _x(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2f}"


def markdown(rows: list[Counted], mode: str) -> str:
    few, many = _SIZES[mode]
    lines = [
        "### Instructions per request (callgrind)",
        "",
        f"Each variant in a process of its own, ({many} requests - {few} requests) / "
        f"{many - few}. `x floor`: the overhead over the floor's: the no-op dependency's "
        f"(target <= {TARGET:g} in memory), on Redis one making a raw `EVALSHA`; "
        "`x traffik`: a rival's overhead over traffik FixedWindow's; `served`: a uvicorn "
        "worker's requests per instruction over the bare worker's (a worker counted whole, "
        f"uvicorn's HTTP included; target >= {SERVED_TARGET:g}).",
        "",
        "| group | variant | per request | overhead | x floor | x traffik | served |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for row in rows:
        if row.missing:
            lines.append(f"| {row.group} | {row.variant} | {row.missing} | | | | |")
        else:
            lines.append(
                f"| {row.group} | {row.variant} | {_k(row.per_request)} | {_k(row.overhead)} "
                f"| {_x(row.x_floor)} | {_x(row.x_traffik)} | {_x(row.served)} |"
            )
    return "\n".join(lines)


def as_json(rows: list[Counted], mode: str) -> dict[str, Any]:
    few, many = _SIZES[mode]
    return {"requests": [few, many], "rows": [asdict(row) for row in rows]}


def report(mode: str) -> dict[str, Any]:
    rows = count(mode)
    print("\n" + markdown(rows, mode))
    return as_json(rows, mode)
