"""`MemcachedCounter`: `FixedWindow`'s counter on memcached, one `incr` on an open window, and its decider."""

from __future__ import annotations

from collections.abc import Awaitable
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik.backends.base import WindowCount
from traffik.backends.lanes import counter_decider
from traffik.backends.memcached._counters import window_hit
from traffik.backends.memcached._options import whole
from traffik.backends.memcached._window import COUNT_SPAN, FOLD_AT, WINDOW_LIMIT
from traffik.exceptions import ConfigurationError
from traffik.strategies.base import AHEAD_MS, settled
from traffik.strategies.steps import IN_PLACE_COUNTER

if TYPE_CHECKING:
    from traffik.backends.health import StoreCircuit
    from traffik.backends.memcached._node import Node
    from traffik.backends.memcached._ring import Ring
    from traffik.decision import Decision
    from traffik.rates import Rate

__all__ = ["MemcachedCounter"]


class MemcachedCounter:
    """The window counter of `FixedWindow` (`increment_with_ttl`), and the decider a
    throttle makes once on it (`waited_decider`)."""

    now_ms: Callable[[], int]
    circuits: tuple[StoreCircuit, ...]
    _prefix: str
    _single: Optional[Node]
    _ring: Ring

    if TYPE_CHECKING:

        async def _locate(self, key: str) -> tuple[Node, bytes]: ...

        async def increment(self, key: str, amount: int = 1) -> int: ...

        async def ttl(self, key: str) -> Optional[float]: ...

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        """Count `amount` in the window at `key`; one `incr` while the window is open.

        The window's end is stored with its count (see `traffik.backends.memcached._window`),
        so the result is a `WindowCount` with the exact time left in milliseconds, and the
        window closes on this backend's clock. `amount` is at most `WINDOW_LIMIT`.

        Args:
            key: The key of the window counter.
            amount: What to add (a whole number, at most `WINDOW_LIMIT`; a negative amount
                is a plain `increment`).
            ttl: The window's length, in seconds, for a window this call opens.

        Returns:
            The count in the window, a `WindowCount` carrying the milliseconds left.

        Raises:
            ConfigurationError: When `amount` is larger than `WINDOW_LIMIT`.
        """
        # The hot path of `FixedWindow`: everything but the one `incr` is kept to a few
        # attribute reads; whatever is not an open window's count goes on in `window_hit`.
        if type(amount) is not int:
            amount = whole(amount)
        if not 0 <= amount <= WINDOW_LIMIT:
            if amount < 0:
                return await self.increment(key, amount)
            raise ConfigurationError(
                f"increment_with_ttl(amount={amount}): a memcached window counter adds at most "
                f"{WINDOW_LIMIT:,} per hit; use a smaller cost"
            )
        keys = None
        if type(key) is str:
            node = self._single or self._ring.pick(key)
            keys = node.keys  # None before the first use, and once closed
        if keys is not None and monotonic() < node.fresh_until:
            mkey = keys(key)
        else:
            node, mkey = await self._locate(key)  # initialises, reads the generation
        now = self.now_ms()
        line = b"incr %s %d\r\n" % (mkey, amount)
        reply = await node.run(
            lambda client, conn: client.line_on(conn, line), "increment_with_ttl"
        )
        if reply.isdigit():
            end, count = divmod(int(reply), COUNT_SPAN)
            if now < end <= now + ttl * 1000 + AHEAD_MS and count < FOLD_AT:  # (not `too_late`)
                return WindowCount(count, end - now)
        return await node.run(
            window_hit(mkey, amount, float(ttl), now, reply), "increment_with_ttl"
        )

    def waited_decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Optional[Callable[[str], Awaitable[Decision]]]:
        """`FixedWindow.decide` made once for a throttle's hot path (its counter's key and
        window worked out once): one `incr` per hit, and concurrent hits on one key (in one
        event loop) that arrive while one is in flight add up in the next `incr`, each hit
        getting the count it would have reached alone, in arrival order
        (`traffik.backends.lanes`). Other strategies: None (their hits are coalesced inside
        `evaluate`).

        A decision goes through `strategy.decide` instead while a test replaced
        `increment_with_ttl` on this instance."""
        if kind != IN_PLACE_COUNTER or settled(strategy, rate, cost) is not None:
            return None
        if cost > WINDOW_LIMIT:
            return None  # (`decide` raises the error of it, per hit)
        prefix, suffix, own = self._prefix, strategy.suffix, self.__dict__
        strategy_decide, limit, window = strategy.decide, rate.limit, rate.expire / 1000.0

        async def count(counter: str, amount: int) -> tuple[int, Optional[float]]:
            total = await self.increment_with_ttl(counter, amount, window)
            ttl_ms = getattr(total, "ttl_ms", None)
            if ttl_ms is None and total > limit:
                ttl_ms = await self.ttl(counter)
            return int(total), ttl_ms

        counted = counter_decider(count, rate, cost, most=WINDOW_LIMIT, circuits=self.circuits)

        async def decide(key: str) -> Decision:
            if "increment_with_ttl" in own:
                return await strategy_decide(key, rate, self, cost)
            return await counted(prefix + key + suffix)

        return decide
