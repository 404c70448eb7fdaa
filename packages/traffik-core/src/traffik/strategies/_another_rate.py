"""A bucket's state read under another rate than the one it records: what it holds, and a refusal on it.

`TokenBucket`, `TokenBucketWithDebt`, `CostBasedTokenBucket`, `GCRA`, `LeakyBucket` and
`LeakyBucketWithQueue` record the rate a state was written under. Read under another
(`update_rate`, a rate callable, a deploy), what it holds converts to whole units of the new
rate, rounded up; a refused hit writes it so (`converted`: `traffik.strategies.base.Transition`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from traffik.decision import Decision
from traffik.strategies.base import EXACT_LIMIT, Transition, ceil_div

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = ["Held", "converted", "held_at_its_rate", "of_another_rate", "rated_amount"]


def of_another_rate(state: Optional[list[int]], rate: Rate) -> bool:
    """Whether a `[amount, time, limit, period_ms]` state was written under another rate than
    `rate` (read under it, it converts: `rated_amount`; refused, see `converted`)."""
    return (
        state is not None
        and len(state) == 4
        and (state[2] != rate.limit or state[3] != rate.expire)
    )


Held = tuple[int, int, int]
"""What a bucket's state holds under the rate it was written under: the amount at `now`,
scaled by that rate's period (a unit is `scale`), the scale, and how much drains per ms."""


def held_at_its_rate(
    state: list[int], now: int, measure: Callable[[list[int], int, int], int]
) -> Optional[Held]:
    """What a `[amount, time, limit, period_ms]` state holds at `now` under the rate it was
    written under (`measure(state, now, limit)`: the amount, draining `limit` per ms); None
    when that is no rate a transition decides exactly (a fresh key)."""
    limit, period = state[2], state[3]
    if limit < 1 or period < 1 or 2 * limit * period >= EXACT_LIMIT:
        return None
    return measure(state, now, limit), period, limit


def converted(
    decision: Decision,
    held: Optional[Held],
    capacity: int,
    cost: int,
    state: list[int],
    ttl_ms: int,
) -> Transition:
    """The transition of a hit refused on a bucket written under another rate, which holds
    `held` (None: nothing): `decision` and `state`, the bucket as this rate's holding the
    same units (rounded up), written with `ttl_ms` (`traffik.strategies.base.Transition`).
    When it held more than
    `capacity` units, converted it would hold fewer (a client would be given back what it
    spent, and two versions of an app alternating on one store would admit more than either
    alone): nothing is written, and the hit is refused until the old state, draining at its
    own rate, holds at most `capacity - cost` units (the wait), whole once it is empty (the
    reset). A cost above `capacity` (never admitted) writes nothing."""
    if cost > capacity:  # (never admitted: `never_admitted`)
        return decision, None, 0
    if held is None or held[0] <= capacity * held[1]:
        return decision, state, ttl_ms
    amount, scale, drain = held
    wait = ceil_div(amount - (capacity - cost) * scale, drain)
    return Decision(False, wait, 0, ceil_div(amount, drain), decision.limit), None, 0


def rated_amount(
    state: Optional[list[int]],
    now: int,
    rate: Rate,
    measure: Callable[[list[int], int, int], int],
    capacity: int,
) -> int:
    """What a `[amount, time, limit, period_ms]` state holds at `now`, scaled for `rate`
    (`measure(state, now, limit)`: the amount at `now`, scaled by the period it was written
    under, draining `limit` per ms). Written under another rate, the amount becomes whole
    units, rounded up, at most `capacity`, scaled for `rate`; a state of two numbers is read as
    written under `rate`; anything else, or a rate no transition decides exactly, is 0."""
    if state is None or len(state) not in (2, 4):
        return 0
    if of_another_rate(state, rate):
        held = held_at_its_rate(state, now, measure)
        if held is None:
            return 0  # no rate: a fresh key
        return min(ceil_div(held[0], held[1]), capacity) * rate.expire
    return measure(state, now, rate.limit)
