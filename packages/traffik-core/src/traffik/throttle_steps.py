"""How a throttle's decision runs on a backend: its items, the backend's deciders for it, one step.

Mixed into `Throttle`. `hit` asks the backend for its deciders once per backend (`_deciders`:
in place where the backend can decide without a coroutine, else awaited) and otherwise takes
one step (`_step`): the strategy's own decision for one rate, the backend's over every rate's
items for several; the memory of refused clients, where a backend keeps one, is asked first
(`_remembered`). `_decide` is that decision again, for the `on_error` handlers that decide on
another store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik.fallback_share import scaled_rates
from traffik.on_error import decision_from_wait
from traffik.strategies import steps
from traffik.strategies.base import settled

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.refusals import RefusedClients
    from traffik.strategies.steps import Item

__all__ = ["DECIDERS_KEPT", "ThrottleSteps"]

DECIDERS_KEPT = 8
"""Pairs of rates and cost given per connection a throttle keeps deciders for
(`ThrottleSteps._deciders_for`): a few tiers of a rate callable, a few costs. Few, since a
decider remembers the store keys of the clients it decided (up to 16,384 in memory)."""


async def _waited(wait: Awaitable[Any], limit: int) -> Decision:
    """The decision of a strategy that answers a wait (traffik 1.2's contract)."""
    return decision_from_wait(await wait, limit)


class ThrottleSteps:
    """The items, deciders and steps of a decision, for `Throttle`."""

    strategy: Any
    _strategy_decide: Optional[Callable[..., Any]]
    _in_place: int
    _decider: tuple[
        Optional[ThrottleBackend],
        Optional[Callable[[str], Any]],
        Optional[Callable[[str], Awaitable[Any]]],
    ]
    _deciders_kept: dict[
        tuple[tuple[Rate, ...], int],
        tuple[
            ThrottleBackend,
            Optional[Callable[[str], Any]],
            Optional[Callable[[str], Awaitable[Any]]],
        ],
    ]

    if TYPE_CHECKING:

        async def _prepare(
            self,
            connection: Any,
            ctx: Mapping[str, Any],
            cost: Optional[int],
            backend: ThrottleBackend,
        ) -> Optional[tuple[tuple[Rate, ...], int, str]]: ...

        def _never_admitted(
            self, rates: tuple[Rate, ...], cost: int, key: Optional[str]
        ) -> Optional[str]: ...

    async def _decide(
        self,
        connection: Any,
        ctx: Mapping[str, Any],
        cost: Optional[int],
        backend: ThrottleBackend,
        share: float = 1.0,
    ) -> Optional[tuple[Decision, tuple[Rate, ...], int, str]]:
        """The decision for `connection` on `backend`, with the rates, cost and key it was
        made under (None: nothing to decide), as `hit` makes it, each limit scaled by `share`
        (a fallback's `per_process`); for the `on_error` handlers that decide again."""
        prepared = await self._prepare(connection, ctx, cost, backend)
        if prepared is None:
            return None
        rates, charged, key = prepared
        rates = scaled_rates(rates, share)
        return await self._step(key, rates, charged, backend), rates, charged, key

    def _deciders(
        self, backend: ThrottleBackend, rates: tuple[Rate, ...], cost: int
    ) -> tuple[Optional[Callable[[str], Any]], Optional[Callable[[str], Awaitable[Decision]]]]:
        """The backend's deciders for this throttle's own rates and cost (`_made_deciders`),
        remembered until the backend changes."""
        decide, waited = self._made_deciders(backend, rates, cost)
        self._decider = (backend, decide, waited)
        return decide, waited

    def _deciders_for(
        self, backend: ThrottleBackend, rates: tuple[Rate, ...], cost: int
    ) -> tuple[Optional[Callable[[str], Any]], Optional[Callable[[str], Awaitable[Decision]]]]:
        """`_deciders` for rates or a cost given per connection (a rate or cost callable, a
        `cost=` given to `hit`): remembered per backend, rates and cost, for the first
        `DECIDERS_KEPT` pairs of rates and cost a throttle meets; the others are decided by
        the strategy (None, None), as a cost never admitted always is (`settled`)."""
        kept = self._deciders_kept
        made = kept.get((rates, cost))
        if made is not None and made[0] is backend:
            return made[1], made[2]
        if made is None and len(kept) >= DECIDERS_KEPT:
            return None, None
        if any(settled(self.strategy, rate, cost) is not None for rate in rates):
            decide, waited = None, None
        else:
            decide, waited = self._made_deciders(backend, rates, cost)
        kept[(rates, cost)] = (backend, decide, waited)
        return decide, waited

    def _made_deciders(
        self, backend: ThrottleBackend, rates: tuple[Rate, ...], cost: int
    ) -> tuple[Optional[Callable[[str], Any]], Optional[Callable[[str], Awaitable[Decision]]]]:
        """The backend's deciders for this throttle's strategy at `rates` and `cost`:
        `decider` (no coroutine, None when a hit cannot be decided at once; `decider_all`
        for several rates) and `waited_decider` (awaited, for the others; none for several
        rates, which `evaluate_all` decides)."""
        strategy, kind = self.strategy, self._in_place
        if len(rates) == 1:
            decide = backend.decider(strategy, rates[0], cost, kind)
            waited = backend.waited_decider(strategy, rates[0], cost, kind)
        else:
            decide, waited = backend.decider_all(strategy, rates, cost, kind), None
        return decide, waited

    async def _remembered(
        self,
        refusals: RefusedClients,
        key: str,
        rates: tuple[Rate, ...],
        cost: int,
        backend: ThrottleBackend,
        decide: Optional[Callable[[str], Optional[Decision]]],
        waited: Optional[Callable[[str], Awaitable[Decision]]],
    ) -> Decision:
        """`hit`'s decision on a backend that remembers refused clients (its `refusals`): a
        client refused a moment ago is refused again without the store; a refusal of the
        store is remembered from when the refusals were asked (never too long)."""
        asked_at = backend.now_ms()  # (asked before the store is busy)
        decision = refusals.check(key, rates, cost, asked_at, self.strategy)
        if decision is None:
            decision = None if decide is None else decide(key)
            if decision is None:
                step = self._step(key, rates, cost, backend) if waited is None else waited(key)
                decision = await step
            if not decision.allowed:
                never = self._never_admitted(rates, cost, key) is not None
                refusals.remember(key, rates, cost, decision, asked_at, self.strategy, never)
        if decision.at is None:  # (the store did not say when)
            decision.at = asked_at
        return decision

    def _step(
        self, key: str, rates: tuple[Rate, ...], cost: int, backend: ThrottleBackend
    ) -> Awaitable[Decision]:
        """The strategy's decision (one rate) or the backend's over every rate's item."""
        if len(rates) == 1:
            if self._strategy_decide is not None:
                return self._strategy_decide(key, rates[0], backend, cost)
            return _waited(self.strategy(key, rates[0], backend, cost), rates[0].limit)
        return backend.evaluate_all(self.items(key, rates, cost, backend))

    def items(
        self, key: str, rates: tuple[Rate, ...], cost: int, backend: ThrottleBackend
    ) -> list[Item]:
        """The items of one decision on `rates` for the client whose key is `key`."""
        return steps.items(self.strategy, key, rates, cost, backend)
