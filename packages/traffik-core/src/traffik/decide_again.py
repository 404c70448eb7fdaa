"""A failed decision decided again: on the store that failed, or on a handler's fallback store.

`retry` and `failover` (`traffik.error_handlers`) run the decision again on the store that
failed (`decide_again(info, None)`); `fallback` and `failover` run it on their own store
(`Fallback`), each limit scaled to one process's share (`traffik.fallback_share`), what it
admitted noted in the store's ledger (`traffik.reconcile`). The whole decision runs again,
identity included, with `exc_info["decide"]`; an `exc_info` built by hand as traffik 1.2
shaped it (no `decide`) runs the throttle's strategy again on the `key` it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, cast

from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.fallback_share import process_share, scaled_rates
from traffik.handler_arguments import check_backend, check_initialized
from traffik.on_error import DecidedWait, ThrottleExceptionInfo, decision_from_wait
from traffik.reconcile import ledger_of

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate

__all__ = ["Fallback", "decide_again"]


async def decide_again(
    info: ThrottleExceptionInfo, backend: Optional[ThrottleBackend], share: float = 1.0
) -> Decision:
    """The decision again on `backend` (None: the one that failed), each limit scaled by
    `share`: the whole decision with `info["decide"]`, which notes what it charges on that
    backend, or, for an `exc_info` without it, the strategy on `info["key"]`."""
    decide = cast(Mapping[str, Any], info).get("decide")  # absent from traffik 1.2's exc_info
    if decide is not None:
        return await decide(backend, share)
    on, key, cost = backend or info["backend"], info["key"], info["cost"]
    rates = _rates_of(info)
    if share < 1.0 and key is not None and rates and on is not None:
        return await _decide_on_key(info, on, scaled_rates(rates, share))
    return await _strategy_decision(info["throttle"].strategy, key, info["rate"], on, cost)


def _rates_of(info: ThrottleExceptionInfo) -> Optional[tuple[Rate, ...]]:
    """Every rate `info` names (traffik 1.2's `exc_info` has only `rate`), None when unknown."""
    rates = cast(Mapping[str, Any], info).get("rates")
    if rates:
        return cast("tuple[Rate, ...]", rates)
    return (info["rate"],) if info["rate"] is not None else None


async def _decide_on_key(
    info: ThrottleExceptionInfo, backend: ThrottleBackend, rates: tuple[Rate, ...]
) -> Decision:
    """The decision on `backend` for the key a traffik 1.2 `exc_info` names, under `rates`
    (scaled ones)."""
    throttle, key, cost = info["throttle"], info["key"], info["cost"]
    step = getattr(throttle, "_step", None)
    if step is not None:
        decision: Decision = await step(key, rates, cost, backend)
        return decision
    return await _strategy_decision(throttle.strategy, key, rates[0], backend, cost)


async def _strategy_decision(
    strategy: Any, key: Any, rate: Optional[Rate], backend: Any, cost: Any
) -> Decision:
    """One call of `strategy` as a `Decision`: its `decide`, or the wait it answers (traffik
    1.2's contract)."""
    run = getattr(strategy, "decide", None)
    if run is not None:
        decision: Decision = await run(key, rate, backend, cost)
        return decision
    return decision_from_wait(await strategy(key, rate, backend, cost), rate.limit if rate else 0)


class Fallback:
    """Where a handler's fallback decisions go: `backend`, each limit scaled by `share`, and
    what it admits recorded in `ledger` (None: not reconciled)."""

    __slots__ = ("backend", "initialized", "ledger", "share")

    def __init__(
        self,
        owner: str,
        backend: ThrottleBackend,
        initialized: Optional[bool],
        per_process: Any,
        reconcile: bool,
    ) -> None:
        check_backend(owner, backend)
        check_initialized(owner, initialized)
        if not isinstance(reconcile, bool):
            raise ConfigurationError(f"{owner}(reconcile={reconcile!r}): must be True or False")
        self.backend = backend
        self.initialized = initialized
        self.share = process_share(owner, per_process)
        self.ledger = ledger_of(backend) if reconcile else None

    async def decide(self, info: ThrottleExceptionInfo) -> DecidedWait:
        """The decision again on the fallback; its failure is raised chained to the original."""
        backend = self.backend
        try:
            if self.initialized is False and not backend.initialized:
                await backend.initialize()
            decision = await decide_again(info, backend, self.share)
            key, rates, failed = info["key"], _rates_of(info), info["backend"]
            if (
                self.ledger is not None
                and failed is not None
                and key is not None
                and rates
                and decision.allowed
                and decision.remaining is not None
            ):
                self.ledger.add(
                    failed,
                    info["throttle"].strategy,
                    key,
                    rates,
                    info["cost"] or 1,
                    info["exception"],
                )
            return DecidedWait(decision)
        except Exception as exc:
            raise exc from info["exception"]
