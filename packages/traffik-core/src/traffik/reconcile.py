"""What a fallback admitted while its store was down, charged to the store once it answers again.

A `Ledger` belongs to one fallback backend (`ledger_of`): every handler that falls back on
it records there. Each request the fallback admits adds its cost to the client's entry
(strategy, key and rates), per failed store. When that store answers again after failing
(`StoreCircuit.on_recovery`: its circuit closing, or its first answer after a blip too short
to open it), every ledger charges its entries to the store in the background; an entry
recorded once the store had answered again (a decision that failed just before, whose
fallback admitted just after) is charged at once. So a client that straddles the outage is
not granted its budget twice:

- `FixedWindow`: the units are counted in the store's current window (a counter counts past
  its limit), or a new window is opened with them.
- A state strategy (`TokenBucket`, `SlidingWindowCounter`, every `StateStrategy`): the units
  are taken as one hit; refused, as many as the store has left.
- Any other strategy is not charged.

An admission given back (`throttle.refund`, a settled `charge_when`, a refused throttle of
several decided as one: every `traffik.outcomes.Charge.give_back`) is taken out of the entry
that recorded it (`refund`), so the store is charged only what the client kept.

Best effort: an entry whose last admission is older than its longest period is dropped (the
store would have forgotten it), an entry the store fails to take is kept for the next
recovery, at most `MAX_ENTRIES` entries are kept (later ones are not recorded), and a store
without circuits (in memory, SQLite) is never charged. Charges never exceed a strategy's
capacity per entry, so a client is at worst refused until its budget comes back.

Nothing here outlives what it serves: a ledger lives as long as its fallback backend, and a
store's circuits hold one listener for all the ledgers (`_watch`), which refers to the store
and the ledgers weakly; handlers built per request, or stores dropped, leave nothing behind.
A store that answers costs nothing here: the listener runs only on its first answer after
failures, and `add` only after a failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Optional

from traffik.exceptions import BackendConnectionError
from traffik.logs import QuietLog
from traffik.strategies.base import StateStrategy
from traffik.strategies.steps import is_counter, items

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate
    from traffik.strategies.steps import Item

__all__ = ["MAX_ENTRIES", "Ledger", "charge", "ledger_of", "refund"]

MAX_ENTRIES = 100_000
"""Clients a ledger remembers per store; past that, admissions are not recorded (logged)."""

_log = QuietLog(logging.getLogger("traffik"), interval=60.0)

_Entry = tuple[Any, str, tuple[int, ...]]
"""strategy, the client's key (before namespacing), the periods of its rates (ms): the same
for the rates a `per_process` fallback scaled."""

_Owed = list[Any]
"""`[units, last admission (monotonic), rates]`: what an entry owes, under which rates."""

_ledgers: weakref.WeakSet[Ledger] = weakref.WeakSet()
"""The ledgers that recorded an admission: for `refund`, and to settle on a recovery."""
_watched: weakref.WeakSet[ThrottleBackend] = weakref.WeakSet()
"""The stores whose circuits settle the ledgers when they answer again after failing (`_watch`)."""
_by_fallback: weakref.WeakKeyDictionary[ThrottleBackend, Ledger] = weakref.WeakKeyDictionary()
"""The ledger of each fallback backend (`ledger_of`)."""


def _periods(rates: tuple[Rate, ...]) -> tuple[int, ...]:
    return tuple(rate.expire for rate in rates)


def ledger_of(fallback: ThrottleBackend) -> Ledger:
    """The ledger of what `fallback` admits while other stores are down: one per backend,
    shared by every handler that falls back on it, and gone with it."""
    ledger = _by_fallback.get(fallback)
    if ledger is None:
        ledger = _by_fallback[fallback] = Ledger()
    return ledger


def _watch(store: ThrottleBackend) -> None:
    """Have `store`'s circuits settle every ledger when the store answers after failing: one
    listener per store, holding it weakly (the circuits are the store's own)."""
    if store in _watched:
        return
    _watched.add(store)
    ref = weakref.ref(store)
    for circuit in store.circuits:
        circuit.on_recovery(lambda: _recovered(ref))


def _recovered(ref: weakref.ref[ThrottleBackend]) -> None:
    store = ref()
    if store is not None:
        for ledger in list(_ledgers):
            ledger._settle_soon(store)


def refund(
    backend: ThrottleBackend, strategy: Any, key: str, rates: tuple[Rate, ...], units: int
) -> None:
    """Take `units` a refund gave back on `backend` (a fallback) out of the ledger entry that
    recorded them for `key`, in the first ledger holding one (`Ledger.refund`)."""
    for ledger in _ledgers:
        if ledger.refund(backend, strategy, key, rates, units):
            return


async def charge(store: ThrottleBackend, item: Item) -> None:
    """Take `item.cost` units from the store for `item`, even past its limit where the
    strategy allows it (module docstring)."""
    strategy, rate = item.strategy, item.rate
    units = min(item.cost, strategy.capacity(rate))
    if units <= 0:
        return
    if is_counter(strategy):
        await store.increment_with_ttl(item.key, amount=units, ttl=rate.expire / 1000)
    elif isinstance(strategy, StateStrategy):
        decision = await store.evaluate(item.key, strategy, rate, units)
        left = int(decision.remaining or 0)
        if not decision.allowed and left > 0:
            await store.evaluate(item.key, strategy, rate, min(left, units))


class Ledger:
    """Units admitted by a fallback per client, owed to the store that failed."""

    def __init__(self) -> None:
        self._owed: weakref.WeakKeyDictionary[ThrottleBackend, dict[_Entry, _Owed]] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: set[asyncio.Task[int]] = set()

    def owed(self, store: ThrottleBackend) -> int:
        """The units admitted and not yet charged to `store`."""
        return int(sum(owed[0] for owed in self._owed.get(store, {}).values()))

    def add(
        self,
        store: ThrottleBackend,
        strategy: Any,
        key: str,
        rates: tuple[Rate, ...],
        cost: int,
        error: Optional[BaseException] = None,
    ) -> None:
        """Record `cost` units admitted for `key` while `store` was down. Charged at once
        when `error` (the store's failure) is one its circuits count (a lost connection, a
        timeout) and none counts a failure any more: the store answered since. An error the
        store answered with (a full memory, say) waits for a recovery, as it would fail the
        charge too."""
        if not store.circuits:
            return
        _watch(store)
        owed = self._owed.get(store)
        if owed is None:
            owed = self._owed[store] = {}
            _ledgers.add(self)
        entry = owed.get((strategy, key, _periods(rates)))
        if entry is None:
            if len(owed) >= MAX_ENTRIES:
                _log.log(
                    logging.WARNING,
                    "full",
                    "fallback ledger for %r is full (%d clients): admissions not recorded",
                    store,
                    MAX_ENTRIES,
                )
                return
            owed[(strategy, key, _periods(rates))] = [cost, time.monotonic(), rates]
        else:
            entry[0] += cost
            entry[1] = time.monotonic()
            entry[2] = rates
        if isinstance(error, BackendConnectionError) and not any(
            circuit.failures for circuit in store.circuits
        ):
            self._settle_soon(store)

    def refund(
        self,
        backend: ThrottleBackend,
        strategy: Any,
        key: str,
        rates: tuple[Rate, ...],
        units: int,
    ) -> int:
        """Take `units` given back on `backend` out of the entry of `key` (its strategy and
        periods: a fallback's scaled rates match) owed to a store other than `backend` (a
        charge taken on the store itself was never recorded). Never below zero; an empty
        entry is dropped. Returns the units taken out."""
        entry = (strategy, key, _periods(rates))
        for store, owed in list(self._owed.items()):
            found = owed.get(entry) if store is not backend else None
            if found is None:
                continue
            taken = min(units, int(found[0]))
            found[0] -= taken
            if found[0] <= 0:
                del owed[entry]
            return taken
        return 0

    def _settle_soon(self, store: ThrottleBackend) -> None:
        """`settle(store)` in a task of its own, when anything is owed to `store`."""
        if not self._owed.get(store):
            return
        task = asyncio.get_running_loop().create_task(self.settle(store))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, store: ThrottleBackend) -> int:
        """Charge everything owed to `store`; returns the units charged. Entries that fail
        stay owed; expired ones are dropped."""
        owed = self._owed.pop(store, None)
        if not owed:
            return 0
        now, charged = time.monotonic(), 0
        failed: dict[_Entry, _Owed] = {}
        for entry, (units, last, rates) in owed.items():
            strategy, key, periods = entry
            if now - last > max(periods) / 1000:
                continue
            try:
                for item in items(strategy, key, rates, int(units), store):
                    await charge(store, item)
            except Exception as exc:
                failed[entry] = [units, last, rates]
                _log.log(
                    logging.WARNING,
                    "failed",
                    "charging what the fallback admitted to %r failed (%s); kept for its next recovery",
                    store,
                    exc,
                )
                continue
            charged += int(units)
        if failed:  # (added to what was recorded for the same client meanwhile)
            again = self._owed.setdefault(store, {})
            for entry, value in failed.items():
                found = again.get(entry)
                if found is None:
                    again[entry] = value
                else:
                    found[0] += value[0]
        return charged
