"""One process's share of a limit while its fallback decides: `per_process`, a fraction or a variable.

A fallback store (`fallback`, `failover` in `traffik.error_handlers`) usually lives in each
process (an `InMemoryBackend`), so with `n` workers a client could be admitted `n` times its
limit while the shared store is down. `per_process` scales every limit the fallback decides
on: a number in (0, 1] is the share itself (`per_process=0.25` with four workers), and a
string names an environment variable holding the number of processes (`"WEB_CONCURRENCY"`,
which uvicorn and gunicorn both read as their worker count), read once when the handler is
made; unset or empty, it means one process. A scaled limit is rounded down and kept at
least 1, so `n` processes together never grant more than the limit (except limits below `n`).
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional

from traffik.exceptions import ConfigurationError
from traffik.rates import Rate

__all__ = ["process_share", "scaled_rates"]

_SCALED_MAX = 1024
_scaled: dict[tuple[tuple[Rate, ...], float], tuple[Rate, ...]] = {}


def process_share(owner: str, per_process: Any) -> float:
    """The share of each limit one process's fallback grants (module docstring); 1.0 for None."""
    if per_process is None:
        return 1.0
    if isinstance(per_process, str):
        text = os.environ.get(per_process, "").strip()
        if not text:
            return 1.0
        try:
            processes = int(text)
        except ValueError:
            processes = 0
        if processes < 1:
            raise ConfigurationError(
                f"{owner}(per_process={per_process!r}): ${per_process}={text!r} is not a number "
                "of processes; set it to a whole number >= 1 (the worker count)"
            )
        return 1.0 / processes
    if (
        isinstance(per_process, bool)
        or not isinstance(per_process, (int, float))
        or not 0 < per_process <= 1
    ):
        raise ConfigurationError(
            f"{owner}(per_process={per_process!r}): must be a share in (0, 1] (like 0.25 for four "
            "workers), the name of an environment variable holding the number of processes "
            "(like 'WEB_CONCURRENCY'), or None"
        )
    return float(per_process)


def _scaled_rate(rate: Rate, share: float) -> Rate:
    if rate.unlimited:
        return rate
    limit = max(1, math.floor(rate.limit * share + 1e-9))
    return Rate(limit=limit, milliseconds=rate.expire)


def scaled_rates(rates: tuple[Rate, ...], share: Optional[float]) -> tuple[Rate, ...]:
    """`rates` with every limit scaled by `share` (module docstring); `rates` when it is 1."""
    if share is None or share >= 1.0:
        return rates
    found = _scaled.get((rates, share))
    if found is None:
        if len(_scaled) >= _SCALED_MAX:
            _scaled.clear()
        found = _scaled[(rates, share)] = tuple(_scaled_rate(rate, share) for rate in rates)
    return found
