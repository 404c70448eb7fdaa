"""`python -m benchmarks [--quick | --smoke] [--json PATH] [--backends memory,sqlite,redis,memcached] [--profile | --faults | --real-server | --rivals | --instructions | --bytecodes] [--spread-cpus]`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from typing import Any, Optional

from benchmarks import (
    configurations,
    identity,
    metrics_overhead,
    middleware_overhead,
    redis_server_time,
)
from benchmarks.report import as_json, markdown, targets
from benchmarks.runner import run
from benchmarks.settings import MODES
from benchmarks.stores import STORES
from benchmarks.targets import section_checks


def _stores(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STORES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--backends {text!r}: use a comma-separated list of {', '.join(STORES)}"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Throttle overhead against the floor (no limiter, a no-op dependency, the raw "
        "backend round trip), measured in one run; prints a Markdown report and JSON.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="a short run (about 2 minutes on 2 CPUs with every store; the full run about 11)",
    )
    size.add_argument(
        "--smoke", action="store_true", help="a few requests: checks the command runs"
    )
    parser.add_argument("--json", metavar="PATH", help="write the JSON there instead of stdout")
    parser.add_argument(
        "--backends",
        type=_stores,
        default=list(STORES),
        metavar="LIST",
        help="stores to measure (default: memory,sqlite,redis,memcached)",
    )
    parser.add_argument(
        "--spread-cpus",
        action="store_true",
        help="leave sequential groups on Redis and Memcached unpinned (by default they run on "
        "one CPU with the server the run started)",
    )
    parser.add_argument(
        "--profile",
        metavar="STRATEGY",
        nargs="?",
        const="FixedWindow",
        help="instead of the benchmark, profile one in-memory throttle (default FixedWindow)",
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help="instead of the benchmark, latency while Redis and Memcached are frozen, with and "
        "without the store's circuit (servers started for the run)",
    )
    parser.add_argument(
        "--real-server",
        action="store_true",
        help="instead of the benchmark, requests per second of one uvicorn worker with and "
        "without an in-memory FixedWindow throttle, over loopback HTTP (also in the full run)",
    )
    parser.add_argument(
        "--rivals",
        action="store_true",
        help="instead of the benchmark, traffik against limits, slowapi, fastapi-limiter and "
        "traffik 1.2, in memory (those not installed are reported so)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instead of the benchmark, instructions per request under callgrind (needs "
        "valgrind): every in-memory strategy, SQLite, the middleware and the rivals",
    )
    parser.add_argument(
        "--bytecodes",
        action="store_true",
        help="instead of the benchmark, Python bytecodes per request of the in-memory "
        "middleware and FastAPI apps (a count the machine's load cannot move)",
    )
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.profile:
        from benchmarks.profiling import profile

        print(asyncio.run(profile(args.profile)))
        return 0
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.faults:
        from benchmarks import faults

        rows, skipped = asyncio.run(faults.run_faults(mode, args.backends))
        print(faults.report(rows, skipped, mode))
        _write(faults.as_json(rows, skipped, mode), args.json)
        return 0
    if args.bytecodes:
        from benchmarks import bytecodes

        _write(json.dumps(bytecodes.report(), indent=2), args.json)
        return 0
    if args.instructions:
        from benchmarks import instructions

        _write(json.dumps(instructions.report(mode), indent=2), args.json)
        return 0
    if args.rivals:
        from benchmarks import rivals

        _write(json.dumps(rivals.report(mode, not args.spread_cpus), indent=2), args.json)
        return 0
    if args.real_server:
        from benchmarks import real_server

        served = real_server.measure(mode)
        print(real_server.report(served))
        _write(real_server.as_json(served), args.json)
        return 0
    settings = MODES[mode]
    if args.spread_cpus:
        settings = replace(settings, one_cpu=False)
    result = asyncio.run(run(settings, args.backends))
    print(markdown(result))
    sections: dict[str, Any] = {}
    if "memory" in args.backends:
        sections["metrics_overhead"] = metrics_overhead.report(mode)
        sections["middleware_overhead"] = middleware_overhead.report(mode)
        sections["identity"] = identity.report(mode)
        sections["configurations"] = configurations.report(mode)
    if "redis" in args.backends:
        sections["redis_server_time"] = redis_server_time.report(mode)
    if mode == "full":
        from benchmarks import real_server

        served = real_server.measure(mode)
        print("\n" + real_server.report(served))
        sections["real_server"] = real_server.as_dict(served)
    result.checks += section_checks(sections)
    print("\n" + targets(result.checks))
    _write(json.dumps({**as_json(result), **sections}, indent=2), args.json)
    return 0


def _write(doc: str, path: Optional[str]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as out:
            out.write(doc + "\n")
    else:
        print("\n```json\n" + doc + "\n```")


if __name__ == "__main__":
    sys.exit(main())
