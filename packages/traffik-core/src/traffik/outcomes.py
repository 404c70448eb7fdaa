"""Charging by outcome: a throttle that counts only the requests whose response says so.

`HTTPThrottle("login", rate="5/min", charge_when=lambda outcome: outcome.status_code >= 400)`
counts failed logins only. A hit is charged as usual when it is admitted (so a client already
over the limit is refused before the endpoint runs, and concurrent requests cannot slip past
the limit); once the response is known, `settle` gives the charge back when `charge_when`
says the outcome should not count. The middleware and the decorators see the response;
a FastAPI route uses the throttle's `charge_by_outcome` dependency (a dependency with
`yield`), which sees the exception the endpoint raised, or else the route's status code.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

__all__ = ["CHARGES_KEY", "Outcome", "note_charge", "settle"]

CHARGES_KEY = "traffik.charges"
"""Where a connection's state keeps the charges to settle once its outcome is known."""

logger = logging.getLogger("traffik")


class Outcome:
    """What became of a request: its `status_code`, and the `response` or `exception` when
    known. A `Response` has a `status_code` too, so a `charge_when` can read either."""

    __slots__ = ("exception", "response", "status_code")

    def __init__(
        self,
        status_code: int,
        response: Any = None,
        exception: Optional[BaseException] = None,
    ) -> None:
        self.status_code = status_code
        self.response = response
        self.exception = exception

    @classmethod
    def of_exception(cls, exc: BaseException) -> Outcome:
        """The outcome of an endpoint that raised `exc` (its status code, else 500)."""
        return cls(getattr(exc, "status_code", 500), exception=exc)

    def __repr__(self) -> str:
        return f"Outcome(status_code={self.status_code})"


def note_charge(state: dict[str, Any], throttle: Any, cost: Optional[int], context: Any) -> None:
    """Remember that `throttle` charged this connection (`cost`, None: its own)."""
    state.setdefault(CHARGES_KEY, []).append((throttle, cost, context))


async def settle(connection: Any, outcome: Outcome) -> None:
    """Give back the charges of this connection whose throttle's `charge_when` says its
    outcome does not count. A failure to give back is logged, never raised: the response
    is already decided."""
    state = connection.scope.get("state")
    charges = state.pop(CHARGES_KEY, None) if state else None
    for throttle, cost, context in charges or ():
        if throttle.charge_when is None:
            continue
        try:
            if not throttle.charge_when(outcome):
                await throttle.refund(connection, cost, context)
        except Exception:
            logger.exception("%r could not settle the charge of a %r", throttle, outcome)
