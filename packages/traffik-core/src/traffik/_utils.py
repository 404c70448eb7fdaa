"""traffik 1.2's `traffik._utils`, which its docs and strategies import from: the same names."""

from __future__ import annotations

from traffik.circuit_breaker import CircuitBreaker, CircuitState
from traffik.clock import system_clock as time
from traffik.identity import ProxyHeaders, get_remote_address

__all__ = ["CircuitBreaker", "CircuitState", "ProxyHeaders", "get_remote_address", "time"]
