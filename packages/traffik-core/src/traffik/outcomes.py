"""Charging by outcome: a throttle that counts only the requests whose response says so.

`HTTPThrottle("login", rate="5/min", charge_when=lambda outcome: outcome.status_code >= 400)`
counts failed logins only. A hit is charged as usual when it is admitted (so a client already
over the limit is refused before the endpoint runs, and concurrent requests cannot slip past
the limit); once the response is known, `settle` gives the charge back when `charge_when`
says the outcome should not count. The middleware and the decorators see the response;
a FastAPI route uses the throttle's `charge_by_outcome` dependency (a dependency with
`yield` of scope `"function"`: it settles as the endpoint returns or raises, before the
response is sent), which sees the exception the endpoint raised, else the status it set on
the injected `Response`, else the route's status code; not a `Response` it returns.

A charge is noted (`Noted`, made a `Charge` to give it back) with exactly the bucket (backend
that decided, key, rates), cost and decision it was taken under, so giving it back recomputes
nothing from the connection, whose scope may have changed since (the middleware charges under
its path pattern, then routing sets the route). Giving back gives what the charge still holds
at that time, as if the request had not happened, each rate on its own (`Strategy.held`, from
the decision's `at` and reset): nothing once its window closed or its budget would have been
whole again. `throttle.refund(connection)` gives back the charges noted for that throttle on
the connection, when there are any (`take_charge`): each never more than it took, and what it
gave back is not given back again (by another `refund`, or when the request is settled).
Only a strategy whose state the backends know can give units back (`gives_back`: a counter, a
`StateStrategy`). A throttle with a strategy of your own is refused `charge_when` (when it is
built, or its strategy changed) and its `refund` raises a `ConfigurationError`, so neither
`settle` nor `take_charge` meets a charge of it; a combined decision skips its charges
(`traffik.together`).

A hit admitted with nothing noted (a plain `Depends(throttle)`, a direct `hit`) costs no
note: the connection's state keeps only the units it took, under the throttle's own key
(`CHARGED_KEY`), so that `refund` gives back no more than that, once (`take_charged`), on
the bucket the connection names then.

Each message on a WebSocket is a request of its own. A `WebSocketThrottle` follows the
messages its socket receives (`follow`: from the first hit on a `WebSocket` object, its
`receive` counts them in the socket's state): the first hit of a throttle on a new message
forgets the charges it noted for the handshake or an earlier message, and its later hits on
the same message are kept with it, so `refund(websocket)` gives back all of the latest
message's charges of that throttle, and a socket keeps only those.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik import reconcile
from traffik.strategies.base import Strategy
from traffik.strategies.steps import Item

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decision import Decision
    from traffik.rates import Rate

__all__ = [
    "CHARGED_KEY",
    "CHARGES_KEY",
    "MESSAGE_KEY",
    "NOTED_IN_KEY",
    "REFUNDED_KEY",
    "Charge",
    "Charges",
    "Noted",
    "Outcome",
    "follow",
    "given_back",
    "note",
    "put_back",
    "settle",
    "take_charge",
    "take_charged",
]

CHARGES_KEY = "traffik.charges"
"""Where a connection's state keeps the charges to settle once its outcome is known."""

CHARGED_KEY = "traffik.charged"
"""The prefix of a throttle's own key in a connection's state (`throttle._charged_key`), where
its latest admitted hit with no charge noted keeps the units it took."""

REFUNDED_KEY = "traffik.refunded"
"""Where a connection's state keeps the throttles with nothing left to give back: their noted
charges were given back in full, or `on_error` admitted their hit with no store charged."""

MESSAGE_KEY = "traffik.message"
"""Where a WebSocket's state counts the messages it received since a throttle followed it."""

NOTED_IN_KEY = "traffik.noted_in"
"""Where a WebSocket's state keeps, per throttle, the message its charges were noted in."""

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
        """The outcome of an endpoint that raised `exc`: its `status_code`; 422 for FastAPI's
        `RequestValidationError` (a request the endpoint never saw, which FastAPI answers
        so); else 500."""
        status = getattr(exc, "status_code", None)
        if status is None:
            status = 422 if _invalid_request(exc) else 500
        return cls(status, exception=exc)

    def __repr__(self) -> str:
        return f"Outcome(status_code={self.status_code})"


def _invalid_request(exc: BaseException) -> bool:
    """Whether `exc` is FastAPI's `RequestValidationError` (looked up only where FastAPI is
    loaded: the core does not import it)."""
    exceptions = sys.modules.get("fastapi.exceptions")
    invalid = getattr(exceptions, "RequestValidationError", None)
    return invalid is not None and isinstance(exc, invalid)


