"""The strategy base classes: the `(key, rate, backend, cost) -> wait_ms` contract and one-step decisions.

Built-in strategies decide in exact integer arithmetic: time is whole milliseconds, and a
fractional quantity (tokens, a bucket's level, a weighted count) is kept scaled by the rate's
period, so a rate of `limit` per `period` refills or drains exactly `limit` scaled units per
millisecond. No rounding can then separate the wait a strategy answers from the moment it
admits: a hit retried exactly `wait_ms` later is admitted, and one retried a millisecond
earlier is not. The numbers stay below 2**53, so the Lua ports (whose numbers are doubles)
compute exactly the same; a rate too large for that is refused (`check_scale`).

A state's time never goes backwards (hosts whose clocks disagree share a store): a host
whose `now` is behind the time a state records (a bucket's last update, the start of the
window it counts, the newest entry of a log) decides as if at that time, writes no earlier
time, and tells waits, resets and TTLs from its own `now` (`later`), as long as that time is
at most `AHEAD_MS` ahead (`ahead`). A state from further ahead is not believed (`dated`): it
counts as no state, so a clock stepped back (or a host set far ahead) never holds a client
until the clocks meet again.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Optional, cast

from traffik.decision import ALLOWED_UNLIMITED, Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies._lock_config import check_lock_config
from traffik.typing import LockConfig, StrategyStat

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend

__all__ = [
    "AHEAD_MS",
    "EXACT_LIMIT",
    "Refund",
    "StateStrategy",
    "Strategy",
    "Transition",
    "ahead",
    "ceil_div",
    "dated",
    "draining_held",
    "later",
    "later_refund",
    "log_time",
    "never_admitted",
    "settled",
]

EXACT_LIMIT = 2**53
"""Every number a built-in transition handles stays below this (exact in a double)."""

Transition = tuple[Decision, Optional[list[int]], int]
"""What a transition returns: the decision, the new state (None: unchanged) and its TTL in ms.

A refused hit charges nothing: its new state is None, unless the state it read records
another rate than the hit's (`update_rate`, a rate callable, a deploy), which it converts.
Then its new state is that one as the hit's rate's, holding exactly the same units (not
rounded up to whole ones), and the stores write it, refused or not (in a refused step of
several items, what the refusing items converted, never a charge): the next hits are
decided under the new rate, so the wait the refusal tells is true, instead of each hit
converting again from the old state, which drains at the old rate. A bucket of the old
rate that can hold more units than the new rate's capacity is never written by a refused
hit: the hit is refused until the old state holds what the new rate admits, every refused
hit told the same moment (`traffik.strategies._another_rate.converted`)."""

Refund = tuple[list[int], int]
"""What a refund returns: the new state and its TTL in ms."""


def ceil_div(a: int, b: int) -> int:
    """`a / b` rounded up, for integers (`b > 0`)."""
    return -(-a // b)


AHEAD_MS = 60_000
"""How far past a host's `now` a state's time is believed (`ahead`): hosts whose clocks are
apart by up to a minute decide exactly. A time further ahead is a clock gone wrong (a host's
clock set far ahead, or this one stepped back): the state is not believed (`dated`), so that
no client waits for a clock to catch up. The Lua ports write it as the literal 60000."""


def ahead(moment: int, now: int) -> bool:
    """Whether a state's `moment` is after `now` and believed (`AHEAD_MS`): then the state is
    decided at `moment` (module docstring)."""
    return now < moment <= now + AHEAD_MS


def dated(
    state: Optional[list[int]], moment: Optional[int], now: int
) -> tuple[Optional[list[int]], int]:
    """A state whose time is `moment` (None: it has none), and when to decide on it: at `now`,
    or at `moment` when later and believed (`ahead`). From further ahead, it is no state: a
    state a refused hit does not rewrite would otherwise hold its client, and tell it waits
    that are not true, until the clock passes `moment` again; so a client is admitted at most
    one budget more, once, and what it is admitted writes a state of its own time."""
    if moment is None or moment <= now:
        return state, now
    if moment <= now + AHEAD_MS:
        return state, moment
    return None, now


def log_time(state: Optional[list[int]], width: int) -> Optional[int]:
    """The time of the newest entry of a log of `width`-number entries, each starting with its
    time (None for an empty log)."""
    if state and len(state) >= width:
        return state[len(state) // width * width - width]
    return None


def later(transition: Transition, shift: int) -> Transition:
    """`transition`, decided `shift` ms after the caller's `now` (at the time its state
    records), told from `now`: a wait, a reset (when not 0) and a TTL `shift` ms longer."""
    decision, state, ttl = transition
    if not decision.allowed:
        decision.wait_ms += shift
    if decision.reset_ms > 0:
        decision.reset_ms += shift
    return decision, state, ttl + shift if state is not None else ttl


def later_refund(refund: Refund, shift: int) -> Refund:
    """`refund`, given `shift` ms after the caller's `now`, its TTL told from `now`."""
    return refund[0], refund[1] + shift


