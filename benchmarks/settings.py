"""How long a run is: requests per block, repetitions, warm-up and key counts for each mode."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Callable

__all__ = ["CONCURRENCY", "MODES", "Settings", "mode_of", "report_rows"]

CONCURRENCY = 50
"""Requests in flight at once in the concurrent rows (one `asyncio.gather`)."""


@dataclass(frozen=True)
class Settings:
    """`requests` per timed block in memory, `network_requests` on Redis/Memcached; every
    variant of a group runs one block per repetition, interleaved with the others. Short
    blocks and many repetitions pair the variants closely in time."""

    mode: str
    requests: int
    network_requests: int
    repetitions: int
    warmup: int
    keys: int
    counted_decisions: int
    memory_keys: int
    one_cpu: bool = True
    """Sequential groups on a server the run started run with it on one CPU (`servers.one_cpu`)."""

    def block(self, store: str, width: int) -> int:
        """Requests per timed block on `store`; at concurrency, at least 4 whole batches."""
        n = self.requests if store == "memory" else self.network_requests
        if width == 1:
            return n
        return max(4 * width, n // width * width)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MODES = {
    "full": Settings("full", 200, 150, 51, 300, 10_000, 500, 10_000),
    "quick": Settings("quick", 200, 150, 7, 50, 10_000, 100, 10_000),
    "smoke": Settings("smoke", 20, 20, 1, 5, 100, 5, 100),
}


def mode_of(argv: Sequence[str]) -> str:
    """The mode a benchmark module run on its own is asked for: `--quick`, `--smoke`, else
    the full run."""
    return "quick" if "--quick" in argv else "smoke" if "--smoke" in argv else "full"


def report_rows(
    run: Callable[[Settings], Coroutine[Any, Any, Sequence[Any]]],
    markdown: Callable[[Any], str],
    mode: str,
) -> list[dict[str, Any]]:
    """Run a section of the benchmark in `mode`, print its table (`markdown`), and return
    its rows (dataclasses) for the JSON document."""
    rows = asyncio.run(run(MODES[mode]))
    print("\n" + markdown(rows))
    return [asdict(row) for row in rows]
