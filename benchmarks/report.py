"""The report: Markdown tables for people, one JSON document for machines."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Optional

from benchmarks.results import (
    Check,
    CommandCount,
    Comparison,
    Holds,
    KeyMemory,
    ProcessRow,
    Row,
    Run,
)
from benchmarks.timing import Spread
from traffik.strategies import BUILTIN_STRATEGIES

__all__ = ["READING", "as_json", "markdown", "targets"]

_STRATEGY_ORDER = {cls.__name__: i for i, cls in enumerate(BUILTIN_STRATEGIES)}
_STORE_ORDER = {"memory": 0, "sqlite": 1, "redis": 2, "memcached": 3}
_JUDGED = {"overhead": "x floor", "request": "x floor request"}

READING = """\
How to read it: each group (store, workload, concurrency) times its variants in one process,
interleaved, repetition after repetition. A figure is the median, over repetitions, of each
block's median request time in microseconds (concurrency 50: batch time / 50), with the
min and max over repetitions. In memory the clock is this thread's CPU time (other processes
on the machine do not count); on SQLite, Redis and Memcached it is wall time (the wait is the
cost). Sequential groups on a Redis or Memcached server the run started put the server and
the benchmark on one CPU (the run's JSON lists them under `sequential_on_one_cpu`): one
request at a time never runs both at once, and a wake-up across CPUs costs what the machine
makes it cost (on a shared VM, a loopback `EVALSHA` took 94 or 166 µs, in phases, against
71-75 µs on one CPU), and falls on whichever side reaches its wait before the reply is in.
Concurrent groups are not pinned; `--spread-cpus` leaves sequential ones unpinned too. `overhead` = throttled - no limiter; `floor` = the floor variant - no limiter, where the
floor variant is the no-op dependency in memory, and on a store a no-op dependency that
makes one raw round trip (redis-py `EVALSHA` of `return 1`, aiomcache `incr`, one SQLite
`BEGIN IMMEDIATE`/`UPDATE`/`COMMIT`), so the round trip is paid inside a request as the
throttle's is (the round trip timed alone is shown too). `x floor` = overhead / floor and `x floor request` = throttled request / floor
variant's request, each computed within a repetition (a slow phase of the machine cancels
out), median (min-max). In the saturated
workload every request is rejected, and the baselines answer 429 too: the framework's own
429 path (the endpoint raises it) and a no-op dependency that raises it. The targets bound
`x floor`, except a rejected request in memory: the issue bounds the whole request there
("1.4x the framework's own 429 path plus the no-op dependency")."""


def _us(value: Optional[Spread]) -> str:
    if value is None:
        return ""
    return f"{value['median']:.1f} ({value['min']:.1f}-{value['max']:.1f})"


def _ratio(value: Optional[Spread]) -> str:
    if value is None:
        return ""
    return f"{value['median']:.2f} ({value['min']:.2f}-{value['max']:.2f})"


def _verdict(met: Optional[bool]) -> str:
    return "" if met is None else ("met" if met else "**MISSED**")


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def _issues(issues: str) -> str:
    """`(issue 6)`, `(issues 6, 16)`: which issue set a target."""
    if not issues:
        return ""
    return f"(issue{'s' if ',' in issues else ''} {issues})"


def _target(row: Row) -> str:
    if row.target is None:
        return ""
    return f"{_JUDGED[row.judged_on]} <= {row.target} {_issues(row.issues)}".strip()


def _conc(row: Row) -> str:
    return "1" if row.concurrency == 1 else str(row.concurrency)


def _baselines(rows: list[Row]) -> str:
    groups: dict[tuple[str, str, int], list[Row]] = {}
    for row in rows:
        if row.kind != "throttle":
            groups.setdefault((row.store, row.workload, row.concurrency), []).append(row)
    lines = []
    for (store, workload, concurrency), found in groups.items():
        base, floor, *with_trip = (r for r in found if r.kind == "baseline")
        raw = next((r for r in found if r.kind == "raw"), None)
        trip = with_trip[0] if with_trip else None
        lines.append(
            [
                store,
                workload,
                str(concurrency),
                _us(base.per_request_us),
                f"{_us(floor.per_request_us)}, +{_us(floor.overhead_us)}",
                f"{raw.variant}: {_us(raw.per_request_us)}" if raw else "",
                f"{_us(trip.per_request_us)}, +{_us(trip.overhead_us)}" if trip else "",
            ]
        )
    header = [
        "store",
        "workload",
        "conc",
        "no limiter",
        "no-op dependency, its overhead",
        "raw round trip alone",
        "no-op dependency + round trip, its overhead",
    ]
    return _table(header, lines)


def _throttles(rows: list[Row]) -> str:
    chosen = [row for row in rows if row.kind == "throttle"]
    chosen.sort(key=lambda r: (_STORE_ORDER.get(r.store, 9), _STRATEGY_ORDER.get(r.variant, 99)))
    lines = [
        [
            row.store,
            row.variant,
            row.workload,
            _conc(row),
            _us(row.per_request_us),
            _us(row.overhead_us),
            _us(row.floor_us),
            _ratio(row.ratio),
            _ratio(row.request_ratio),
            _target(row),
            " ".join(filter(None, [_verdict(row.met), row.note])),
        ]
        for row in chosen
    ]
    header = [
        "store",
        "strategy",
        "workload",
        "conc",
        "us/request",
        "overhead",
        "floor",
        "x floor",
        "x floor request",
        "target",
        "",
    ]
    return _table(header, lines)


def _summary_matrix(rows: list[Row]) -> str:
    """One line per store and strategy: the ratio each target bounds, per workload and
    concurrency (`x floor request` for a rejected request in memory, `x floor` elsewhere)."""
    chosen = [row for row in rows if row.kind == "throttle"]
    columns = list(dict.fromkeys((row.workload, row.concurrency) for row in chosen))
    table: dict[tuple[str, str], dict[tuple[str, int], Row]] = {}
    for row in chosen:
        table.setdefault((row.store, row.variant), {})[(row.workload, row.concurrency)] = row
    lines = []
    for (store, strategy), found in table.items():
        cells = []
        for column in columns:
            cell = found.get(column)
            judged = None
            if cell is not None:
                judged = cell.request_ratio if cell.judged_on == "request" else cell.ratio
            text = "" if judged is None else f"{judged['median']:.2f}"
            cells.append(f"**{text}**" if cell is not None and cell.met is False else text)
        targets = {f"{_JUDGED[r.judged_on]} <= {r.target}" for r in found.values() if r.target}
        lines.append([store, strategy, *cells, "; ".join(sorted(targets))])
    header = [f"{w}, {'seq' if c == 1 else f'{c} conc'}" for w, c in columns]
    return _table(["store", "strategy", *header, "target"], lines)


def _commands(counts: list[CommandCount]) -> str:
    if not counts:
        return "(no server stores measured)"
    workloads = list(dict.fromkeys(c.workload for c in counts))
    table: dict[tuple[str, str], dict[str, CommandCount]] = {}
    for count in counts:
        table.setdefault((count.store, count.strategy), {})[count.workload] = count
    lines = []
    for (store, strategy), found in table.items():
        verdicts = [c.met for c in found.values() if c.met is not None]
        targets: dict[str, list[str]] = {}
        for workload, counted in found.items():
            if counted.target:
                where = targets.setdefault(f"{counted.target} {_issues(counted.issues)}", [])
                where.append(workload)
        cells = []
        for workload in workloads:
            cell = found.get(workload)
            text = "" if cell is None else f"{cell.per_decision:g}"
            cells.append(f"**{text}**" if cell is not None and cell.met is False else text)
        target = "; ".join(f"{', '.join(where)}: {t}" for t, where in targets.items())
        verdict = _verdict(all(verdicts) if verdicts else None)
        lines.append([store, strategy, *cells, target, verdict])
    return _table(["store", "strategy", *workloads, "targets", ""], lines)


def _memory(memory: list[KeyMemory]) -> str:
    if not memory:
        return "(in-memory backend not measured)"
    lines = [[m.strategy, f"{m.bytes_per_key:.0f}", f"{m.keys:,}"] for m in memory]
    return _table(["strategy", "bytes per key", "keys"], lines)


def _rates(rows: list[Row]) -> str:
    """`one key 1000000/d (SlidingWindowLog: 10000/10ms), ...`: each workload's rate, and exceptions."""
    by_workload: dict[str, dict[str, list[str]]] = {}
    first = rows[0].store if rows else ""
    for row in rows:
        if row.kind == "throttle" and row.concurrency == 1 and row.store == first:
            by_workload.setdefault(row.workload, {}).setdefault(row.rate, []).append(row.variant)
    parts = []
    for workload, rates in by_workload.items():
        common = max(rates, key=lambda rate: len(rates[rate]))
        others = [f"{', '.join(names)}: {rate}" for rate, names in rates.items() if rate != common]
        parts.append(f"{workload} {common}" + (f" ({'; '.join(others)})" if others else ""))
    return "Rates: " + "; ".join(parts) + "." if parts else ""