class Charge:
    """What one admitted hit took: its `throttle`, and the `backend`, `key`, `rates`, `cost`
    and `decision` it was charged under."""

    __slots__ = ("backend", "cost", "decision", "key", "rates", "throttle")

    def __init__(
        self,
        throttle: Any,
        backend: ThrottleBackend,
        key: str,
        rates: tuple[Rate, ...],
        cost: int,
        decision: Decision,
    ) -> None:
        self.throttle = throttle
        self.backend = backend
        self.key = key
        self.rates = rates
        self.cost = cost
        self.decision = decision

    async def give_back(self, cost: Optional[int] = None) -> None:
        """Give `cost` units (default: all it took; never more) back to every rate of the
        bucket it was taken from, as far as each still holds them (`held`) and never past a
        full budget: one step on the backend. Units a fallback admitted during an outage are
        also taken out of its ledger (`traffik.reconcile.refund`): the store that failed is
        not charged for them when it answers again."""
        backend = self.backend
        units = self.cost if cost is None else min(cost, self.cost)
        if units:
            items = held(self.throttle.items(self.key, self.rates, units, backend), self, backend)
            if items:
                try:
                    await backend.refund_all(items)
                finally:  # the budget moved back (or will: a store may finish a refund begun)
                    if backend.refusals is not None:  # ask the store again
                        backend.refusals.forget(self.key)
            # (once given back: a fallback that failed to take them back keeps them owed)
            reconcile.refund(backend, self.throttle.strategy, self.key, self.rates, units)

    def __repr__(self) -> str:
        return f"Charge({self.throttle!r}, key={self.key!r}, cost={self.cost})"


class Charges:
    """The charges of one throttle taken off a connection to be given back together."""

    __slots__ = ("charges",)

    def __init__(self, charges: list[Charge]) -> None:
        self.charges = charges

    async def give_back(self) -> None:
        """Give back each charge (`Charge.give_back`), the latest first."""
        for charge in self.charges:
            await charge.give_back()

    def __repr__(self) -> str:
        return f"Charges({self.charges!r})"


def held(items: list[Item], charge: Charge, backend: ThrottleBackend) -> list[Item]:
    """`items` (one per rate of `charge`) with the units each rate still holds of it, now
    (`Strategy.held`, from the decision's `at` and that rate's part of it); the rates that
    hold none are left out. A decision that does not say when it was made (`at` None: a
    store that does not tell) gives back as taken, never past a full budget."""
    decision = charge.decision
    if decision.at is None:
        return items
    age = backend.now_ms() - decision.at
    parts = getattr(decision, "parts", None) or (decision,)
    kept = []
    for index, item in enumerate(items):
        part = parts[index] if index < len(parts) else decision
        strategy = item.strategy
        held_by = getattr(strategy, "held", None)
        units = (
            held_by(item.rate, item.cost, part, age)
            if held_by is not None
            else Strategy.held(strategy, item.rate, item.cost, part, age)
        )
        if units >= item.cost:
            kept.append(item)
        elif units > 0:
            kept.append(Item(strategy, item.key, item.rate, units))
    return kept


Noted = tuple[Any, "ThrottleBackend", str, tuple["Rate", ...], int, "Decision"]
"""A charge as an admitted hit notes it (`Throttle._admitted`, in the connection's state
under `CHARGES_KEY`), `(throttle, backend, key, rates, cost, decision)`: a tuple, so noting
costs next to nothing on the hot path; `Charge(*noted)` gives it back."""


class _Messages:
    """A WebSocket's `receive` that counts the messages it returns in the socket's state."""

    __slots__ = ("receive", "state")

    def __init__(self, receive: Callable[[], Awaitable[Any]], state: dict[str, Any]) -> None:
        self.receive = receive
        self.state = state

    async def __call__(self) -> Any:
        message = await self.receive()
        if message.get("type") == "websocket.receive":
            self.state[MESSAGE_KEY] = self.state.get(MESSAGE_KEY, 0) + 1
        return message