def never_admitted(rate: Rate) -> Decision:
    """The answer for a cost above what the strategy can ever admit: rejected, one period."""
    return Decision(False, rate.expire, 0, rate.expire, rate.limit)


def draining_held(_strategy: Any, rate: Rate, cost: int, decision: Decision, age_ms: int) -> int:
    """`Strategy.held` for a state that drains back to a full budget at `limit` per period
    (a token bucket's deficit, a leaky bucket's level, a GCRA backlog), whole again at the
    decision's reset; such a strategy sets `held = draining_held`. Had the request not happened, the budget would have been whole
    `cost` units sooner, and what drains past a whole budget is lost: so the charge holds at
    most what drains in the time left until that reset, rounded up to whole units."""
    left = decision.reset_ms - age_ms
    if left <= 0:
        return 0
    return min(cost, ceil_div(int(left) * rate.limit, rate.expire))


def settled(strategy: Strategy, rate: Rate, cost: int) -> Optional[Decision]:
    """The decision when it needs no state (an unlimited rate, a cost never admitted), else None."""
    if rate.unlimited:
        return ALLOWED_UNLIMITED
    if cost > strategy.capacity(rate):
        return never_admitted(rate)
    return None


class Strategy:
    """Base of the built-in strategies.

    `await strategy(key, rate, backend, cost)` returns the wait in ms (0 means allowed),
    as in traffik 1.2; `decide` returns the full `Decision` that headers are built from.
    Strategies hold configuration only, so one instance serves any number of throttles,
    backends and event loops.
    """

    name: ClassVar[str] = "strategy"
    suffix: ClassVar[str] = ""
    """Appended to a throttle's key: where this strategy keeps a client's state."""
    _lock_config: Mapping[str, Any] = MappingProxyType({})
    """traffik 1.2's `lock_config`; private, so equality, hash and repr ignore it."""

    def __init__(self, lock_config: Optional[Mapping[str, Any]] = None) -> None:
        self._lock_config = check_lock_config(type(self).__name__, lock_config)

    @property
    def lock_config(self) -> LockConfig:
        """traffik 1.2's `lock_config=`, kept as given; it changes nothing, since no decision
        takes a lock."""
        return cast(LockConfig, dict(self._lock_config))

    @lock_config.setter
    def lock_config(self, value: Optional[Mapping[str, Any]]) -> None:
        # A subclass written as traffik 1.2's (frozen) dataclasses may declare the field.
        object.__setattr__(self, "_lock_config", check_lock_config(type(self).__name__, value))

    async def __call__(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: int = 1
    ) -> float:
        return (await self.decide(key, rate, backend, cost)).wait_ms

    async def decide(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: int = 1
    ) -> Decision:
        raise NotImplementedError

    async def get_stat(self, key: Any, rate: Rate, backend: ThrottleBackend) -> StrategyStat:
        raise NotImplementedError

    def capacity(self, rate: Rate) -> int:
        """The largest cost one request can ever be admitted with."""
        return rate.limit

    def held(self, rate: Rate, cost: int, decision: Decision, age_ms: int) -> int:
        """The units of a charge of `cost`, admitted by `decision` `age_ms` ago, that the
        client's state still holds: what a refund may give back, as if the request had not
        happened. Here, all of it until the decision's reset (its window closes, or its
        budget would be whole again), then nothing."""
        return cost if age_ms < decision.reset_ms else 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _config(self) -> tuple[tuple[str, Any], ...]:
        """What makes two strategies equal: their public settings (hashable), by name."""
        return tuple(sorted((k, v) for k, v in vars(self).items() if not k.startswith("_")))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Strategy)
            and type(self) is type(other)
            and self._config() == other._config()
        )

    def __hash__(self) -> int:
        return hash((type(self), self._config()))


