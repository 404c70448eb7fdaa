"""Several limits as one decision: items, and how their decisions combine, all or nothing.

An `Item` is one rate of one throttle for one client: a strategy, the key its state lives
under, the rate and the cost. A throttle with several rates (`"10/s;1000/day"`) is one item
per rate; throttles combined by `throttled(a, b)` or the middleware add theirs. A backend
decides a list of items in one step (`ThrottleBackend.evaluate_all`): the hit is admitted only
if every item admits it; then every item is charged. Otherwise nothing is charged, and the
wait is the longest of the refusing items' waits: after it every item admits the hit again,
and a millisecond earlier the slowest does not. A step of one item keeps what that item does
alone: a `FixedWindow` counter that refuses counts the hit (a fixed-window counter may pass
its limit), unless its cost is above the limit (never admitted, it takes nothing, as
`FixedWindow.decide` answers it); in a step of several, it counts nothing, so a refused hit
leaves every item as it found it, whatever else refused it.

`evaluate_all(items, commit=False)` decides and charges nothing (`stat`); `refund_all(items)`
gives `cost` back to every item, never past a full budget. Only a strategy whose state the
backends know can be an item (`gives_back`): a fixed-window counter or a `StateStrategy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from traffik.decision import Decision
from traffik.strategies.base import StateStrategy

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate

__all__ = [
    "IN_PLACE_COUNTER",
    "IN_PLACE_STATE",
    "WHAT_GIVES_BACK",
    "Combined",
    "Item",
    "charged",
    "combine",
    "counts_refused",
    "gives_back",
    "in_place_kind",
    "is_counter",
    "items",
    "rate_suffix",
]


class Item:
    """One rate of one throttle for one client: `strategy` keeps its state under `key`."""

    __slots__ = ("cost", "key", "rate", "strategy")

    def __init__(self, strategy: Any, key: str, rate: Rate, cost: int) -> None:
        self.strategy = strategy
        self.key = key
        self.rate = rate
        self.cost = cost

    def __repr__(self) -> str:
        return f"Item({self.strategy!r}, {self.key!r}, {str(self.rate)!r}, cost={self.cost})"


def rate_suffix(index: int) -> str:
    """What tells one rate's key from another's in a throttle with several rates: its place
    among them (`""` for the first, so a throttle keeps its key whether it has one rate or
    several). Not the rate's value: a rate changed in place (`update_rate`, another version
    of the app in a rolling deploy) reads what the client holds under the old one, as a
    throttle with one rate does (docs/concepts/strategies.md, "When the rate changes")."""
    return f":{index}" if index else ""


def items(
    strategy: Any, key: str, rates: Sequence[Rate], cost: int, backend: ThrottleBackend
) -> list[Item]:
    """One item per rate of a throttle's key on `backend` (namespaced, with the strategy's
    suffix and the rate's). A strategy with per-request input in its key (`bind`, see
    `traffik.strategies.markers`) decides as it binds: its storage key and rates."""
    bind = getattr(strategy, "bind", None)
    decided: Sequence[Rate] = rates
    if bind is not None:
        strategy, key, decided = bind(key, rates)
    base = backend.get_key(key) + strategy.suffix
    return [Item(strategy, base + rate_suffix(i), rate, cost) for i, rate in enumerate(decided)]


class Combined(Decision):
    """The decision of several items: `parts` holds each item's own decision (in order) and
    `refused` the index of the item whose wait is the answer's (None when admitted).

    `wait_ms` is the longest refusing wait; `remaining` the fewest units any item has left,
    `reset_ms` the longest time until every item is whole again, `limit` that of the refusing
    item (else of the item with the fewest units left)."""

    __slots__ = ("parts", "refused")

    def __init__(self, parts: Sequence[Decision], refused: Optional[int]) -> None:
        self.parts = tuple(parts)
        self.refused = refused
        # One pass (this runs on every decision of several items): the fewest units left
        # and the part they are left on (the first, when none is known), the longest reset
        # and the longest refusing wait.
        tightest = parts[0]
        fewest: Optional[float] = None
        reset = tightest.reset_ms
        longest: Optional[float] = None
        for part in parts:
            left = part.remaining
            if left is not None and (fewest is None or left < fewest):
                fewest, tightest = left, part
            if part.reset_ms > reset:
                reset = part.reset_ms
            if not part.allowed and (longest is None or part.wait_ms > longest):
                longest = part.wait_ms
        if refused is not None:
            binding = parts[refused]
            wait = binding.wait_ms if longest is None else longest
            super().__init__(False, wait, fewest, reset, binding.limit, parts[0].at)
        else:
            super().__init__(True, 0, fewest, reset, tightest.limit, parts[0].at)


IN_PLACE_COUNTER = 1
"""`in_place_kind`: a window counter (`FixedWindow`), decided by `increment_with_ttl`."""
IN_PLACE_STATE = 2
"""`in_place_kind`: a state strategy whose `decide` is `StateStrategy.decide` (a transition)."""


def in_place_kind(strategy: Any) -> int:
    """How a backend that can decide in place (`InMemoryBackend.decide_now`) runs `strategy`:
    `IN_PLACE_COUNTER`, `IN_PLACE_STATE`, or 0 when only its own `decide` will do (a strategy
    that overrides it, one that is not built in)."""
    from traffik.strategies.fixed_window import FixedWindow

    decide = getattr(type(strategy), "decide", None)
    if decide is FixedWindow.decide and is_counter(strategy):
        return IN_PLACE_COUNTER
    if (
        decide is StateStrategy.decide
        and isinstance(strategy, StateStrategy)
        and getattr(strategy, "bind", None) is None
    ):
        return IN_PLACE_STATE
    return 0


def is_counter(strategy: Any) -> bool:
    """Whether `strategy` keeps a plain counter (`FixedWindow`) rather than a state."""
    return getattr(strategy, "counter", False) is True


WHAT_GIVES_BACK = (
    "only a fixed-window counter or a StateStrategy can (every built-in strategy is one); "
    "for a strategy of your own that can, subclass StateStrategy with a `transition` and a "
    "`refund`"
)
"""What can give units back (`gives_back`), for the messages that refuse what cannot."""


def gives_back(strategy: Any) -> bool:
    """Whether the backends can give units back to `strategy`'s state (`refund_all`), and so
    decide it as an item of a step (`evaluate_all`): a counter (`is_counter`) or a
    `StateStrategy` (every built-in strategy is one or the other). A strategy of your own (a
    function answering a wait, a `Strategy` with its own `decide`) keeps a state no backend
    knows: it decides alone, and what it took stays taken."""
    return is_counter(strategy) or isinstance(strategy, StateStrategy)


def charged(parts: Sequence[Decision], items: Sequence[Item]) -> list[bool]:
    """Which items a decision charges: every one when all admit; otherwise none, but the
    counter of a step of one item that refuses a cost it could admit (a fixed-window counter
    alone counts the hits it refuses; a cost above its limit is never admitted and takes
    nothing, as `settled` answers it)."""
    if all(part.allowed for part in parts):
        return [True] * len(parts)
    if len(parts) == 1:
        item = items[0]
        return [counts_refused(is_counter(item.strategy), item.rate, item.cost)]
    return [False] * len(parts)


def counts_refused(counter: bool, rate: Rate, cost: int) -> bool:
    """Whether a step of one item that refuses still charges it (`charged`): a fixed-window
    counter (`counter`) counts the hits it refuses, of a cost it could admit."""
    return counter and cost <= rate.limit


def combine(parts: Sequence[Decision], costs: Optional[Sequence[int]] = None) -> Decision:
    """One decision for several items' decisions (the only one when there is one).

    Each item's decision is the one it makes taking its cost. When one refuses, none is
    charged: given the items' `costs`, each item that would have admitted is stated as it
    stands, its units left before the cost it did not take (`uncharged`)."""
    if len(parts) == 1:
        return parts[0]
    refused = None
    longest = -1.0
    for index, part in enumerate(parts):
        if not part.allowed and part.wait_ms > longest:
            refused, longest = index, part.wait_ms
    if refused is not None and costs is not None:
        parts = [
            uncharged(part, cost) if part.allowed else part for part, cost in zip(parts, costs)
        ]
    return Combined(parts, refused)


def uncharged(part: Decision, cost: int) -> Decision:
    """An admitting item's decision in a step that refused: nothing taken, so `cost` more
    units left than its decision said, charged (the units left of each of
    `BUILTIN_STRATEGIES` fall by exactly the cost it takes); its reset is the decision's."""
    left = part.remaining
    return Decision(
        True, 0, None if left is None else left + cost, part.reset_ms, part.limit, part.at
    )