def follow(websocket: Any, throttle: Any) -> None:
    """Before an admitted hit of `throttle` on `websocket` is kept: count the messages
    `websocket` receives from now (a `WebSocket` object seen for the first time starts a
    message: it is hit after receiving one, or before accepting), and, on the throttle's
    first hit of a message, forget what it kept of an earlier one: the charges it noted, or
    the units it took with none noted (`take_charged`)."""
    scope = websocket.scope
    state = scope.get("state")
    if state is None:
        scope["state"] = state = {}
    if not isinstance(websocket.receive, _Messages):
        websocket.receive = _Messages(websocket.receive, state)
        state[MESSAGE_KEY] = state.get(MESSAGE_KEY, 0) + 1
    message = state[MESSAGE_KEY]
    noted_in = state.get(NOTED_IN_KEY)
    if noted_in is None:
        state[NOTED_IN_KEY] = noted_in = {}
    if noted_in.get(throttle) != message:
        noted_in[throttle] = message
        state.pop(throttle._charged_key, None)
        charges = state.get(CHARGES_KEY)
        if charges:
            charges[:] = [noted for noted in charges if noted[0] is not throttle]
        refunded = state.get(REFUNDED_KEY)
        if refunded and throttle in refunded:
            refunded.remove(throttle)


def note(state: dict[str, Any], charges: list[Noted], noted: Noted) -> None:
    """Note the charge of a hit on a WebSocket: kept with the throttle's other charges of the
    same message (`follow`), and no longer given back, so a later `refund` gives it back. A
    throttle that does not follow the socket's messages keeps only its latest charge."""
    throttle = noted[0]
    noted_in = state.get(NOTED_IN_KEY)
    if noted_in is None or throttle not in noted_in:
        for index in range(len(charges) - 1, -1, -1):
            if charges[index][0] is throttle:
                del charges[index]
    charges.append(noted)
    refunded = state.get(REFUNDED_KEY)
    if refunded and throttle in refunded:
        refunded.remove(throttle)


def take_charge(connection: Any, throttle: Any, cost: Optional[int] = None) -> Optional[Charges]:
    """Forget and return `cost` units (None: all) of the charges of `throttle` noted on
    `connection` (a request's, a WebSocket message's), the latest first (None: none left),
    so they are given back once: by whoever took them, not again when the request is
    settled. A charge given back in part stays noted with the rest; once none is left, the
    throttle is remembered (`given_back`)."""
    state = connection.scope.get("state")
    charges = state.get(CHARGES_KEY) if state else None
    if not charges:
        return None
    taken: list[Charge] = []
    left = cost
    for index in range(len(charges) - 1, -1, -1):
        noted = charges[index]
        if noted[0] is not throttle:
            continue
        if left is not None and left < noted[4]:
            if left:
                charges[index] = (*noted[:4], noted[4] - left, noted[5])
                taken.append(Charge(noted[0], noted[1], noted[2], noted[3], left, noted[5]))
            return Charges(taken)
        del charges[index]
        taken.append(Charge(*noted))
        if left is not None:
            left -= noted[4]
    if not taken:
        return None
    refunded = state.setdefault(REFUNDED_KEY, [])
    if throttle not in refunded:  # (once per throttle: a socket's state stays bounded)
        refunded.append(throttle)
    return Charges(taken)


def take_charged(connection: Any, throttle: Any, cost: Optional[int] = None) -> int:
    """Forget and return `cost` units (None: all) of what the latest admitted hit of
    `throttle` on `connection` took with no charge noted (`CHARGED_KEY`), so they are given
    back once; what is left stays for a later `refund`. 0 when it took nothing: the throttle
    refused, exempted or never hit the connection, or it was given back already."""
    state = connection.scope.get("state")
    key = throttle._charged_key
    taken = state.get(key) if state else None
    if not taken:
        return 0
    units = taken if cost is None else min(cost, taken)
    if units < taken:
        state[key] = taken - units
    else:
        del state[key]
    return units


def put_back(connection: Any, throttle: Any, units: int) -> None:
    """Undo `take_charged` of `units`: a refund that never reached the store (cancelled while
    it awaited the identifier, say) leaves them for a later `refund`."""
    state = connection.scope.setdefault("state", {})
    key = throttle._charged_key
    state[key] = state.get(key, 0) + units


def given_back(connection: Any, throttle: Any) -> bool:
    """Whether a charge of `throttle` noted on `connection` was given back in full, so a
    later `refund` of the connection has nothing left to give."""
    state = connection.scope.get("state")
    refunded = state.get(REFUNDED_KEY) if state else None
    return any(taken is throttle for taken in refunded or ())


async def settle(connection: Any, outcome: Outcome) -> None:
    """Give back the charges of this connection whose throttle's `charge_when` says its
    outcome does not count, each on the bucket it was taken from. A failure to give back is
    logged, never raised: the response is already decided."""
    state = connection.scope.get("state")
    charges = state.pop(CHARGES_KEY, None) if state else None
    for noted in charges or ():
        charge_when = noted[0].charge_when
        if charge_when is None:
            continue
        charge = Charge(*noted)
        try:
            if not charge_when(outcome):
                await charge.give_back()
        except Exception:
            logger.exception("%r could not be settled after a %r", charge, outcome)
