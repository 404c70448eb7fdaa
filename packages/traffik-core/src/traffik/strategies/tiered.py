"""`TieredRate`: a clock-aligned window whose limit is the base limit times the client's tier multiplier."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies.base import (
    Refund,
    StateStrategy,
    Transition,
    later,
    later_refund,
    never_admitted,
)
from traffik.strategies.markers import KeyMarker, MarkedStrategy
from traffik.strategies.periods import (
    aligned,
    check_number,
    of_another_period,
    window_count,
    window_start,
)

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.typing import StrategyStat

__all__ = ["TieredRate", "TieredRateStrategy"]

_DEFAULT_TIERS = {"free": 1.0, "premium": 5.0, "enterprise": 10.0}
_RATES_KEPT = 1024
"""Effective rates remembered per strategy (it starts over when full)."""


class TieredRate(MarkedStrategy):
    """At most `limit x multiplier` units per clock-aligned window, the multiplier of the client's tier.

    The tier comes from a `tier:<name>:` segment of the key (`marker`), which the identifier
    writes (`"tier:premium:user:42"`) or the throttle context's `scope` ends the key with; a
    key without it is `default_tier`, an unknown tier counts at 1x (as in traffik 1.2). The
    segment is taken out of the storage key (`traffik.strategies.markers`), so a client keeps
    its count when its tier changes mid-window. The limit is `int(limit * multiplier)`, at
    least 1; multipliers may be ints or floats. `capacity` is the highest tier's limit, so a
    fixed cost only a higher tier admits is not refused when the throttle is built; a request
    of a tier whose limit is below its cost is refused as never admitted. A rejected hit
    counts nothing, and waits for the next window. State: `[window_id, count, period_ms]`:
    the count is kept when the limit changes (a tier, a new rate), and a state counted in windows of another period
    carries its count into this period's window while its own window is open
    (`periods.of_period`; a rejected hit writes it there: `base.Transition`); a `[window_id, count]` state (written before the period was kept) is read as
    counted in the current period. `lock_config` is accepted for traffik 1.2 code and unused:
    the decision is one atomic step.
    """

    name: ClassVar[str] = "tiered_rate"
    suffix: ClassVar[str] = ":tier"
    script: ClassVar[str] = "tiered_rate"

    def __init__(
        self,
        tier_multipliers: Optional[Mapping[str, float]] = None,
        default_tier: str = "free",
        lock_config: Optional[Mapping[str, Any]] = None,
        marker: str = "tier:",
    ) -> None:
        super().__init__(lock_config)
        owner = type(self).__name__
        try:
            tiers = dict(_DEFAULT_TIERS if tier_multipliers is None else tier_multipliers)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{owner}(tier_multipliers={tier_multipliers!r}): must be a mapping of tier "
                "name to multiplier, such as {'free': 1, 'premium': 5}"
            ) from None
        if not tiers:
            raise ConfigurationError(f"{owner}(tier_multipliers={{}}): name at least one tier")
        for tier, multiplier in tiers.items():
            if not isinstance(tier, str) or not tier.strip() or ":" in tier:
                raise ConfigurationError(
                    f"{owner}: tier name {tier!r} must be a non-empty string without ':' (a "
                    "key's `tier:<name>:` segment ends at the first ':', so such a tier "
                    "could never be named)"
                )
            if not check_number(owner, f"tier_multipliers[{tier!r}]", multiplier) > 0:
                raise ConfigurationError(
                    f"{owner}(tier_multipliers[{tier!r}]={multiplier!r}): must be greater than 0"
                )
        if default_tier not in tiers:
            raise ConfigurationError(
                f"{owner}(default_tier={default_tier!r}): must be one of {sorted(tiers)}"
            )
        if not isinstance(marker, str) or not marker.rstrip(":"):
            raise ConfigurationError(f"{owner}(marker={marker!r}): must be a word such as 'tier:'")
        self.tier_multipliers = tiers
        self.default_tier = default_tier
        self.marker = marker if marker.endswith(":") else marker + ":"
        self.key_marker = KeyMarker(self.marker)
        self._rates: dict[tuple[Rate, float], Rate] = {}
        self._at_tier: Optional[TieredRate] = None
        """The copy `bind` returns (made on first use, once a subclass's `__init__` is done)."""

    def __repr__(self) -> str:
        return (
            f"TieredRate(tier_multipliers={self.tier_multipliers!r}, "
            f"default_tier={self.default_tier!r}, marker={self.marker!r})"
        )

    def _config(self) -> tuple[tuple[str, Any], ...]:
        return (
            ("default_tier", self.default_tier),
            ("marker", self.marker),
            ("tier_multipliers", tuple(sorted(self.tier_multipliers.items()))),
        )

    def tier_of(self, key: str) -> tuple[str, str]:
        """The tier a key names (the default when it names none) and the key without it."""
        tier, stored = self.key_marker.take(key)
        return (tier or self.default_tier), stored

    def multiplier(self, tier: str) -> float:
        return self.tier_multipliers.get(tier, 1.0)

    def effective(self, rate: Rate, tier: str) -> Rate:
        """`rate` with the tier's limit (`int(limit * multiplier)`, at least 1)."""
        if rate.unlimited:
            return rate
        multiplier = self.multiplier(tier)
        found = self._rates.get((rate, multiplier))
        if found is None:
            if len(self._rates) >= _RATES_KEPT:
                self._rates.clear()
            limit = max(int(rate.limit * multiplier), 1)
            found = Rate(limit=limit, milliseconds=rate.expire)
            self._rates[(rate, multiplier)] = found
        return found

    def capacity(self, rate: Rate) -> int:
        """The largest cost any tier admits at once (an unknown tier counts at 1x). The copy
        `bind` returns decides under a tier's own rates, so its capacity is their limit."""
        if self._at_tier is self:
            return rate.limit
        return max(int(rate.limit * max(1.0, *self.tier_multipliers.values())), 1)

    def bind(self, key: str, rates: Sequence[Rate]) -> tuple[StateStrategy, str, tuple[Rate, ...]]:
        """A copy deciding under the key's tier (its `capacity` is a rate's limit), the key
        without the tier, and the tier's rates (`effective`)."""
        tier, stored = self.tier_of(key)
        at_tier = self._at_tier
        if at_tier is None:
            at_tier = copy.copy(self)
            self._at_tier = at_tier._at_tier = at_tier
        return at_tier, stored, tuple(self.effective(rate, tier) for rate in rates)

    async def get_stat(self, key: Any, rate: Rate, backend: ThrottleBackend) -> StrategyStat:
        """As every strategy's, with traffik 1.2's metadata: `tier`, `tier_multiplier`,
        `effective_limit`, `current_count`, `window_id`, `window_start_ms`."""
        stat = await self._bound_stat(key, rate, backend)
        if rate.unlimited or stat.metadata is None:
            return stat
        tier, _ = self.tier_of(str(key))
        limit = self.effective(rate, tier).limit
        wid, _ = aligned(backend.now_ms(), rate.expire)
        return dataclasses.replace(
            stat,
            metadata={
                **stat.metadata,
                "tier": tier,
                "tier_multiplier": self.multiplier(tier),
                "effective_limit": limit,
                "current_count": limit - stat.hits_remaining,
                "window_id": wid,
                "window_start_ms": wid * rate.expire,
            },
        )

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        at = window_start(state, now, 3, rate.expire)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        limit = rate.limit
        if cost > limit:
            return never_admitted(rate), None, 0
        wid, left = aligned(now, rate.expire)
        count = window_count(state, now, rate.expire)
        if count + cost <= limit:
            count += cost
            return Decision(True, 0, limit - count, left, limit), [wid, count, rate.expire], left
        reset = left if count > 0 else 0
        decision = Decision(False, left, max(limit - count, 0), reset, limit)
        if of_another_period(state, 3, rate.expire, now):  # (carried, written: `base.Transition`)
            return decision, [wid, count, rate.expire], left
        return decision, None, 0

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        at = window_start(state, now, 3, rate.expire)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        wid, left = aligned(now, rate.expire)
        return [wid, max(window_count(state, now, rate.expire) - cost, 0), rate.expire], left


TieredRateStrategy = TieredRate
