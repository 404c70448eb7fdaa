"""The issue's targets: which rows and counts they apply to, and the list of checks a run reports."""

from __future__ import annotations

from typing import Optional

from benchmarks.results import Check, CommandCount, Comparison, ProcessRow, Row

__all__ = [
    "MEMORY_TARGETED",
    "SQLITE_VS_MEMORY",
    "SQLITE_VS_REDIS",
    "checks",
    "commands_met",
    "commands_target",
    "compare_sqlite",
    "judged_on",
    "speed_target",
]

MEMORY_TARGETED = frozenset(
    {"FixedWindow", "SlidingWindowCounter", "TokenBucket", "LeakyBucket", "GCRA"}
)
_MEMCACHED_COMMANDS = {"FixedWindow": "== 1", "TokenBucket": "<= 2", "GCRA": "<= 2"}
SQLITE_VS_MEMORY = 2.0
"""Issue 14: SQLite's overhead per decision at most 2x the in-memory overhead, in one process."""
SQLITE_VS_REDIS = 3.0
"""Issue 14: SQLite at least 3x faster than Redis on loopback (overhead per decision)."""


def judged_on(store: str, rejected: bool) -> str:
    """What a speed target bounds: `"request"` (whole request / floor request) for a rejected
    request in memory, which the issue compares with "the framework's own 429 path plus the
    no-op dependency"; `"overhead"` (throttle overhead / floor) everywhere else."""
    return "request" if store == "memory" and rejected else "overhead"


def speed_target(store: str, strategy: str) -> Optional[float]:
    """The largest allowed ratio: 1.4 in memory (five strategies), 1.25 on Redis (every
    strategy) and on Memcached (`FixedWindow`), the floor including the raw round trip;
    None where the issue sets no target."""
    if store == "memory":
        return 1.4 if strategy in MEMORY_TARGETED else None
    if store == "redis" or (store == "memcached" and strategy == "FixedWindow"):
        return 1.25
    return None


def commands_target(store: str, strategy: str, rejected: bool = False) -> str:
    """`"== 1"`, `"<= 2"`, or `""` (no target): server commands per decision. A client whose
    every request is refused costs at most one: after the first refusal the process
    remembers it until its wait ends (`traffik.refusals`), so most cost none."""
    target = ""
    if store == "redis":
        target = "== 1"
    elif store == "memcached":
        target = _MEMCACHED_COMMANDS.get(strategy, "")
    return "<= 1" if target and rejected else target


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
    if sqlite is None or sqlite <= 0:
        return None
    vs_memory = None if memory is None or memory <= 0 else sqlite / memory
    vs_redis = None if redis is None else redis / sqlite
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
        None if vs_memory is None or memory_target is None else vs_memory <= memory_target,
        None if vs_redis is None or redis_target is None else vs_redis >= redis_target,
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


def _comparison_checks(comparisons: list[Comparison]) -> list[Check]:
    found = []
    for c in comparisons:
        name = f"sqlite {c.strategy}, {c.workload}, {c.mode}"
        if c.memory_target is not None:
            measured = "memory not measured" if c.vs_memory is None else f"{c.vs_memory:.2f}x"
            limit = f"<= {c.memory_target}x the in-memory overhead"
            found.append(Check(f"{name}: overhead vs memory", measured, limit, c.memory_met))
        if c.redis_target is None:
            continue
        measured = "redis not measured" if c.vs_redis is None else f"{c.vs_redis:.2f}x"
        limit = f"redis overhead >= {c.redis_target}x sqlite's"
        found.append(Check(f"{name}: Redis vs SQLite", measured, limit, c.redis_met))
    return found


def checks(
    rows: list[Row],
    counts: list[CommandCount],
    unavailable: dict[str, str],
    comparisons: list[Comparison],
) -> list[Check]:
    """Every target of the run: measured ones from rows, counts and SQLite's comparisons, and
    one "not measured" check per store that was not available."""
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
                )
            )
    for store, reason in unavailable.items():
        found.append(Check(f"{store}: every target", reason, "", None))
    return found