def _ratio_cell(figure: Optional[float], value: Optional[float], met: Optional[bool]) -> str:
    if figure is None:
        return "not measured"
    if value is None:
        return "overhead not above 0"
    text = f"{value:.2f}"
    return f"**{text}**" if met is False else text


def _sqlite(comparisons: list[Comparison]) -> str:
    """SQLite's overhead per decision next to memory's and Redis's, with the issue's targets."""
    if not comparisons:
        return "(SQLite not measured)"
    order = {name: i for i, name in enumerate(_STRATEGY_ORDER)}
    chosen = sorted(comparisons, key=lambda c: (c.mode, c.workload, order.get(c.strategy, 99)))
    lines = [
        [
            c.mode,
            c.workload,
            c.strategy,
            f"{c.sqlite_us:.1f}",
            "" if c.memory_us is None else f"{c.memory_us:.1f}",
            _ratio_cell(c.memory_us, c.vs_memory, c.memory_met),
            "" if c.redis_us is None else f"{c.redis_us:.1f}",
            _ratio_cell(c.redis_us, c.vs_redis, c.redis_met)
            + ("" if c.redis_target is not None or c.redis_us is None else " (no target)"),
        ]
        for c in chosen
    ]
    header = [
        "mode",
        "workload",
        "strategy",
        "sqlite overhead",
        "memory overhead",
        "sqlite / memory (<= 2 in one process)",
        "redis overhead",
        "redis / sqlite (>= 3)",
    ]
    note = (
        "\n\nSaturated: no Redis target. Both stores answer a client refused a moment ago "
        "from the process's memory of refusals, so neither makes a decision to compare."
    )
    return _table(header, lines) + note


