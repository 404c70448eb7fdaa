"""One scenario per store and workload: build the apps, time them sequentially and 50 at once, count commands."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

from benchmarks.asgi import Target
from benchmarks.results import CommandCount, Row
from benchmarks.servers import one_cpu
from benchmarks.settings import CONCURRENCY, Settings
from benchmarks.stores import Store
from benchmarks.targets import (
    commands_issues,
    commands_met,
    commands_target,
    judged_on,
    printed,
    speed_issues,
    speed_target,
)
from benchmarks.timing import Samples, Spread, measure, run_block, spread
from benchmarks.workloads import Workload, baseline_targets, prefill, throttled_targets

__all__ = ["run_scenario"]

_US = 1 / 1000.0


def _paired(values: Sequence[float], base: Sequence[float]) -> list[float]:
    return [v - b for v, b in zip(values, base)]


def _floor_name(store: Store, workload: Workload) -> str:
    """The floor variant: the no-op dependency, making the raw round trip on a store with one."""
    _, floor, floor_trip = workload.baselines
    return floor_trip if store.raw_name else floor


def _ratio(overhead: list[float], floor: list[float]) -> Optional[Spread]:
    """Overhead / floor, repetition by repetition (so a slow phase of the machine cancels
    out); None when the floor is not above zero in most repetitions."""
    paired = [o / f for o, f in zip(overhead, floor) if f > 0]
    if len(paired) * 2 <= len(floor):
        return None
    return spread(paired)


def _rows(
    store: Store,
    workload: Workload,
    label: str,
    width: int,
    samples: Samples,
    targets: Sequence[Target],
    rates: dict[str, str],
) -> list[Row]:
    base_name = workload.baselines[0]
    floor_name = _floor_name(store, workload)
    typical, mean = samples.typical, samples.mean
    floor = _paired(typical[floor_name], typical[base_name])
    mean_floor = _paired(mean[floor_name], mean[base_name])
    rows = []
    for target in targets:
        name = target.name
        row = Row(store.name, label, width, name, "throttle", rates.get(name, ""))
        row.per_request_us = spread(typical[name], _US)
        row.mean_us = spread(mean[name], _US)
        row.statuses = dict(target.statuses)
        overhead = _paired(typical[name], typical[base_name])
        if name in workload.baselines:
            row.kind = "baseline"
            if name != base_name:
                row.overhead_us = spread(overhead, _US)
        elif name == store.raw_name:
            row.kind = "raw"
        else:
            row.overhead_us, row.floor_us = spread(overhead, _US), spread(floor, _US)
            row.ratio = _ratio(overhead, floor)
            mean_ratio = _ratio(_paired(mean[name], mean[base_name]), mean_floor)
            row.mean_ratio = None if mean_ratio is None else mean_ratio["median"]
            row.request_ratio = _ratio(typical[name], typical[floor_name])
            row.judged_on = judged_on(store.name, workload.rejected)
            row.target = speed_target(store.name, name)
            if row.target is not None:
                row.issues = speed_issues(store.name, workload.rejected, width)
            judged = row.ratio if row.judged_on == "overhead" else row.request_ratio
            if judged is None:
                row.note = "floor not above noise: no ratio"
            elif row.target is not None:
                row.met = printed(judged["median"]) <= row.target
        if target.statuses and set(target.statuses) != {workload.status}:
            row.note = f"expected only {workload.status}, got {dict(target.statuses)}"
            row.met = False if row.target is not None else None
        rows.append(row)
    return rows


async def _count(
    store: Store, label: str, throttled: dict[str, Target], decisions: int, width: int
) -> list[CommandCount]:
    """Server commands per decision over `decisions` requests per strategy, `width` at a time
    (`targets.commands_target`: sequential, and on Memcached 50 concurrent on one key). The fewest of three
    rounds counts: Memcached re-reads its namespace generation once a second, which is not
    part of any one decision."""
    counts = []
    if width > 1:
        label = f"{label}, {width} concurrent"
        decisions = max(decisions // width, 1) * width
    for name, target in throttled.items():
        await run_block(target, width, width)

        async def decide(target: Target = target) -> None:
            await run_block(target, decisions, width)

        rounds = [await store.count_commands(decide) for _ in range(3)]
        per = min(rounds) / decisions
        goal = commands_target(store.name, name, label == "saturated", width)
        met = commands_met(goal, per)
        issues = commands_issues(width) if goal else ""
        counts.append(
            CommandCount(store.name, name, label, decisions, rounds, per, goal, met, issues)
        )
    return counts


async def run_scenario(
    store: Store, workload: Workload, settings: Settings
) -> tuple[list[Row], list[CommandCount]]:
    """Rows for `workload` on `store`, sequential then concurrent, and its command counts."""
    label = workload.label(settings.keys)
    namespace = f"traffik-bench-{os.getpid()}-{workload.slug}"
    backend = store.backend(namespace)
    peers = workload.peers(settings.keys)
    throttled = throttled_targets(workload, backend, peers)
    rates = {name: str(throttle.rate) for name, (throttle, _) in throttled.items()}
    targets = baseline_targets(workload, peers, store.round_trip if store.raw_name else None)
    raw: Optional[Target] = store.raw()
    if raw is not None:
        targets.append(raw)
    targets += [target for _, target in throttled.values()]
    rows: list[Row] = []
    counts: list[CommandCount] = []
    try:
        await backend.initialize()
        if workload.many_keys:
            width = 1 if store.name == "memory" else CONCURRENCY
            await prefill([throttle for throttle, _ in throttled.values()], peers, width)
        for width in (1, CONCURRENCY):
            n = settings.block(store.name, width)
            # (sequential requests on a server this run started: both on one CPU, `one_cpu`)
            with one_cpu(store.pinned_pid(settings) if width == 1 else None) as cpu:
                samples = await measure(
                    targets, n, width, settings.repetitions, settings.warmup, store.clock
                )
            if cpu is not None:
                store.sequential_cpu = cpu
            rows += _rows(store, workload, label, width, samples, targets, rates)
        if store.counts_commands:
            counted = {name: target for name, (_, target) in throttled.items()}
            widths = (1, CONCURRENCY) if workload.slug == "one" else (1,)
            for width in widths:
                counts += await _count(store, label, counted, settings.counted_decisions, width)
    finally:
        await backend.clear()
        await backend.close()
    return rows, counts
