"""`Ledger`: what a fallback admitted is charged to the failed store when its circuit closes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from traffik.backends.health import CircuitPolicy, CircuitState, StoreCircuit
from traffik.backends.inmemory import InMemoryBackend
from traffik.clock import ManualClock
from traffik.exceptions import BackendConnectionError, BackendError
from traffik.rates import parse_rates
from traffik.reconcile import Ledger
from traffik.strategies import GCRA, FixedWindow, SlidingWindowCounter, TokenBucket

pytestmark = pytest.mark.anyio

RATES = parse_rates("10/min")


def _store() -> InMemoryBackend:
    """An in-memory store with a circuit, standing for a network store."""
    store = InMemoryBackend(namespace="store", clock=ManualClock())

    async def probe() -> None:
        return None

    store.circuits = (StoreCircuit("store", probe, CircuitPolicy(failure_threshold=1)),)
    return store


async def _recover(store: InMemoryBackend) -> None:
    circuit = store.circuits[0]
    circuit.trip(BackendConnectionError("down"))
    while circuit.state is not CircuitState.CLOSED:
        await asyncio.sleep(0.001)
    for _ in range(5):
        await asyncio.sleep(0)  # the settling task


async def _left(store: InMemoryBackend, strategy: Any, key: str) -> int:
    return int((await strategy.get_stat(key, RATES[0], store)).hits_remaining)


@pytest.mark.parametrize(
    "strategy", [FixedWindow(), SlidingWindowCounter(), TokenBucket(), GCRA()], ids=repr
)
async def test_what_was_admitted_is_charged_on_recovery(strategy: Any) -> None:
    store, ledger = _store(), Ledger()
    await strategy.decide("client", RATES[0], store, 3)
    for _ in range(4):
        ledger.add(store, strategy, "client", RATES, 1)
    assert ledger.owed(store) == 4
    await _recover(store)
    assert ledger.owed(store) == 0
    assert await _left(store, strategy, "client") == 3


async def test_what_was_admitted_in_a_blip_is_charged_though_the_circuit_never_opened() -> None:
    """A store back before its circuit opened (a restart within the quiet period): its first
    answer after the failures charges what the fallback admitted meanwhile."""
    store, ledger, strategy = _store(), Ledger(), FixedWindow()
    circuit = store.circuits[0]
    circuit.failed(BackendConnectionError("refused"))  # (one refusal: no quiet period yet)
    ledger.add(store, strategy, "client", RATES, 4)
    assert circuit.state is CircuitState.CLOSED and circuit.opened == 0
    circuit.answered()  # the next decision on the store succeeded
    for _ in range(5):
        await asyncio.sleep(0)  # the settling task
    assert ledger.owed(store) == 0
    assert await _left(store, strategy, "client") == 6


async def test_what_was_admitted_after_the_store_answered_again_is_charged_at_once() -> None:
    """A decision that failed just before the store came back, whose fallback admitted
    after another decision already had the store's answer: nothing is left to wait for."""
    store, ledger, strategy = _store(), Ledger(), FixedWindow()
    circuit = store.circuits[0]
    circuit.failed(BackendConnectionError("refused"))
    circuit.answered()  # another request's decision, meanwhile
    ledger.add(store, strategy, "client", RATES, 1, BackendError("OOM"))  # (an answer: waits)
    for _ in range(5):
        await asyncio.sleep(0)
    assert ledger.owed(store) == 1
    ledger.add(store, strategy, "client", RATES, 3, BackendConnectionError("refused"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert ledger.owed(store) == 0
    assert await _left(store, strategy, "client") == 6


async def test_a_refused_charge_takes_what_is_left() -> None:
    store, ledger, strategy = _store(), Ledger(), TokenBucket()
    await strategy.decide("client", RATES[0], store, 8)
    ledger.add(store, strategy, "client", RATES, 6)
    await _recover(store)
    assert await _left(store, strategy, "client") == 0


async def test_a_failed_charge_stays_owed_and_stale_entries_go() -> None:
    store, ledger, strategy = _store(), Ledger(), FixedWindow()
    ledger.add(store, strategy, "client", RATES, 2)

    async def refuse(*args: Any, **kwargs: Any) -> int:
        raise BackendConnectionError("down again")

    store.increment_with_ttl = refuse  # type: ignore[method-assign]
    assert await ledger.settle(store) == 0
    assert ledger.owed(store) == 2
    del store.increment_with_ttl
    assert await ledger.settle(store) == 2
    ledger.add(store, strategy, "old", parse_rates("10/ms"), 1)
    await asyncio.sleep(0.01)
    assert await ledger.settle(store) == 0  # older than its period: the store forgot it too


async def test_a_failed_charge_adds_to_what_the_client_was_admitted_meanwhile() -> None:
    store, ledger, strategy = _store(), Ledger(), FixedWindow()
    ledger.add(store, strategy, "client", RATES, 2)
    charging = asyncio.Event()

    async def refuse(*args: Any, **kwargs: Any) -> int:
        charging.set()
        await asyncio.sleep(0)
        raise BackendConnectionError("down again")

    store.increment_with_ttl = refuse  # type: ignore[method-assign]
    settling = asyncio.ensure_future(ledger.settle(store))
    await charging.wait()
    ledger.add(store, strategy, "client", RATES, 3)  # (while the charge is on its way)
    assert await settling == 0
    assert ledger.owed(store) == 5


async def test_a_store_without_circuits_is_never_charged() -> None:
    store, ledger = InMemoryBackend(), Ledger()
    ledger.add(store, FixedWindow(), "client", RATES, 1)
    assert ledger.owed(store) == 0


def _request() -> Any:
    from starlette.requests import Request

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    return Request({**scope, "client": ("10.0.0.9", 1234)})


async def _admitted(throttle: Any, tries: int) -> int:
    """How many of `tries` hits, one client's, `throttle` admits."""
    from traffik.exceptions import ConnectionThrottled

    admitted = 0
    for _ in range(tries):
        try:
            await throttle.hit(_request())
        except ConnectionThrottled:
            continue
        admitted += 1
    return admitted


@pytest.mark.parametrize(
    ("give_back", "admitted"), [("refund", 9), ("settle", 9), ("refund, spare down", 6)]
)
async def test_what_the_fallback_admitted_and_gave_back_is_not_charged(
    give_back: str, admitted: int
) -> None:
    """Four requests admitted by the fallback during an outage, three of them given back
    (`refund`, or settled by `charge_when`): the store is charged the one that stayed (ten,
    less one). A give-back the fallback itself fails to take leaves the client charged there,
    so the ledger keeps the units owed: the store is charged all four (ten, less four)."""
    from traffik import HTTPThrottle
    from traffik.error_handlers import fallback
    from traffik.outcomes import Outcome, settle
    from traffik.testing import FailingBackend

    inner = _store()
    store = FailingBackend(inner)
    store.circuits = inner.circuits
    spare = FailingBackend(InMemoryBackend(namespace="spare"))
    throttle = HTTPThrottle(
        f"given-back-{give_back}",
        "10/min",
        backend=store,
        on_error=fallback(spare),
        charge_when=lambda outcome: outcome.status_code < 400,
        per_route=False,
    )
    store.fail(BackendConnectionError("down"))
    requests = [_request() for _ in range(4)]
    for request in requests:
        await throttle.hit(request)
    if give_back.endswith("spare down"):
        spare.fail(BackendConnectionError("spare down too"), operations="refund")
    for request in requests[1:]:
        if give_back.startswith("refund"):
            await throttle.refund(request)  # (spare down: logged, nothing given back)
        else:
            await settle(request, Outcome(500))
    spare.recover()
    store.recover()
    await _recover(inner)
    assert await _admitted(throttle, 12) == admitted


async def test_a_refund_takes_its_units_out_of_the_entry_never_below_zero() -> None:
    store, ledger, strategy = _store(), Ledger(), FixedWindow()
    spare = InMemoryBackend(namespace="spare")
    ledger.add(store, strategy, "client", RATES, 3)
    ledger.add(store, strategy, "other", RATES, 2)
    halves = parse_rates("5/min")  # the same periods, scaled by a `per_process` share
    assert ledger.refund(spare, strategy, "client", halves, 2) == 2
    assert ledger.owed(store) == 3
    assert ledger.refund(store, strategy, "other", RATES, 1) == 0  # taken on the store itself
    assert ledger.refund(spare, strategy, "client", parse_rates("10/s"), 1) == 0  # other periods
    assert ledger.refund(spare, strategy, "client", halves, 5) == 1  # what is left, no more
    assert ledger.owed(store) == 2
    assert ledger.refund(spare, strategy, "client", halves, 1) == 0  # the entry is gone
    await _recover(store)
    assert await _left(store, strategy, "client") == 10
    assert await _left(store, strategy, "other") == 8


async def test_what_handlers_built_per_request_admitted_is_charged_once_they_are_gone() -> None:
    """A throttle per request, each with its own `fallback(spare)`: what they admitted is
    owed in the spare's ledger, which outlives them, and charged when the store returns."""
    import gc

    from traffik import HTTPThrottle
    from traffik.error_handlers import fallback
    from traffik.testing import FailingBackend

    inner = _store()
    store = FailingBackend(inner)
    store.circuits = inner.circuits
    spare = InMemoryBackend(namespace="spare")
    store.fail(BackendConnectionError)  # (a new error each time: none holds a handler)
    for _ in range(4):
        throttle = HTTPThrottle("per-request", "10/min", backend=store, on_error=fallback(spare))
        await throttle.hit(_request())
    del throttle
    gc.collect()
    store.recover()
    await _recover(inner)
    again = HTTPThrottle("per-request", "10/min", backend=store)
    assert await _admitted(again, 12) == 6  # ten, less the four the fallback admitted
