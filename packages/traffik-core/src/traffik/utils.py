"""traffik 1.2's docs import from `traffik.utils` (`from traffik.utils import time` in a custom
strategy): the same names as `traffik._utils`."""

from __future__ import annotations

from traffik._utils import CircuitBreaker, CircuitState, ProxyHeaders, get_remote_address, time

__all__ = ["CircuitBreaker", "CircuitState", "ProxyHeaders", "get_remote_address", "time"]
