"""`traffik.backends.lanes.Lanes` across event loops: a loop's round and the hits queued
behind it are that loop's, whatever another loop does on the same key meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from traffik.backends.health import CircuitPolicy, StoreCircuit
from traffik.backends.lanes import Lanes
from traffik.exceptions import BackendConnectionError, BackendError


async def hang(hits: list[int]) -> list[int]:
    """A round that never ends."""
    await asyncio.get_running_loop().create_future()
    return hits


async def double(hits: list[int]) -> list[int]:
    await asyncio.sleep(0)
    return [2 * hit for hit in hits]


def test_a_hit_of_another_loop_goes_alone_and_leaves_the_queued_ones_their_round() -> None:
    lanes: Lanes[int, int] = Lanes()
    other = asyncio.new_event_loop()
    gate = other.create_future()
    rounds: list[list[int]] = []

    async def gated(hits: list[int]) -> list[int]:
        rounds.append(hits)
        if len(rounds) == 1:
            await gate  # the first round stays in flight until the test opens the gate
        return [10 * hit for hit in hits]

    async def tenfold(hits: list[int]) -> list[int]:
        return [10 * hit for hit in hits]

    try:
        first = other.create_task(lanes.decide("k", 1, gated))
        queued = other.create_task(lanes.decide("k", 2, gated))
        other.run_until_complete(asyncio.sleep(0.01))
        assert rounds == [[1]] and not queued.done()

        # Another loop's hit on the same key: decided alone, at once.
        assert asyncio.run(lanes.decide("k", 3, tenfold)) == 30
        assert len(lanes) == 1  # the first loop's lane is still there

        gate.set_result(None)
        results = other.run_until_complete(
            asyncio.wait_for(asyncio.gather(first, queued), timeout=5)
        )
        assert results == [10, 20]
        assert rounds == [[1], [2]]  # the queued hit got its own round
        assert len(lanes) == 0
    finally:
        other.close()


def test_the_lane_of_a_closed_loop_is_replaced() -> None:
    lanes: Lanes[int, int] = Lanes()
    dead = asyncio.new_event_loop()
    stranded = dead.create_task(lanes.decide("k", 1, hang))
    dead.run_until_complete(asyncio.sleep(0.01))
    dead.close()  # closed with its round in flight: its lane is never closed
    assert not stranded.done()

    async def here() -> tuple[list[int], list[int]]:
        seen: list[list[int]] = []

        async def counted(hits: list[int]) -> list[int]:
            seen.append(hits)
            return await double(hits)

        return await asyncio.gather(*(lanes.decide("k", i, counted) for i in range(4))), seen

    results, seen = asyncio.run(here())
    assert results == [0, 2, 4, 6]
    assert seen == [[0], [1, 2, 3]]  # coalesced again in the live loop


def test_a_lane_belongs_to_its_event_loop() -> None:
    """A round in flight in another loop (here: one that never ends) holds no hit of this one."""
    lanes: Lanes[int, int] = Lanes()

    async def here() -> list[int]:
        return await asyncio.gather(*(lanes.decide(b"k", i, double) for i in range(3)))

    other = asyncio.new_event_loop()
    stuck = other.create_task(lanes.decide(b"k", 1, hang))
    try:
        other.run_until_complete(asyncio.sleep(0.01))
        assert not stuck.done() and len(lanes) == 1
        assert asyncio.run(here()) == [0, 2, 4]
    finally:
        stuck.cancel()
        other.run_until_complete(asyncio.gather(stuck, return_exceptions=True))
        other.close()


def test_the_next_round_is_run_by_the_hit_that_opened_the_lane() -> None:
    """Hits that join a lone round are decided together by the opener's `run`, whatever
    `run` they bring; a key whose rounds are over holds nothing."""
    lanes: Lanes[int, int] = Lanes()
    rounds: list[tuple[str, list[int]]] = []

    def named(name: str, factor: int):  # type: ignore[no-untyped-def]
        async def run(hits: list[int]) -> list[int]:
            rounds.append((name, hits))
            await asyncio.sleep(0)
            return [factor * hit for hit in hits]

        return run

    async def here() -> list[int]:
        assert await lanes.decide("k", 1, named("alone", 1)) == 1  # sequential: no lane left
        assert len(lanes) == 0
        opener, joiner = named("opener", 10), named("joiner", 100)
        return await asyncio.gather(
            lanes.decide("k", 1, opener), *(lanes.decide("k", i, joiner) for i in (2, 3))
        )

    assert asyncio.run(here()) == [10, 20, 30]
    assert rounds == [("alone", [1]), ("opener", [1]), ("opener", [2, 3])]
    assert len(lanes) == 0


def test_in_flight_is_a_live_view_of_the_keys_with_a_round() -> None:
    lanes: Lanes[int, int] = Lanes()
    in_flight = lanes.in_flight()  # taken once, as a hot path takes it

    async def main() -> None:
        started = asyncio.get_running_loop().create_future()

        async def held(hits: list[int]) -> list[int]:
            started.set_result(None)
            await asyncio.sleep(0.01)
            return hits

        assert "k" not in in_flight and "k" not in lanes
        task = asyncio.ensure_future(lanes.decide("k", 1, held))
        await started
        assert "k" in in_flight and "k" in lanes and "other" not in in_flight
        assert await task == 1
        assert "k" not in in_flight and "k" not in lanes

    asyncio.run(main())


async def _unanswered() -> None:
    """A probe that never gets its answer (the store stays down)."""
    await asyncio.get_running_loop().create_future()


def _failing_rounds(
    lanes: Lanes[int, int], failure: Exception, circuit: StoreCircuit
) -> tuple[list[object], list[list[int]]]:
    """Four hits on one key, the first round failing on `failure` (counted by `circuit`, as
    a store's command path counts it); what each hit got, and the rounds run."""
    rounds: list[list[int]] = []

    async def run(hits: list[int]) -> list[int]:
        rounds.append(hits)
        await asyncio.sleep(0)
        if len(rounds) == 1:
            if isinstance(failure, BackendConnectionError):
                circuit.failed(failure, silent=1.0)
            raise failure
        return hits

    async def here() -> list[object]:
        found = await asyncio.gather(
            *(lanes.decide("k", i, run) for i in range(4)), return_exceptions=True
        )
        circuit.stop()  # (its probe, once open)
        return found

    return asyncio.run(here()), rounds


def test_hits_behind_a_round_that_failed_on_an_outage_fail_with_it_at_once() -> None:
    """A store's lanes send no second round to a store that just did not answer: the hits
    queued behind the failed one get its error, and each counts on the circuit."""
    circuit = StoreCircuit("store", _unanswered, CircuitPolicy(failure_threshold=3))
    outage = BackendConnectionError("timed out")
    results, rounds = _failing_rounds(Lanes([circuit]), outage, circuit)
    assert results == [outage] * 4
    assert rounds == [[0]]
    assert circuit.opened == 1  # one timeout and three hits that waited for it


@pytest.mark.parametrize("circuits", [False, True], ids=["no circuits", "an answer"])
def test_hits_behind_a_round_that_failed_otherwise_get_a_round_of_their_own(
    circuits: bool,
) -> None:
    """Without circuits (SQLite: a busy file is no outage), or after an error the store
    answered, the queued hits are decided in their own round."""
    circuit = StoreCircuit("store", _unanswered)
    failure: Exception = BackendConnectionError("busy") if not circuits else BackendError("no")
    lanes: Lanes[int, int] = Lanes([circuit] if circuits else ())
    results, rounds = _failing_rounds(lanes, failure, circuit)
    assert results == [failure, 1, 2, 3]
    assert rounds == [[0], [1, 2, 3]]