def _processes(rows: list[ProcessRow], holds: list[Holds]) -> str:
    if not rows:
        return "(not measured: it runs when SQLite is among the stores)"
    chosen = sorted(
        rows, key=lambda r: (_STORE_ORDER.get(r.store, 9), _STRATEGY_ORDER.get(r.variant, -1))
    )
    lines = [[r.store, r.variant, _us(r.per_request_us), _us(r.overhead_us)] for r in chosen]
    held = [
        [
            h.store,
            f"{h.decisions:,}",
            f"{h.suspended:,}",
            f"{h.stretches:,}",
            f"{h.p50_us:.1f}",
            f"{h.p99_us:.1f}",
            f"{h.max_us:.1f}",
        ]
        for h in holds
    ]
    first = rows[0]
    return (
        f"{first.processes} worker processes at once, {first.concurrency} requests in flight in "
        "each, one key (in memory: a store per process, so its limit is not shared). Wall "
        "time, median (min-max) over every process's repetitions.\n\n"
        + _table(["store", "variant", "us/request", "overhead"], lines)
        + "\n\nHow long a GCRA decision held a worker's event loop: wall time of each stretch "
        "it ran without suspending, deciding one at a time in every worker at once on one "
        "key; a suspended decision waited for the store while the loop was free.\n\n"
        + _table(
            [
                "store",
                "decisions",
                "suspended",
                "stretches",
                "held p50 us",
                "held p99 us",
                "held max us",
            ],
            held,
        )
    )


def _counted(checks: list[Check]) -> str:
    met = sum(1 for c in checks if c.met is True)
    missed = sum(1 for c in checks if c.met is False)
    return f"{met} met, {missed} missed, {sum(1 for c in checks if c.met is None)} not measured"