class StateStrategy(Strategy):
    """A strategy whose decision is a pure transition of a small state, run by the backend.

    `transition(state, now_ms, rate, cost)` is the whole algorithm, in integers; the backend
    runs it atomically (`backend.evaluate`): in memory without an `await` inside, on Redis as
    the Lua script named `script`, on Memcached under compare-and-swap.
    """

    script: ClassVar[str] = ""
    sizing: ClassVar[tuple[str, ...]] = ()
    """The settings that size a client's state besides the rate (`burst_size`), named when a
    rate is too large for them (`check_scale`)."""

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        raise NotImplementedError

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        """The state with `cost` units given back, never past a full budget, and its TTL."""
        raise NotImplementedError

    def scale(self, rate: Rate) -> int:
        """The largest number a transition of `rate` handles (checked against `EXACT_LIMIT`)."""
        return 2 * self.capacity(rate) * rate.expire

    def check_scale(self, rate: Rate) -> None:
        """Refuse a rate whose numbers would not be exact (a `ConfigurationError` naming the
        largest limit that fits the period, or the strategy's settings when none does)."""
        if rate.unlimited:
            return
        scale = self.scale(rate)
        if scale < EXACT_LIMIT:
            return
        reach = f"its numbers would reach {scale:,}, past 2**53 ({EXACT_LIMIT:,})"
        fits = self._largest_limit(rate)
        if fits:
            raise ConfigurationError(
                f"{self!r}: rate {str(rate)!r} is too large to decide exactly: {reach}; with a "
                f"period of {rate.expire} ms the limit can be at most {fits:,} (or shorten the "
                "period)"
            )
        settings = [
            f"{name}={getattr(self, name)!r}"
            for name in self.sizing
            if getattr(self, name, None) is not None
        ]
        lower = f"lower {', '.join(settings)}" if settings else "lower its settings"
        if type(self).scale is StateStrategy.scale:  # 2 x capacity x period
            most = (EXACT_LIMIT - 1) // (2 * rate.expire)
            lower += (
                f" (a client would hold up to {self.capacity(rate):,} units at once; at this "
                f"period at most {most:,} fit)"
            )
        raise ConfigurationError(
            f"{self!r} cannot decide rate {str(rate)!r} exactly, even at a limit of 1: with "
            f"a period of {rate.expire} ms {reach}; {lower}, or shorten the period"
        )

    def _largest_limit(self, rate: Rate) -> int:
        """The largest limit (0: none) whose numbers stay exact at `rate`'s period."""
        low, high = 0, rate.limit
        while low + 1 < high:
            middle = (low + high) // 2
            if self.scale(Rate(limit=middle, milliseconds=rate.expire)) < EXACT_LIMIT:
                low = middle
            else:
                high = middle
        return low

    def script_args(self, rate: Rate, cost: int) -> tuple[float, ...]:
        """Numbers the Redis script receives after the key: limit, period ms, cost, then parameters."""
        return (rate.limit, rate.expire, cost)

    async def decide(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: int = 1
    ) -> Decision:
        early = settled(self, rate, cost)
        if early is not None:
            return early
        if self.scale(rate) >= EXACT_LIMIT:
            self.check_scale(rate)
        return await backend.evaluate(backend.get_key(key) + self.suffix, self, rate, cost)

    async def get_stat(self, key: Any, rate: Rate, backend: ThrottleBackend) -> StrategyStat:
        if rate.unlimited:
            return StrategyStat.unlimited(key, rate)
        decision = await backend.evaluate(
            backend.get_key(key) + self.suffix, self, rate, 1, commit=False
        )
        remaining = decision.remaining or 0
        return StrategyStat(
            key=key,
            rate=rate,
            hits_remaining=remaining + 1 if decision.allowed else remaining,
            wait_ms=decision.wait_ms,
            metadata={"strategy": self.name, "reset_ms": decision.reset_ms},
        )
