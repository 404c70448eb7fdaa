"""The issues' targets: which rows, counts and sections they apply to, and the checks a run reports."""

from __future__ import annotations

from typing import Any, Optional

from benchmarks.results import Check, CommandCount, Comparison, ProcessRow, Row
from benchmarks.settings import CONCURRENCY
from traffik.strategies import BUILTIN_STRATEGIES

__all__ = [
    "CONTENDED_COMMANDS",
    "MEMCACHED_CONTENDED",
    "MEMORY_TARGETED",
    "SQLITE_VS_MEMORY",
    "SQLITE_VS_REDIS",
    "checks",
    "commands_issues",
    "commands_met",
    "commands_target",
    "compare_sqlite",
    "judged_on",
    "printed",
    "section_checks",
    "speed_issues",
    "speed_target",
]

MEMORY_TARGETED = frozenset(
    {"FixedWindow", "SlidingWindowCounter", "TokenBucket", "LeakyBucket", "GCRA"}
)
_MEMCACHED_COMMANDS = {"FixedWindow": "== 1", "TokenBucket": "<= 2", "GCRA": "<= 2"}
_ORDER = [cls.__name__ for cls in BUILTIN_STRATEGIES]
MEMCACHED_CONTENDED = tuple(name for name in _ORDER if name != "FixedWindow")
"""Issue 16, Memcached under contention: `SlidingWindowCounter` (two `incr` counters) and
every strategy that needs `cas` (all built-ins but `FixedWindow`, one `incr`)."""
CONTENDED_COMMANDS = "<= 1.5"
"""Issue 16: commands per decision for 50 concurrent hits on one key on Memcached."""
SQLITE_VS_MEMORY = 2.0
"""Issue 14: SQLite's overhead per decision at most 2x the in-memory overhead, in one process."""
SQLITE_VS_REDIS = 3.0
"""Issue 14: SQLite at least 3x faster than Redis on loopback (overhead per decision)."""


def judged_on(store: str, rejected: bool) -> str:
    """What a speed target bounds: `"request"` (whole request / floor request) for a rejected
    request in memory, which the issue compares with "the framework's own 429 path plus the
    no-op dependency"; `"overhead"` (throttle overhead / floor) everywhere else."""
    return "request" if store == "memory" and rejected else "overhead"


def printed(value: float, digits: int = 2) -> float:
    """`value` as the report prints it, `digits` decimals: verdicts compare this, so a ratio
    printed 1.25 meets a target of at most 1.25 and one printed 1.26 misses it."""
    return float(f"{value:.{digits}f}")


def speed_issues(store: str, rejected: bool, concurrency: int) -> str:
    """The issues that set a row's speed target: issue 6 set them all; issue 16 restates
    memory's for allowed requests (sequential and 50 concurrent) and bounds Redis's
    *sequential* overhead of allowed requests; concurrent and saturated Redis cells, and
    Memcached's, are issue 6's alone."""
    if not rejected and (store == "memory" or (store == "redis" and concurrency == 1)):
        return "6, 16"
    return "6"


def speed_target(store: str, strategy: str) -> Optional[float]:
    """The largest allowed ratio: 1.4 in memory (five strategies), 1.25 on Redis (every
    strategy) and on Memcached (`FixedWindow`), the floor including the raw round trip;
    None where the issue sets no target."""
    if store == "memory":
        return 1.4 if strategy in MEMORY_TARGETED else None
    if store == "redis" or (store == "memcached" and strategy == "FixedWindow"):
        return 1.25
    return None


def commands_target(store: str, strategy: str, rejected: bool = False, width: int = 1) -> str:
    """`"== 1"`, `"<= 2"`, `"<= 1.5"` or `""` (no target): server commands per decision,
    `width` at a time. Sequential (issue 6): 1 on Redis, Memcached's by strategy; a client
    whose every request is refused costs at most one: after the first refusal the process
    remembers it until its wait ends (`traffik.refusals`), so most cost none. At 50
    concurrent on one key (issue 16): at most 1.5 on Memcached for `MEMCACHED_CONTENDED`."""
    if width > 1:
        return (
            CONTENDED_COMMANDS if store == "memcached" and strategy in MEMCACHED_CONTENDED else ""
        )
    target = ""
    if store == "redis":
        target = "== 1"
    elif store == "memcached":
        target = _MEMCACHED_COMMANDS.get(strategy, "")
    return "<= 1" if target and rejected else target


def commands_issues(width: int) -> str:
    """The issue that set a count's target: 16 for concurrent hits on one key, else 6."""
    return "16" if width > 1 else "6"


def commands_met(target: str, per_decision: float) -> Optional[bool]:
    if not target:
        return None
    op, value = target.split()
    return per_decision == float(value) if op == "==" else per_decision <= float(value)


def _overhead(row: Optional[Row | ProcessRow]) -> Optional[float]:
    if row is None or row.overhead_us is None:
        return None
    return row.overhead_us["median"]


