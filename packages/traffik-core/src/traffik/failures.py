"""What a throttle decides when deciding failed: the `on_error` policies."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from traffik.decision import Decision

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate

__all__ = ["THROTTLE_ON_ERROR_WAIT_MS", "decide_after_failure", "decision_from_wait"]

logger = logging.getLogger("traffik")

THROTTLE_ON_ERROR_WAIT_MS = 1000.0
"""The wait `on_error="throttle"` answers with: one second."""


def decision_from_wait(wait: Any, rate: Rate) -> Decision:
    """A `Decision` from a traffik 1.2 style wait in ms (0 or less: allowed)."""
    wait = float(wait or 0.0)
    if wait <= 0:
        return Decision(True, 0.0, 0, 0.0, rate.limit)
    return Decision(False, wait, 0, wait, rate.limit)


def _throttled(rate: Rate) -> Decision:
    return Decision(False, THROTTLE_ON_ERROR_WAIT_MS, 0, THROTTLE_ON_ERROR_WAIT_MS, rate.limit)


async def decide_after_failure(
    throttle: Any,
    exc: Exception,
    connection: Any,
    key: Optional[str],
    cost: Any,
    rate: Rate,
    backend: ThrottleBackend,
    context: Mapping[str, Any],
) -> Decision:
    """Apply the throttle's `on_error` (else the backend's): `"raise"` re-raises, `"allow"`
    admits, `"throttle"` rejects for a second, and a handler `(connection, exc_info)` returns
    a wait or a `Decision`. A handler that fails too throttles rather than crash the request."""
    policy = throttle.on_error if throttle.on_error is not None else backend.on_error
    if policy == "raise":
        raise exc
    logger.warning(
        "%r could not decide (%s: %s); on_error=%r", throttle, type(exc).__name__, exc, policy
    )
    if policy == "allow":
        return Decision(True, 0.0, 0, 0.0, rate.limit)
    if not callable(policy):
        return _throttled(rate)
    exc_info = {
        "exception": exc,
        "connection": connection,
        "key": key,
        "cost": cost,
        "rate": rate,
        "backend": backend,
        "context": context,
        "throttle": throttle,
    }
    try:
        result = policy(connection, exc_info)
        if inspect.isawaitable(result):
            result = await result
    except Exception as handler_exc:
        logger.error("%r: the on_error handler failed too (%s); throttling", throttle, handler_exc)
        return _throttled(rate)
    return result if isinstance(result, Decision) else decision_from_wait(result, rate)
