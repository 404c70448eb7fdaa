"""What a run produces: timed rows, commands per decision, bytes per key, and target checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from benchmarks.timing import Spread

__all__ = [
    "Check",
    "CommandCount",
    "Comparison",
    "Holds",
    "KeyMemory",
    "ProcessRow",
    "Row",
    "Run",
]


@dataclass
class Row:
    """One variant of one group (store, workload, concurrency); times in microseconds per request.

    `per_request_us` spreads, over repetitions, each block's median request time (`mean_us`:
    its total time / requests). `overhead_us` is the difference to the group's "no limiter"
    baseline, repetition by repetition; `floor_us` the floor variant's overhead: the no-op
    dependency's, making the store's raw round trip where there is a store. `ratio` spreads
    overhead / floor computed within each repetition; `mean_ratio` is the median of the same
    quotients computed from means. `request_ratio` compares whole requests: throttled /
    floor variant. `judged_on` says which of the two is the row's figure, the one the
    `target` (if any) bounds: "overhead" or "request".
    """

    store: str
    workload: str
    concurrency: int
    variant: str
    kind: str
    rate: str = ""
    per_request_us: Optional[Spread] = None
    mean_us: Optional[Spread] = None
    overhead_us: Optional[Spread] = None
    floor_us: Optional[Spread] = None
    ratio: Optional[Spread] = None
    mean_ratio: Optional[float] = None
    request_ratio: Optional[Spread] = None
    target: Optional[float] = None
    judged_on: str = ""
    met: Optional[bool] = None
    issues: str = ""
    """The issues that set `target` (`"6, 16"`): `targets.speed_issues`."""
    statuses: dict[int, int] = field(default_factory=dict)
    note: str = ""


@dataclass
class CommandCount:
    """Server commands per decision, from the server's own statistics: `rounds` holds the
    commands counted in each round of `decisions` decisions, `per_decision` the fewest / decisions."""

    store: str
    strategy: str
    workload: str
    decisions: int
    rounds: list[int]
    per_decision: float
    target: str = ""
    met: Optional[bool] = None
    issues: str = ""


@dataclass
class KeyMemory:
    """Bytes the in-memory backend holds per tracked key (tracemalloc, over `keys` keys)."""

    strategy: str
    keys: int
    bytes_per_key: float


@dataclass
class ProcessRow:
    """One variant timed in `processes` worker processes at once, each with `concurrency`
    requests in flight, on one store (in memory: a store per process); wall time in
    microseconds per request, spread over every process's repetitions. `overhead_us` is the
    difference to "no limiter" within each process and repetition."""

    store: str
    variant: str
    processes: int
    concurrency: int
    per_request_us: Optional[Spread] = None
    overhead_us: Optional[Spread] = None


@dataclass
class Holds:
    """How long a decision held the event loop, in the worker processes deciding at once: wall
    time in microseconds of each stretch a decision ran without suspending (a decision that
    never suspends is one stretch). `suspended` decisions waited for the store (on SQLite:
    for another process's write lock, sleeping, so the loop served other tasks meanwhile)."""

    store: str
    processes: int
    decisions: int
    suspended: int
    stretches: int
    p50_us: float
    p99_us: float
    max_us: float


@dataclass
class Comparison:
    """SQLite's throttle overhead against memory's and Redis's, for one strategy, workload
    and mode (one process sequential or concurrent, or several processes): the issue's
    targets, `sqlite / memory <= memory_target` and `redis / sqlite >= redis_target`."""

    strategy: str
    workload: str
    mode: str
    sqlite_us: float
    memory_us: Optional[float]
    redis_us: Optional[float]
    vs_memory: Optional[float]
    vs_redis: Optional[float]
    memory_target: Optional[float]
    redis_target: Optional[float]
    memory_met: Optional[bool]
    redis_met: Optional[bool]


@dataclass
class Check:
    """One target: what was measured against which limit, whether it was met (None: not
    measured), and the issues that set it (`"16"`, `"6, 16"`)."""

    name: str
    measured: str
    limit: str
    met: Optional[bool]
    issues: str = ""


@dataclass
class Run:
    """A whole run: `meta` (settings, versions, machine), each store's description (or why
    it was not available), and what was measured."""

    meta: dict[str, Any]
    stores: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    counts: list[CommandCount] = field(default_factory=list)
    memory: list[KeyMemory] = field(default_factory=list)
    processes: list[ProcessRow] = field(default_factory=list)
    holds: list[Holds] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