def _compare(
    strategy: str,
    workload: str,
    mode: str,
    found: dict[str, Row | ProcessRow],
    memory_target: Optional[float],
    redis_target: Optional[float],
) -> Optional[Comparison]:
    sqlite, memory, redis = (_overhead(found.get(s)) for s in ("sqlite", "memory", "redis"))
    if sqlite is None:
        return None
    vs_memory = None if memory is None or memory <= 0 or sqlite <= 0 else sqlite / memory
    vs_redis = None if redis is None or sqlite <= 0 else redis / sqlite
    return Comparison(
        strategy,
        workload,
        mode,
        sqlite,
        memory,
        redis,
        vs_memory,
        vs_redis,
        memory_target,
        redis_target,
        None if vs_memory is None or memory_target is None else printed(vs_memory) <= memory_target,
        None if vs_redis is None or redis_target is None else printed(vs_redis) >= redis_target,
    )


def compare_sqlite(rows: list[Row], processes: list[ProcessRow]) -> list[Comparison]:
    """SQLite's throttle overhead against memory's and Redis's, strategy by strategy, in each
    workload and mode measured; the memory target applies to one process only. The Redis
    target does not apply to the saturated workload: there every request but the first is
    refused from the process's memory of refused clients (`traffik.refusals`) on both
    stores, so neither makes a decision to compare."""
    groups: dict[tuple[str, str, str], dict[str, Row | ProcessRow]] = {}
    for row in rows:
        if row.kind == "throttle":
            mode = "1 process, " + (
                "sequential" if row.concurrency == 1 else f"{row.concurrency} concurrent"
            )
            groups.setdefault((row.variant, row.workload, mode), {})[row.store] = row
    for prow in processes:
        mode = f"{prow.processes} processes, {prow.concurrency} concurrent each"
        groups.setdefault((prow.variant, "one key", mode), {})[prow.store] = prow
    found = []
    for (strategy, workload, mode), by_store in groups.items():
        memory_target = SQLITE_VS_MEMORY if mode.startswith("1 process") else None
        redis_target = None if workload == "saturated" else SQLITE_VS_REDIS
        comparison = _compare(strategy, workload, mode, by_store, memory_target, redis_target)
        if comparison is not None:
            found.append(comparison)
    return found


def _unmeasured(c: Comparison, other: str, figure: Optional[float]) -> str:
    """Why a SQLite comparison has no ratio: SQLite's overhead not above zero (a run too
    short to tell), or the other store not measured."""
    if c.sqlite_us <= 0:
        return f"not measured: sqlite overhead {c.sqlite_us:.1f} us, not above 0"
    if figure is None:
        return f"{other} not measured"
    return f"not measured: {other} overhead {figure:.1f} us, not above 0"


def _comparison_checks(comparisons: list[Comparison]) -> list[Check]:
    found = []
    for c in comparisons:
        name = f"sqlite {c.strategy}, {c.workload}, {c.mode}"
        if c.memory_target is not None:
            measured = (
                _unmeasured(c, "memory", c.memory_us)
                if c.vs_memory is None
                else f"{c.vs_memory:.2f}x"
            )
            limit = f"<= {c.memory_target}x the in-memory overhead"
            found.append(Check(f"{name}: overhead vs memory", measured, limit, c.memory_met, "14"))
        if c.redis_target is None:
            continue
        measured = (
            _unmeasured(c, "redis", c.redis_us) if c.vs_redis is None else f"{c.vs_redis:.2f}x"
        )
        limit = f"redis overhead >= {c.redis_target}x sqlite's"
        found.append(Check(f"{name}: Redis vs SQLite", measured, limit, c.redis_met, "14"))
    return found


def _contention_checks(rows: list[Row]) -> list[Check]:
    """Issue 16, Memcached under contention: on one key, the throttle's overhead per request
    at 50 concurrent no more than sequential, for `MEMCACHED_CONTENDED`."""
    found: dict[tuple[str, int], Row] = {
        (row.variant, row.concurrency): row
        for row in rows
        if row.store == "memcached" and row.kind == "throttle" and row.workload == "one key"
    }
    checks = []
    limit = "<= 1x the sequential overhead per request"
    for strategy in MEMCACHED_CONTENDED:
        sequential, concurrent = found.get((strategy, 1)), found.get((strategy, CONCURRENCY))
        if sequential is None and concurrent is None:  # (Memcached not measured: said once)
            continue
        name = f"memcached {strategy}, one key: {CONCURRENCY} concurrent vs sequential overhead"
        seq, conc = _overhead(sequential), _overhead(concurrent)
        if seq is None or conc is None:
            checks.append(Check(name, "not measured", limit, None, "16"))
        elif seq <= 0:
            measured = f"not measured: sequential overhead {seq:.1f} us, not above 0"
            checks.append(Check(name, measured, limit, None, "16"))
        else:
            measured = f"{conc / seq:.2f}x ({conc:.1f} against {seq:.1f} us)"
            checks.append(Check(name, measured, limit, printed(conc / seq) <= 1.0, "16"))
    return checks


