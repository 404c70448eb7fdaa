"""A bucket's state read under another rate than the one it records: what it holds, and a refusal on it.

`TokenBucket`, `TokenBucketWithDebt`, `CostBasedTokenBucket`, `GCRA`, `LeakyBucket` and
`LeakyBucketWithQueue` record the rate a state was written under. Read under another
(`update_rate`, a rate callable, a deploy), what it holds converts to whole units of the new
rate, rounded up (`rated_amount`): an admitted hit writes that, and its cost. A refused hit
charges nothing (`converted`, `traffik.strategies.base.Transition`): it writes what the old
state holds, exactly (`rescaled`), when the new rate's capacity holds whatever the old rate's
bucket can (so no hit before it was told a wait on the old state, see `converted`), and
otherwise writes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from traffik.decision import Decision
from traffik.strategies.base import EXACT_LIMIT, Transition, ceil_div

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = [
    "Held",
    "converted",
    "held_at_its_rate",
    "of_another_rate",
    "rated_amount",
    "rescaled",
]


def of_another_rate(state: Optional[list[int]], rate: Rate) -> bool:
    """Whether a `[amount, time, limit, period_ms]` state was written under another rate than
    `rate` (read under it, it converts: `rated_amount`; refused, see `converted`)."""
    return (
        state is not None
        and len(state) == 4
        and (state[2] != rate.limit or state[3] != rate.expire)
    )


Held = tuple[int, int, int, int]
"""What a bucket's state holds under the rate it was written under: the amount at `now`,
scaled by that rate's period (a unit is `scale`), the scale, how much drains per ms, and the
most a bucket of that rate can hold (scaled: its capacity, or a GCRA's span)."""


def held_at_its_rate(
    state: list[int],
    now: int,
    measure: Callable[[list[int], int, int], int],
    most: Optional[Callable[[int, int], int]] = None,
) -> Optional[Held]:
    """What a `[amount, time, limit, period_ms]` state holds at `now` under the rate it was
    written under (`measure(state, now, limit)`: the amount, draining `limit` per ms; `most
    (limit, period)`: the most it can hold, scaled, by default `limit` units); None when that
    is no rate a transition decides exactly (a fresh key)."""
    limit, period = state[2], state[3]
    if limit < 1 or period < 1 or 2 * limit * period >= EXACT_LIMIT:
        return None
    top = limit * period if most is None else most(limit, period)
    return measure(state, now, limit), period, limit, top


def rescaled(amount: int, scale: int, unit: int) -> int:
    """`amount`, scaled by `scale` (a unit of the rate it was written under), scaled by
    `unit` (this rate's) instead: the same units, rounded up to a scaled unit of this rate
    (`1/unit` of a unit: less than a millisecond of its refill), exactly. (The Lua ports
    compute it in doubles, all below 2**53: `lua/_rescaled.lua` of traffik-redis.)"""
    return ceil_div(amount * unit, scale)


def converted(
    decision: Decision,
    held: Optional[Held],
    capacity: int,
    cost: int,
    carry: Callable[[int, int], Transition],
) -> Transition:
    """The transition of a hit refused (`decision`, on what the state holds rounded up to
    whole units) on a bucket written under another rate, which holds `held` (None: nothing).

    When a bucket of the old rate can hold no more than `capacity` units of this rate (`held`'s
    most), the hit is decided again on `carry(amount, scale)`: the transition that writes the
    bucket as this rate's holding exactly what the old one holds now (`rescaled`), refused
    there too: it charges nothing, and the next hits are decided under this rate, so the wait
    it tells is true.

    Otherwise the old bucket may hold more than `capacity` (now, or when a hit before this
    one came): converted it would hold fewer (a client would be given back what it spent,
    and two versions of an app alternating on one store would admit more than either alone),
    or, written once it holds less, drain at this rate where the hits before were told waits
    at the old one. So nothing is written, ever, by a refused hit: it is refused until the old
    state, draining at its own rate, holds at most `capacity - cost` units (the wait, the same
    moment for every refused hit), whole once it is empty (the reset); the hit then admitted
    converts it. A cost above `capacity` (never admitted) writes nothing."""
    if cost > capacity or held is None:  # (never admitted: `never_admitted`; or a fresh key)
        return decision, None, 0
    amount, scale, drain, most = held
    if most <= capacity * scale and amount <= capacity * scale:
        return carry(amount, scale)
    wait = ceil_div(amount - (capacity - cost) * scale, drain)
    reset = ceil_div(amount, drain)
    return Decision(False, wait, decision.remaining, reset, decision.limit), None, 0


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
