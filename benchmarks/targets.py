"""The issue's targets: which rows and counts they apply to, and the list of checks a run reports."""

from __future__ import annotations

from typing import Optional

from benchmarks.results import Check, CommandCount, Row

__all__ = [
    "MEMORY_TARGETED",
    "checks",
    "commands_met",
    "commands_target",
    "judged_on",
    "speed_target",
]

MEMORY_TARGETED = frozenset(
    {"FixedWindow", "SlidingWindowCounter", "TokenBucket", "LeakyBucket", "GCRA"}
)
_MEMCACHED_COMMANDS = {"FixedWindow": "== 1", "TokenBucket": "<= 2", "GCRA": "<= 2"}


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


def commands_target(store: str, strategy: str) -> str:
    """`"== 1"`, `"<= 2"`, or `""` (no target): server commands per decision."""
    if store == "redis":
        return "== 1"
    if store == "memcached":
        return _MEMCACHED_COMMANDS.get(strategy, "")
    return ""


def commands_met(target: str, per_decision: float) -> Optional[bool]:
    if not target:
        return None
    op, value = target.split()
    return per_decision == float(value) if op == "==" else per_decision <= float(value)


def checks(rows: list[Row], counts: list[CommandCount], unavailable: dict[str, str]) -> list[Check]:
    """Every target of the run: measured ones from rows and counts, and one "not measured"
    check per store that was not available."""
    found = []
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
