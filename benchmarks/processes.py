"""Several processes at once: each worker runs the throttled apps on the same store, 50 requests at a time.

The store is reached from each worker by URL (`Store.url`): SQLite's file and Redis are
shared by the workers, as under `uvicorn --workers 4`; in memory each worker has a store of
its own (the figure then shows the cost, not a shared limit). Workers start together (a
barrier) and time in wall time, since they compete for the CPUs and, on one key, for the
store. Then each worker makes decisions one at a time on the same key, stepping each
decision's coroutine itself: the wall time of each stretch it runs before it suspends (or
ends) is how long it held the event loop.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
from collections.abc import Coroutine
from time import perf_counter_ns
from typing import Any

from benchmarks.asgi import clients
from benchmarks.results import Holds, ProcessRow
from benchmarks.settings import CONCURRENCY, Settings
from benchmarks.timing import WALL_TIME, measure, spread
from benchmarks.workloads import WORKLOADS, baseline_targets, throttled_targets
from traffik.backends import from_url
from traffik.rates import Rate
from traffik.strategies import GCRA

__all__ = ["PROCESSES", "run_processes"]

PROCESSES = 4
_US = 1 / 1000.0


async def _segments(step: Coroutine[Any, Any, Any], held: list[float]) -> bool:
    """Run `step` to its end, appending the wall time (ns) of each stretch it ran without
    suspending (each held the event loop); True if it suspended at all."""
    signal: Any = None
    while True:
        began = perf_counter_ns()
        try:
            signal = step.send(None)
        except StopIteration:
            held.append(perf_counter_ns() - began)
            return len(held) > 1
        held.append(perf_counter_ns() - began)
        if signal is None:  # a bare yield (`asyncio.sleep(0)`)
            await asyncio.sleep(0)
        else:  # the future it waits for: wait for it here, then resume the step
            await asyncio.wait([signal])


async def _holds(backend: Any, decisions: int) -> tuple[list[float], int]:
    """How long each stretch of a decision held the loop (ns), deciding one at a time on the
    same key as the other workers, and how many decisions suspended (waited for the store)."""
    strategy, rate = GCRA(), Rate.parse(WORKLOADS[0].rate_for("GCRA"))
    held: list[float] = []
    suspended = 0
    for _ in range(decisions):
        stretches: list[float] = []
        suspended += await _segments(strategy.decide("holds", rate, backend, 1), stretches)
        held += stretches
        await asyncio.sleep(0)
    return held, suspended


async def _measure(url: str, namespace: str, settings: Settings, barrier: Any) -> dict[str, Any]:
    workload = WORKLOADS[0]  # one key: on a shared store every worker decides on the same row
    backend = from_url(url, namespace=namespace)
    peers = clients(1)
    targets = baseline_targets(workload, peers, None)[:1]
    targets += [target for _, target in throttled_targets(workload, backend, peers).values()]
    await backend.initialize()
    try:
        barrier.wait()
        samples = await measure(
            targets,
            settings.block("sqlite", CONCURRENCY),
            CONCURRENCY,
            settings.repetitions,
            settings.warmup,
            WALL_TIME,
        )
        barrier.wait()
        decisions = settings.counted_decisions * 20
        held, suspended = await _holds(backend, decisions)
    finally:
        await backend.clear()
        await backend.close()
    return {
        "typical": samples.typical,
        "held": held,
        "suspended": suspended,
        "decisions": decisions,
    }


def _worker(url: str, namespace: str, settings: Settings, barrier: Any, out: Any) -> None:
    try:
        out.put(asyncio.run(_measure(url, namespace, settings, barrier)))
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _spawn(url: str, namespace: str, settings: Settings) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(PROCESSES, timeout=120), context.Queue()
    workers = [
        context.Process(target=_worker, args=(url, namespace, settings, barrier, out))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    try:
        results = [out.get(timeout=600) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"a worker process failed: {errors[0]}")
    return results


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def run_processes(store: str, url: str, settings: Settings) -> tuple[list[ProcessRow], Holds]:
    """Every built-in strategy's throttle and "no limiter", timed in `PROCESSES` workers at
    once; then how long single decisions held each worker's event loop."""
    results = _spawn(url, f"traffik-bench-processes-{store}", settings)
    names = list(results[0]["typical"])
    rows = []
    for name in names:
        times = [t for r in results for t in r["typical"][name]]
        row = ProcessRow(store, name, PROCESSES, CONCURRENCY, spread(times, _US))
        if name != names[0]:
            row.overhead_us = spread(
                [
                    t - b
                    for r in results
                    for t, b in zip(r["typical"][name], r["typical"][names[0]])
                ],
                _US,
            )
        rows.append(row)
    held = sorted(t * _US for r in results for t in r["held"])
    suspended = sum(r["suspended"] for r in results)
    holds = Holds(
        store,
        PROCESSES,
        sum(r["decisions"] for r in results),
        suspended,
        len(held),
        statistics.median(held) if held else 0.0,
        _percentile(held, 0.99),
        held[-1] if held else 0.0,
    )
    return rows, holds