def checks(
    rows: list[Row],
    counts: list[CommandCount],
    unavailable: dict[str, str],
    comparisons: list[Comparison],
) -> list[Check]:
    """Every target of the main tables: measured ones from rows, counts and SQLite's
    comparisons, Memcached's contention, and one "not measured" check per store that was
    not available (`section_checks` adds the sections after them)."""
    found = _comparison_checks(comparisons)
    for row in rows:
        if row.target is None:
            continue
        mode = "sequential" if row.concurrency == 1 else f"{row.concurrency} concurrent"
        judged = row.ratio if row.judged_on == "overhead" else row.request_ratio
        measured = row.note or (f"{judged['median']:.2f}x" if judged else "no ratio")
        found.append(
            Check(
                f"{row.store} {row.variant}, {row.workload}, {mode}: {row.judged_on}",
                measured,
                f"<= {row.target}x floor {'request' if row.judged_on == 'request' else ''}".strip(),
                row.met,
                row.issues,
            )
        )
    for count in counts:
        if count.target:
            found.append(
                Check(
                    f"{count.store} {count.strategy}, {count.workload}: commands per decision",
                    f"{count.per_decision:g}",
                    count.target,
                    count.met,
                    count.issues,
                )
            )
    found += _contention_checks(rows)
    for store, reason in unavailable.items():
        found.append(Check(f"{store}: every target", reason, "", None))
    return found


def _metrics_checks(rows: list[dict[str, Any]]) -> list[Check]:
    limit = "<= 2 us over metrics off"
    if not rows:
        why = "not measured: prometheus-client is not installed"
        return [Check("metrics on vs off", why, limit, None, "15")]
    return [
        Check(
            f"metrics on vs off, {row['workload']}",
            f"{row['overhead_us']['median']:.2f} us",
            f"<= {row['target_us']:g} us over metrics off",
            row["met"],
            "15",
        )
        for row in rows
    ]


def _server_time_checks(rows: list[dict[str, Any]]) -> list[Check]:
    """Each script's server time over FixedWindow's (FixedWindow is not judged against
    itself, nor the trivial script, the floor of any script)."""
    limit = "<= 2x FixedWindow's usec_per_call"
    judged = [row for row in rows if row["target"] is not None]
    if not judged:
        return [Check("redis script server time", "not measured", limit, None, "16")]
    return [
        Check(
            f"redis {row['strategy']}: script server time vs FixedWindow's",
            "no ratio" if row["ratio"] is None else f"{row['ratio']:.2f}x",
            f"<= {row['target']:g}x FixedWindow's usec_per_call",
            row["met"],
            "16",
        )
        for row in judged
    ]


def _real_server_checks(served: Optional[dict[str, Any]]) -> list[Check]:
    """One uvicorn worker, the throttle attached as a dependency and as middleware, against
    no limiter (requests per second; printed with 3 decimals)."""
    found = []
    for way, key, met in (
        ("a dependency", "ratio", "target_met"),
        ("ThrottleMiddleware", "middleware_ratio", "middleware_target_met"),
    ):
        name = f"real server: FixedWindow in memory as {way} vs no limiter"
        if served is None:
            measured = "not measured: the full run and --real-server measure it"
            found.append(Check(name, measured, ">= 0.9x the requests per second", None, "16"))
            continue
        limit = f">= {served['meta']['target_ratio']:g}x the requests per second"
        floor = (  # (the most this way can reach here: `benchmarks.fused`, FastAPI's `Depends`)
            f"hand-fused {served['fused_ratio']:.3f}x"
            if key == "middleware_ratio" and "fused_ratio" in served
            else f"a no-op dependency {served['dependency_ratio']:.3f}x"
            if key == "ratio"
            else None
        )
        measured = f"{served[key]:.3f}x" + (f" ({floor})" if floor else "")
        found.append(Check(name, measured, limit, served[met], "16"))
    return found


def section_checks(doc: dict[str, Any]) -> list[Check]:
    """The targets of the sections after the main tables, from their JSON in `doc` (a
    section the run did not measure has no key there, and no check, except the real
    server's, which only the full run measures): metrics on vs off (issue 15),
    `ThrottleMiddleware` over a no-op middleware, each Redis script's server time and a
    real server's requests per second (issue 16)."""
    found = []
    if "metrics_overhead" in doc:
        found += _metrics_checks(doc["metrics_overhead"])
    if "middleware_overhead" in doc:
        row = doc["middleware_overhead"]
        fused = row.get("fused_us")
        found.append(
            Check(
                "ThrottleMiddleware over a no-op ASGI middleware",
                f"{row['overhead_us']['median']:.2f} us"
                + (f" (hand-fused floor {fused['median']:.2f} us)" if fused else ""),
                f"<= {row['target_us']:g} us",
                row["met"],
                "16",
            )
        )
    if "redis_server_time" in doc:
        found += _server_time_checks(doc["redis_server_time"])
    found += _real_server_checks(doc.get("real_server"))
    return found
