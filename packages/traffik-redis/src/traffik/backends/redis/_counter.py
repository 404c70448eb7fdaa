"""`RedisCounter`: `FixedWindow`'s counter on Redis, `increment_with_ttl` in one `EVALSHA`, and its decider."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Callable

from traffik.backends.base import WindowCount
from traffik.backends.lanes import counter_decider
from traffik.backends.redis import scripts
from traffik.backends.redis._commands import _whole
from traffik.backends.redis._expiry import _px
from traffik.backends.redis.steps import ScriptSteps, _fields
from traffik.strategies.base import settled
from traffik.strategies.steps import IN_PLACE_COUNTER

if TYPE_CHECKING:
    from traffik.decision import Decision
    from traffik.rates import Rate

__all__ = ["RedisCounter"]

_COUNTER_ARGS_MAX = 256
"""`increment_with_ttl` arguments kept per backend, one entry per (amount, ttl)."""
_COUNTER = scripts.SCRIPTS["increment_with_ttl"]


class RedisCounter(ScriptSteps):
    """The in-place counter of `FixedWindow` (`increment_with_ttl`), and the decider a
    throttle makes once on it (`waited_decider`); state strategies are `ScriptSteps`'."""

    _counter_args: dict[tuple[int, float], tuple[bytes, bytes]]

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        """INCRBY plus a TTL when the key has none, in one atomic script; never leaves an immortal counter.

        Args:
            key: The key (namespaced if it is not already).
            amount: What to add (a whole number).
            ttl: Seconds until a key without a TTL is gone.

        Returns:
            The counter's new value, a `WindowCount` that also carries the milliseconds
            until the key is gone (`ttl_ms`).

        Raises:
            ValueError: When `amount` is not a whole number.
        """
        args = self._counter_args.get((amount, ttl)) if type(amount) is int else None
        if args is None:
            whole = _whole(amount)
            args = (str(whole).encode(), str(_px(ttl)).encode())
            if len(self._counter_args) >= _COUNTER_ARGS_MAX:
                del self._counter_args[next(iter(self._counter_args))]
            self._counter_args[(whole, ttl)] = args
        key = self._key(key)
        reply = await self._run(_COUNTER.name, scripts.evalsha, _COUNTER.sha, (key,), args)
        count, gone_in = reply.split(b"|" if type(reply) is bytes else "|")
        return WindowCount(int(count), int(gone_in))

    def waited_decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Callable[[str], Awaitable[Decision]] | None:
        """`strategy.decide` made once for a throttle's hot path (`ScriptSteps.waited_decider`
        for a state). `FixedWindow`'s counter: `increment_with_ttl`'s `EVALSHA`, its
        arguments made once; concurrent hits on one key (in one event loop) that arrive while
        one is in flight add up in the next one, each hit's count the one it would have
        reached alone, in arrival order (`traffik.backends.lanes`).

        A decision goes through `strategy.decide` instead while a test replaced
        `increment_with_ttl` on this instance."""
        if kind != IN_PLACE_COUNTER:
            return super().waited_decider(strategy, rate, cost, kind)
        if settled(strategy, rate, cost) is not None:
            return None
        name, sha = _COUNTER.name, _COUNTER.sha
        px = str(_px(rate.expire / 1000)).encode()  # (as `FixedWindow.decide` asks)
        prefix, suffix, own = self._prefix, strategy.suffix, self.__dict__
        strategy_decide = strategy.decide

        async def count(counter: str, amount: int) -> tuple[int, float | None]:
            reply = await self._run(name, scripts.evalsha, sha, (counter,), (b"%d" % amount, px))
            total, gone_in = _fields(reply)
            return int(total), int(gone_in)

        counted = counter_decider(count, rate, cost, circuits=self.circuits)

        async def decide(key: str) -> Decision:
            if "increment_with_ttl" in own:
                return await strategy_decide(key, rate, self, cost)
            return await counted(prefix + key + suffix)

        return decide
