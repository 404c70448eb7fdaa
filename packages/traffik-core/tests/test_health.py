"""`StoreCircuit`: opens after failures in a row spanning the quiet period, refuses at once while
open (letting only its probe through), probes in the background, closes on the first answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from traffik.backends.health import (
    DEFAULT_POLICY,
    CircuitPolicy,
    CircuitState,
    StoreCircuit,
    circuit_policy,
)
from traffik.exceptions import BackendConnectionError, CircuitOpenError, ConfigurationError

pytestmark = pytest.mark.anyio

ERROR = BackendConnectionError("timed out")


class Store:
    """A probe target that answers once `up`, counting the probes."""

    def __init__(self) -> None:
        self.up = False
        self.probes = 0

    async def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise BackendConnectionError("still down")


def _circuit(store: Store, **policy: Any) -> StoreCircuit:
    options = {"failure_threshold": 2, "quiet_period": 0.0, "probe_interval": 0.01, **policy}
    return StoreCircuit("store", store.probe, CircuitPolicy(**options))


async def _until(condition: Any, within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": True}, "failure_threshold"),
        ({"quiet_period": -1}, "quiet_period"),
        ({"probe_interval": 0}, "probe_interval"),
        ({"probe_interval": float("nan")}, "probe_interval"),
    ],
)
def test_bad_policies_are_refused_naming_the_setting(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        CircuitPolicy(**options)


def test_the_circuit_option() -> None:
    assert circuit_policy("B", True) is DEFAULT_POLICY
    assert circuit_policy("B", False).enabled is False
    policy = CircuitPolicy(failure_threshold=9)
    assert circuit_policy("B", policy) is policy
    with pytest.raises(ConfigurationError, match="B: circuit='yes'"):
        circuit_policy("B", "yes")


async def test_it_opens_after_the_threshold_and_refuses_at_once() -> None:
    store = Store()
    circuit = _circuit(store)
    circuit.failed(ERROR)
    assert circuit.state is CircuitState.CLOSED and not circuit.tripped
    circuit.failed(ERROR)
    assert circuit.state is not CircuitState.CLOSED and circuit.tripped
    with pytest.raises(CircuitOpenError, match="store: GET not attempted") as caught:
        circuit.check("GET")
    assert isinstance(caught.value, BackendConnectionError)
    assert circuit.info()["refused"] == 1 and circuit.opened == 1
    store.up = True
    await _until(lambda: circuit.state is CircuitState.CLOSED)
    assert not circuit.tripped and circuit.failures == 0 and store.probes >= 1


async def test_an_answer_resets_the_count() -> None:
    circuit = _circuit(Store(), failure_threshold=3)
    for _ in range(5):
        circuit.failed(ERROR)
        circuit.failed(ERROR)
        circuit.answered()
    assert circuit.state is CircuitState.CLOSED and circuit.opened == 0


async def test_refused_connections_must_span_the_quiet_period_and_a_timeout_proves_it() -> None:
    circuit = _circuit(Store(), quiet_period=60.0)
    for _ in range(10):
        circuit.failed(ERROR)  # refused at once: the store was not shown silent for long
    assert circuit.state is CircuitState.CLOSED
    circuit.failed(ERROR, silent=60.0)  # a 60 s timeout expired
    assert circuit.state is not CircuitState.CLOSED


async def test_only_the_probe_gets_through_while_open() -> None:
    seen: list[str] = []
    holder: list[StoreCircuit] = []

    async def probe() -> None:
        holder[0].check("PING")  # the probe runs the command path: let through
        seen.append("probe")

    circuit = StoreCircuit("store", probe, CircuitPolicy(failure_threshold=1, quiet_period=0))
    holder.append(circuit)
    circuit.failed(ERROR)
    await _until(lambda: circuit.state is CircuitState.CLOSED)
    assert seen == ["probe"] and circuit.refused == 0


async def test_recovery_listeners_run_on_every_closing() -> None:
    store = Store()
    circuit = _circuit(store)
    calls: list[int] = []

    def listener() -> None:
        calls.append(1)

    circuit.on_recovery(listener)
    circuit.on_recovery(listener)  # once only
    for _ in range(2):
        store.up = False
        circuit.trip(ERROR)
        store.up = True
        await _until(lambda: circuit.state is CircuitState.CLOSED)
    assert calls == [1, 1] and circuit.opened == 2


async def test_recovery_listeners_run_when_the_store_answers_after_failures_that_never_opened_it() -> (
    None
):
    circuit = _circuit(Store(), failure_threshold=3)
    calls: list[int] = []
    circuit.on_recovery(lambda: calls.append(1))
    circuit.failed(ERROR)
    circuit.failed(ERROR)
    assert circuit.state is CircuitState.CLOSED
    circuit.answered()  # what the command path does after a success, while failures counted
    assert calls == [1] and circuit.opened == 0 and circuit.failures == 0


async def test_a_disabled_circuit_tracks_but_never_refuses() -> None:
    store = Store()
    circuit = _circuit(store, enabled=False)
    circuit.failed(ERROR)
    circuit.failed(ERROR)
    assert circuit.state is not CircuitState.CLOSED and not circuit.tripped
    circuit.answered()  # a real operation answered
    assert circuit.state is CircuitState.CLOSED


async def test_stop_forgets_everything_and_ends_the_probe() -> None:
    store = Store()
    circuit = _circuit(store, probe_interval=0.01)
    circuit.trip(ERROR)
    await asyncio.sleep(0.03)
    circuit.stop()
    probes = store.probes
    await asyncio.sleep(0.05)
    assert store.probes == probes
    assert circuit.info() | {"last_error": None} == {
        "store": "store",
        "state": "closed",
        "enabled": True,
        "failures": 0,
        "opened": 1,
        "refused": 0,
        "open_for": None,
        "last_error": None,
    }


def test_a_probe_that_died_with_its_loop_is_started_again() -> None:
    store = Store()
    circuit = _circuit(store, probe_interval=10.0)

    async def open_it() -> None:
        circuit.trip(ERROR)
        await asyncio.sleep(0)

    asyncio.run(open_it())  # the loop ends: its probe task is cancelled with it
    store.up = True

    async def use_it() -> None:
        with pytest.raises(CircuitOpenError):
            circuit.check("GET")  # starts a probe in this loop
        await _until(lambda: circuit.state is CircuitState.CLOSED)

    asyncio.run(use_it())