def _by_issue(checks: list[Check]) -> str:
    issues = sorted({i for c in checks for i in c.issues.split(", ") if i}, key=int)
    return "; ".join(
        f"issue {i}: {_counted([c for c in checks if i in c.issues.split(', ')])}" for i in issues
    )


def _issue_16(checks: list[Check]) -> str:
    """Every figure issue 16 lists, next to its target."""
    chosen = [c for c in checks if "16" in c.issues.split(", ")]
    if not chosen:
        return "(none of its figures measured in this run)"
    lines = [[c.name, c.measured, c.limit, _verdict(c.met) or "not measured"] for c in chosen]
    return _table(["figure", "measured", "target", ""], lines)


def targets(checks: list[Check]) -> str:
    """The closing sections: issue 16's figures against their targets, then the count of
    every target of the run (the main tables' and the sections'), by issue, and the misses."""
    missed = [c for c in checks if c.met is False]
    unmeasured = [c for c in checks if c.met is None]
    out = [f"Targets: {_counted(checks)}.", f"By issue: {_by_issue(checks)}."]
    out += [
        f"- MISSED {c.name}: {c.measured} (target {c.limit}) {_issues(c.issues)}" for c in missed
    ]
    out += [
        f"- not measured {c.name}: {c.measured.removeprefix('not measured: ')}" for c in unmeasured
    ]
    return (
        "### Issue 16: every figure against its target\n\n"
        + _issue_16(checks)
        + "\n\n### Targets (every section of the run)\n\n"
        + "\n".join(out)
    )


def markdown(run: Run) -> str:
    """The report for people: stores, baselines, throttles, commands, memory (`targets`
    closes the run, after the other sections)."""
    meta, settings = run.meta, run.meta["settings"]
    stores = "\n".join(f"- {name}: {detail}" for name, detail in run.stores.items())
    return "\n\n".join(
        [
            f"## Traffik benchmark ({meta['mode']}): Python {meta['python']}, {meta['platform']}, "
            f"{meta['cpus']} CPUs, {meta['seconds']:.0f} s",
            f"Per group: {settings['repetitions']} repetitions of a block of "
            f"{settings['requests']} requests in memory, {settings['network_requests']} on "
            f"SQLite/Redis/Memcached (at concurrency 50: at least 4 batches); {settings['keys']:,} "
            f"client keys in the many-keys workload. {_rates(run.rows)}"
            f"\n\n{stores}",
            READING,
            "### Summary: x floor (x floor request for a rejected request in memory), "
            "median; **bold** = target missed\n\n" + _summary_matrix(run.rows) + "\n\n"
            "Issue 6 set every target here; issue 16 restates memory's for allowed requests "
            "(one key and many keys, sequential and 50 concurrent) and sets Redis's for "
            "*sequential* allowed requests (1.25x the raw-EVALSHA floor). Redis's 50 concurrent "
            "and saturated cells, Memcached's, and memory's saturated ones are issue 6's alone "
            "(the Throttles table names the issues of each row).",
            "### Baselines (us per request, median (min-max))\n\n" + _baselines(run.rows),
            "### Throttles\n\n" + _throttles(run.rows),
            "### SQLite against memory and Redis: overhead per decision (us), median\n\n"
            + _sqlite(run.comparisons),
            "### Several processes at once\n\n" + _processes(run.processes, run.holds),
            "### Server commands per decision\n\n" + _commands(run.counts),
            "### In-memory backend: bytes per tracked key\n\n" + _memory(run.memory),
        ]
    )


def as_json(run: Run) -> dict[str, Any]:
    """Everything the run measured, JSON-ready, with a count of targets met and missed."""
    return {
        "meta": run.meta,
        "stores": run.stores,
        "rows": [asdict(row) for row in run.rows],
        "commands_per_decision": [asdict(count) for count in run.counts],
        "bytes_per_key": [asdict(memory) for memory in run.memory],
        "processes": [asdict(row) for row in run.processes],
        "holds": [asdict(holds) for holds in run.holds],
        "sqlite_comparisons": [asdict(c) for c in run.comparisons],
        "checks": [asdict(check) for check in run.checks],
        "summary": {
            "met": sum(1 for c in run.checks if c.met is True),
            "missed": sum(1 for c in run.checks if c.met is False),
            "not_measured": sum(1 for c in run.checks if c.met is None),
        },
    }
