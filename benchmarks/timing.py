"""Timed blocks: each request timed alone, every variant of a group once per repetition, interleaved, GC off."""

from __future__ import annotations

import asyncio
import gc
import statistics
from collections.abc import Sequence
from time import perf_counter_ns, thread_time_ns
from typing import Callable

from benchmarks.asgi import Target

__all__ = ["CPU_TIME", "WALL_TIME", "Clock", "Samples", "Spread", "measure", "run_block", "spread"]

Clock = Callable[[], int]
CPU_TIME: Clock = thread_time_ns
"""This thread's CPU time: what an in-process request costs, whatever else the machine runs."""
WALL_TIME: Clock = perf_counter_ns
"""Elapsed time: a request that waits on a server costs its wait too."""

Spread = dict[str, float]
"""`{"median": …, "min": …, "max": …}` over repetitions."""


def spread(values: Sequence[float], scale: float = 1.0) -> Spread:
    return {
        "median": statistics.median(values) * scale,
        "min": min(values) * scale,
        "max": max(values) * scale,
    }


class Samples:
    """Per target, one figure per repetition (nanoseconds per request): `typical` is the
    median of the block's individually timed requests (or batches, at concurrency > 1),
    `mean` the block's total time over its requests."""

    def __init__(self, names: Sequence[str]) -> None:
        self.typical: dict[str, list[float]] = {name: [] for name in names}
        self.mean: dict[str, list[float]] = {name: [] for name in names}

    def add(self, name: str, times: list[float]) -> None:
        self.typical[name].append(statistics.median(times))
        self.mean[name].append(statistics.fmean(times))


async def run_block(target: Target, n: int, width: int, clock: Clock = WALL_TIME) -> list[float]:
    """Make `n` requests, one at a time (`width` 1) or `width` at once, and return the time
    of each (ns); at `width` > 1, each batch's time divided by `width`, for each batch."""
    one, start = target.one, target.cursor
    target.cursor += n
    times: list[float] = []
    if width == 1:
        for i in range(start, start + n):
            began = clock()
            await one(i)
            times.append(clock() - began)
        return times
    for base in range(start, start + n, width):
        batch = [one(i) for i in range(base, base + width)]
        began = clock()
        await asyncio.gather(*batch)
        times.append((clock() - began) / width)
    return times


async def measure(
    targets: Sequence[Target], n: int, width: int, repetitions: int, warmup: int, clock: Clock
) -> Samples:
    """Time every target over `repetitions` blocks of `n` requests.

    After a warm-up block each, repetition r runs every target once, starting the order at
    target r, so that drift (other processes, frequency changes) falls on all of them alike.
    Requests are timed one by one (batch by batch when concurrent) and medians kept, so a
    request preempted by another process does not move the figures. The collector is
    off during a block; between blocks it collects the young generation only.
    """
    for target in targets:
        await run_block(target, max(warmup // width, 1) * width, width, clock)
        target.statuses.clear()
    samples = Samples([target.name for target in targets])
    gc.collect()
    gc.freeze()  # what exists now (apps, stores of many keys) is never scanned again
    try:
        for rep in range(repetitions):
            shift = rep % len(targets)
            for target in [*targets[shift:], *targets[:shift]]:
                gc.collect(0)
                gc.disable()
                try:
                    times = await run_block(target, n, width, clock)
                finally:
                    gc.enable()
                samples.add(target.name, times)
    finally:
        gc.unfreeze()
    return samples
