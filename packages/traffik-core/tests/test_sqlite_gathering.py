"""`SQLiteBackend` with a free file: writes of one loop iteration share a transaction.

The first task to write in a loop iteration writes at once; others writing in the same
iteration queue, and the loop serves them in its next iteration in one transaction (a
savepoint each), in arrival order, `MAX_BATCH` per iteration. Every outcome is the one a
sequential run in that order gives. Real files, no other process (except where a raw
`sqlite3` connection holds the write lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from sqlite_kit import Ticker, hold, insert, release, statements, stored, values
from starlette.requests import Request

from traffik import HTTPThrottle, ManualClock, Rate
from traffik.backends.sqlite import SQLiteBackend
from traffik.backends.sqlite._turns import MAX_BATCH
from traffik.exceptions import BackendConnectionError, BackendError, ConnectionThrottled
from traffik.refusals import RefusedClients
from traffik.strategies import BUILTIN_STRATEGIES, GCRA, FixedWindow, TokenBucket

pytestmark = pytest.mark.anyio


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "traffik.db"


@pytest.fixture
async def backend(db: Path) -> AsyncIterator[SQLiteBackend]:
    backend = SQLiteBackend(db, timeout=5)
    await backend.initialize()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    yield backend
    await backend.close()


def started(*calls: Any) -> list[asyncio.Task[Any]]:
    """Each call as a task, in order: they all take their first step in the loop's next
    iteration, one after the other (as `asyncio.gather` starts them)."""
    return [asyncio.ensure_future(call) for call in calls]


# -- one transaction for concurrent writes ------------------------------------------------


async def test_concurrent_writes_share_one_transaction(backend: SQLiteBackend) -> None:
    await backend.increment_with_ttl("warm", 1, 60)
    with statements(backend) as seen:
        counts = await asyncio.gather(
            *(backend.increment_with_ttl("hits", 1, 60) for _ in range(10))
        )
    assert counts == list(range(1, 11))
    # The first wrote at once; the nine others, in the same iteration, in one transaction.
    assert seen.count("BEGIN IMMEDIATE") == seen.count("COMMIT") == 2
    assert seen.count("SAVEPOINT step") == seen.count("RELEASE step") == 9
    assert seen[:2] == ["BEGIN IMMEDIATE", "COMMIT"], "the first alone"
    assert int(await backend.get("hits") or 0) == 10
    assert not backend._db._handle().turns


async def test_a_gathering_is_served_max_batch_per_loop_iteration(backend: SQLiteBackend) -> None:
    # Serving holds the event loop: MAX_BATCH writes at most per iteration, then the loop
    # goes round (other tasks run) before the next MAX_BATCH.
    await backend.increment_with_ttl("warm", 1, 60)
    n = 2 * MAX_BATCH + 3
    ticker = Ticker()
    with statements(backend, ticker) as seen:
        counts = await asyncio.gather(
            *(backend.increment_with_ttl("hits", 1, 60) for _ in range(n))
        )
    ticker.stop()
    assert counts == list(range(1, n + 1))
    begins = [tick for sql, tick in zip(seen, seen.ticks) if sql == "BEGIN IMMEDIATE"]
    assert len(begins) == 1 + math.ceil((n - 1) / MAX_BATCH)
    assert len(set(begins)) == len(begins), "one transaction per loop iteration"
    steps, most = 0, 0
    for sql in seen:
        if sql == "BEGIN IMMEDIATE":
            steps = 0
        elif sql == "SAVEPOINT step":
            steps += 1
            most = max(most, steps)
    assert most == MAX_BATCH


async def test_throttle_hits_at_once_share_transactions_and_admit_the_first_in_order(
    backend: SQLiteBackend,
) -> None:
    # Through the throttle's hot path (`decide_now`): the first hit decides at once, the
    # second waits for the gathering, and the 28 behind it on the same key wait for that
    # one and then go together (see the coalescing tests below).
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    with statements(backend) as seen:
        results = await asyncio.gather(
            *(throttle.hit(request) for _ in range(30)), return_exceptions=True
        )
    assert results[:10] == [request] * 10
    assert all(isinstance(r, ConnectionThrottled) for r in results[10:]), results[10:]
    # The second is one statement in the gathering's transaction (no savepoint: the
    # statement is atomic), the 28 one step in a transaction of their own.
    assert seen == [
        *("REWRITE", "BEGIN IMMEDIATE", "COMMIT"),  # (no row yet: the transaction writes it)
        *("BEGIN IMMEDIATE", "REWRITE", "COMMIT"),
        *("BEGIN IMMEDIATE", "COMMIT"),
    ]


def timeline(n: int) -> list[tuple[str, int]]:
    """Keys and costs of `n` decisions, mixed."""
    return [("abc"[i % 3] if i % 4 else "a", 1 + (i % 5 == 4)) for i in range(n)]


@pytest.mark.parametrize("strategy_class", BUILTIN_STRATEGIES, ids=lambda c: c.__name__)
async def test_concurrent_decisions_are_those_of_a_sequential_run_in_arrival_order(
    tmp_path: Path, strategy_class: type
) -> None:
    clock = ManualClock()
    rate = Rate.parse("5/min")
    steps = timeline(24)
    gathered = SQLiteBackend(tmp_path / "gathered.db", clock=clock)
    alone = SQLiteBackend(tmp_path / "alone.db", clock=clock)
    await gathered.initialize()
    await alone.initialize()
    strategy = strategy_class()
    concurrent: list[float] = []
    sequential: list[float] = []
    for _ in range(3):
        with statements(gathered) as seen:
            concurrent += await asyncio.gather(
                *(strategy(key, rate, gathered, cost) for key, cost in steps)
            )
        assert seen.count("BEGIN IMMEDIATE") < len(steps), "they did gather"
        for key, cost in steps:
            sequential.append(await strategy(key, rate, alone, cost))
        clock.advance(7)
    assert concurrent == sequential
    assert 0 < sum(w == 0 for w in concurrent) < len(concurrent), "some admitted, some not"
    await gathered.close()
    await alone.close()


# -- errors and cancellation ----------------------------------------------------------------


async def test_a_failing_step_fails_alone_in_a_gathering(backend: SQLiteBackend, db: Path) -> None:
    write = backend._db.write
    await write("inserting", insert(0))
    with statements(backend) as seen:
        results = await asyncio.gather(
            write("inserting", insert(1)),  # at once
            write("inserting", insert(2)),  # the rest gathered
            write("inserting", insert(2)),  # a duplicate: sqlite3.IntegrityError
            write("inserting", insert(3, KeyError("third"))),
            write("inserting", insert(4)),
            return_exceptions=True,
        )
    assert list(results[:2]) == [1, 2] and results[4] == 4
    assert isinstance(results[2], BackendError) and not isinstance(results[2], sqlite3.Error)
    assert "while inserting" in str(results[2])
    assert isinstance(results[2].__cause__, sqlite3.IntegrityError)
    assert isinstance(results[3], KeyError)
    assert values(db) == [0, 1, 2, 4]  # the failed steps' own inserts were undone
    assert seen.count("COMMIT") == 2 and seen.count("ROLLBACK TO step") == 2


async def test_a_failing_commit_fails_every_gathered_step(backend: SQLiteBackend, db: Path) -> None:
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TABLE child (parent INTEGER REFERENCES t (v) DEFERRABLE INITIALLY DEFERRED)"
        )
    handle = backend._db._handle()
    assert handle.cursor is not None
    handle.cursor.execute("PRAGMA foreign_keys = ON")

    def orphan(cursor: sqlite3.Cursor) -> None:  # only COMMIT checks a deferred foreign key
        cursor.execute("INSERT INTO child (parent) VALUES (42)")

    write = backend._db.write
    results = await asyncio.gather(
        write("a", insert(1)),
        write("b", insert(2)),
        write("c", orphan),
        write("d", insert(4)),
        return_exceptions=True,
    )
    assert results[0] == 1, "the first wrote at once, alone"
    assert all(isinstance(r, BackendError) for r in results[1:]), results
    assert all(str(r).endswith(f"while {doing}") for r, doing in zip(results[1:], "bcd"))
    assert values(db) == [1]
    assert await write("inserting", insert(5)) == 5  # the connection is usable again
    assert not handle.turns


async def test_a_task_cancelled_before_the_gathering_is_served_writes_nothing(
    backend: SQLiteBackend, db: Path
) -> None:
    write = backend._db.write
    tasks = started(*(write("inserting", insert(v)) for v in (1, 2, 3, 4)))
    await asyncio.sleep(0)  # each made its first step: the first wrote, the others wait
    assert tasks[0].done() and not any(t.done() for t in tasks[1:])
    assert len(backend._db._handle().turns._line) == 3
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[:2] == [1, 2] and results[3] == 4
    assert isinstance(results[2], asyncio.CancelledError)
    assert values(db) == [1, 2, 4]
    assert not backend._db._handle().turns


async def test_the_first_gathered_task_cancelled_leaves_the_others_served(
    backend: SQLiteBackend, db: Path
) -> None:
    write = backend._db.write
    tasks = started(*(write("inserting", insert(v)) for v in (1, 2, 3)))
    await asyncio.sleep(0)
    tasks[1].cancel()  # the first in line, which the loop was about to serve
    await asyncio.sleep(0)  # (its cancellation lands before the loop serves the line)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], asyncio.CancelledError)
    assert values(db) == [1, 3]
    assert not backend._db._handle().turns


async def test_a_task_cancelled_once_its_step_ran_drops_the_result(
    backend: SQLiteBackend, db: Path
) -> None:
    write = backend._db.write
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[Any]] = []

    def last(cursor: sqlite3.Cursor) -> int:
        # Runs in the gathered transaction, before the outcomes are handed out: the
        # cancellation lands after task 1 has its result, before it resumes.
        loop.call_soon(tasks[1].cancel)
        return insert(3)(cursor)

    tasks += started(write("inserting", insert(1)), write("inserting", insert(2)), write("x", last))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], asyncio.CancelledError)
    assert values(db) == [1, 2, 3]  # it was charged, as if it completed just before
    await write("inserting", insert(4))  # the line is clear
    assert not backend._db._handle().turns


async def test_a_read_among_gathered_writes_goes_alone_in_its_turn(
    backend: SQLiteBackend,
) -> None:
    await backend.increment_with_ttl("warm", 1, 60)
    with statements(backend) as seen:
        results = await asyncio.gather(
            backend.increment_with_ttl("hits", 1, 60),
            backend.increment_with_ttl("hits", 1, 60),
            backend.increment_with_ttl("hits", 1, 60),
            backend.get("hits"),
            backend.increment_with_ttl("hits", 1, 60),
        )
    assert list(results[:3]) == [1, 2, 3] and int(results[3] or 0) == 3 and results[4] == 4
    assert seen.count("COMMIT") == 3  # the first at once, two gathered, the last alone


# -- a busy file --------------------------------------------------------------------------


async def test_a_gathering_that_finds_the_file_busy_waits_in_order(
    backend: SQLiteBackend, db: Path
) -> None:
    tasks = started(*(backend.increment_with_ttl("hits", 1, 60) for _ in range(5)))
    await asyncio.sleep(0)  # the first wrote; four wait for the loop to serve them
    assert tasks[0].done() and len(backend._db._handle().turns._line) == 4
    held, released = hold(db), False  # another process takes the lock first
    try:
        await asyncio.sleep(0.02)
        assert not any(t.done() for t in tasks[1:]), "nobody gets through while it is held"
        tasks += started(*(backend.increment_with_ttl("hits", 1, 60) for _ in range(3)))
        await asyncio.sleep(0.01)  # newcomers queue behind, none asks on its own
        assert len(backend._db._handle().turns._line) == 7
        with statements(backend) as seen:
            release(held)
            released = True
            counts = await asyncio.gather(*tasks)
    finally:
        if not released:
            release(held)
    assert counts == list(range(1, 9)), "in arrival order"
    assert seen.count("COMMIT") == 1, "the first in line took the rest with it"
    assert not backend._db._handle().turns


async def test_a_hit_that_finds_the_file_busy_asks_the_remembered_refusals_once(
    backend: SQLiteBackend, db: Path
) -> None:
    asked: list[str] = []

    class Counting(RefusedClients):
        def check(self, key: str, *args: Any) -> Any:
            asked.append(key)
            return super().check(key, *args)

    backend.refusals = Counting()
    throttle = HTTPThrottle("t", rate="5/min", backend=backend)
    request = _from("10.0.0.1")
    assert await throttle.hit(request) is request
    assert len(asked) == 1
    held = hold(db)
    try:
        hit = asyncio.ensure_future(throttle.hit(request))
        await asyncio.sleep(0.01)
        assert not hit.done(), "the file is busy: it waits its turn"
    finally:
        release(held)
    assert await hit is request
    assert len(asked) == 2, "asked before the file was found busy, not again after"


async def test_a_gathering_on_a_file_held_too_long_times_out(db: Path) -> None:
    backend = SQLiteBackend(db, timeout=0.1)
    await backend.initialize()
    tasks = started(*(backend.increment_with_ttl("hits", 1, 60) for _ in range(4)))
    await asyncio.sleep(0)
    held = hold(db)
    try:
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    finally:
        release(held)
    assert results[0] == 1
    assert all(isinstance(r, BackendConnectionError) for r in results[1:]), results
    assert not backend._db._handle().turns
    assert await backend.increment_with_ttl("hits", 1, 60) == 2
    await backend.close()


# -- a lone task keeps the direct path ------------------------------------------------------


async def test_sequential_writes_of_one_task_never_gather_nor_suspend(
    backend: SQLiteBackend,
) -> None:
    await backend.increment_with_ttl("warm", 1, 60)
    with statements(backend) as seen:
        for expected in range(1, 6):
            step = backend.increment_with_ttl("hits", 1, 60)
            with pytest.raises(StopIteration) as done:  # no suspension: done in one send
                step.send(None)
            assert done.value.value == expected
    assert seen == ["BEGIN IMMEDIATE", "COMMIT"] * 5


@pytest.mark.parametrize("strategy", [FixedWindow(), TokenBucket(), GCRA()], ids=repr)
async def test_a_task_deciding_twice_in_one_iteration_decides_at_once_both_times(
    backend: SQLiteBackend, strategy: Any
) -> None:
    # Two throttles on one route: one task, two decisions in the same loop iteration.
    rate = Rate.parse("3/min")
    kind = HTTPThrottle("t", rate=rate, backend=backend, strategy=strategy)._in_place
    key = backend.get_key("client") + getattr(strategy, "suffix", "")
    await asyncio.sleep(0)  # an iteration of its own (whatever wrote before the test)
    assert backend.decide_now(key, strategy, rate, 1, kind) is not None
    assert backend.decide_now(key, strategy, rate, 1, kind) is not None
    assert not backend._db._handle().turns


async def test_another_task_in_the_same_iteration_goes_the_long_way(
    backend: SQLiteBackend,
) -> None:
    strategy, rate = FixedWindow(), Rate.parse("3/min")
    kind = HTTPThrottle("t", rate=rate, backend=backend, strategy=strategy)._in_place
    key = backend.get_key("client")
    found: list[Any] = []

    async def decide() -> None:
        found.append(backend.decide_now(key, strategy, rate, 1, kind))

    await asyncio.gather(decide(), decide())
    assert found[0] is not None and found[1] is None, "the second gathers (via `decide`)"
    await asyncio.sleep(0)  # a new iteration: the next task decides at once again
    await asyncio.gather(decide())
    assert found[2] is not None


async def test_writes_of_tasks_in_successive_iterations_each_go_at_once(
    backend: SQLiteBackend,
) -> None:
    await backend.increment_with_ttl("warm", 1, 60)
    with statements(backend) as seen:
        for expected in range(1, 4):
            assert await asyncio.ensure_future(backend.increment_with_ttl("hits", 1, 60)) == (
                expected
            )
    assert seen == ["BEGIN IMMEDIATE", "COMMIT"] * 3


# -- the throttle's waited decider: gathered hits skip `strategy.decide` -----------------------


def _from(host: str) -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": (host, 1)}
    return Request(scope)


async def _outcome(throttle: HTTPThrottle, request: Request) -> Any:
    try:
        await throttle.hit(request)
    except ConnectionThrottled as exc:
        return ("throttled", exc.wait_period)
    return "admitted"


@pytest.mark.parametrize("strategy_class", BUILTIN_STRATEGIES, ids=lambda c: c.__name__)
async def test_gathered_throttle_hits_decide_as_sequential_ones(
    tmp_path: Path, strategy_class: type
) -> None:
    clock = ManualClock()
    gathered = SQLiteBackend(tmp_path / "gathered.db", clock=clock)
    alone = SQLiteBackend(tmp_path / "alone.db", clock=clock)
    fast = HTTPThrottle("t", rate="4/min", backend=gathered, strategy=strategy_class())
    slow = HTTPThrottle("t", rate="4/min", backend=alone, strategy=strategy_class())
    hosts = [f"10.0.0.{1 + i % 3}" for i in range(20)]
    for _ in range(3):
        concurrent = await asyncio.gather(*(_outcome(fast, _from(h)) for h in hosts))
        sequential = [await _outcome(slow, _from(h)) for h in hosts]
        assert concurrent == sequential
        clock.advance(9)
    assert fast._decider[0] is gathered and fast._decider[2] is not None
    await gathered.close()
    await alone.close()


async def test_the_waited_decider_goes_through_a_replaced_evaluate(
    backend: SQLiteBackend,
) -> None:
    from traffik.strategies.steps import IN_PLACE_STATE

    decide = backend.waited_decider(TokenBucket(), Rate.parse("5/min"), 1, IN_PLACE_STATE)
    assert decide is not None
    assert (await decide("client")).remaining == 4
    replaced = patch.object(backend, "evaluate", side_effect=BackendError("replaced"))
    with replaced as evaluate, pytest.raises(BackendError, match="replaced"):
        await decide("client")
    assert evaluate.call_count == 1
    assert (await decide("client")).remaining == 3


# -- hits on one key: one read and one write for those that wait together -------------------


@pytest.mark.parametrize("cost", [1, 2])
@pytest.mark.parametrize("strategy_class", BUILTIN_STRATEGIES, ids=lambda c: c.__name__)
async def test_fifty_hits_on_one_key_take_three_transactions_and_decide_as_sequential_ones(
    tmp_path: Path, strategy_class: type, cost: int
) -> None:
    # (Refusals not remembered: every hit reaches the file, so the stored states compare.)
    clock = ManualClock()
    together = SQLiteBackend(tmp_path / "together.db", clock=clock, cache_refusals=False)
    alone = SQLiteBackend(tmp_path / "alone.db", clock=clock, cache_refusals=False)
    fast = HTTPThrottle("t", rate="40/min", backend=together, strategy=strategy_class(), cost=cost)
    slow = HTTPThrottle("t", rate="40/min", backend=alone, strategy=strategy_class(), cost=cost)
    request = _from("10.0.0.1")
    await fast.hit(_from("10.0.0.9"))  # the connection opens (the statements are traced)
    await slow.hit(_from("10.0.0.9"))
    admitted = 0
    for burst in range(3):
        with statements(together) as seen:
            concurrent = await asyncio.gather(*(_outcome(fast, request) for _ in range(50)))
        # The first at once (one statement once the key's row exists; before, that
        # statement finds no row and a transaction writes it), the second gathered (one
        # statement in the gathering's transaction), the 48 that waited for it in one step.
        first = ["REWRITE", "BEGIN IMMEDIATE", "COMMIT"] if burst == 0 else ["REWRITE"]
        assert seen == [
            *first,
            *("BEGIN IMMEDIATE", "REWRITE", "COMMIT"),
            *("BEGIN IMMEDIATE", "COMMIT"),
        ]
        sequential = [await _outcome(slow, request) for _ in range(50)]
        assert concurrent == sequential
        assert concurrent[-1] != "admitted"
        assert stored(tmp_path / "together.db") == stored(tmp_path / "alone.db")
        admitted += concurrent.count("admitted")
        clock.advance(37)
    assert admitted * cost > 40, "the first burst filled the budget, a later one got some back"
    await together.close()
    await alone.close()


@pytest.mark.parametrize(
    "strategy_class", [FixedWindow, TokenBucket, GCRA], ids=lambda c: c.__name__
)
async def test_hits_of_several_costs_on_one_key_decide_in_arrival_order(
    tmp_path: Path, strategy_class: type
) -> None:
    # Two throttles with one name share a key: a hit of cost 3 that is refused charges
    # nothing (a state) or counts its 3 (a counter), and the hits behind it see that.
    clock = ManualClock()
    costs = [1, 3, 1, 3, 1, 1, 2, 1]
    outcomes = []
    for name in ("together", "alone"):
        backend = SQLiteBackend(tmp_path / f"{name}.db", clock=clock, cache_refusals=False)
        throttles = {
            c: HTTPThrottle("t", rate="5/min", backend=backend, strategy=strategy_class(), cost=c)
            for c in (1, 2, 3)
        }
        request = _from("10.0.0.1")
        await throttles[1].hit(_from("10.0.0.9"))
        hits = [_outcome(throttles[c], request) for c in costs]
        if name == "together":
            with statements(backend) as seen:
                outcomes.append(await asyncio.gather(*hits))
            assert seen.count("BEGIN IMMEDIATE") == 3
        else:
            outcomes.append([await hit for hit in hits])
        await backend.close()
    assert outcomes[0] == outcomes[1]
    assert {"admitted"} < set(outcomes[0])
    assert stored(tmp_path / "together.db") == stored(tmp_path / "alone.db")


async def test_a_hit_arriving_while_its_key_waits_goes_behind_the_waiting_hits(
    backend: SQLiteBackend,
) -> None:
    throttle = HTTPThrottle("t", rate="3/min", backend=backend)
    request = _from("10.0.0.1")
    first = started(*(_outcome(throttle, request) for _ in range(5)))
    # The five reach the backend: the 1st decides at once, the 2nd gathers, 3 wait for it.
    # Once the 2nd is decided, the file is free, but the 3 have not gone yet.
    handle = backend._db._handle()
    while handle.turns or not first[1].done():
        await asyncio.sleep(0)
    assert len(backend._lanes) == 1 and not first[2].done()
    late = await _outcome(throttle, request)
    assert [await task for task in first] == ["admitted"] * 3 + [("throttled", 60.0)] * 2
    assert late == ("throttled", 60.0)


async def test_a_round_that_fails_fails_each_of_its_hits(tmp_path: Path) -> None:
    from traffik.exceptions import BackendCapacityError
    from traffik.strategies.steps import IN_PLACE_STATE

    backend = SQLiteBackend(tmp_path / "full.db", max_keys=1)
    await backend.set("taken", "1")
    decide = backend.waited_decider(TokenBucket(), Rate.parse("5/min"), 1, IN_PLACE_STATE)
    assert decide is not None
    results = await asyncio.gather(*(decide("new") for _ in range(6)), return_exceptions=True)
    assert all(isinstance(r, BackendCapacityError) for r in results), results
    assert await backend.get("taken") == "1"
    assert not backend._lanes, "the key's lane is closed"
    await backend.close()


async def test_a_hit_cancelled_while_waiting_for_its_round_is_not_charged(
    backend: SQLiteBackend,
) -> None:
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    request = _from("10.0.0.1")
    tasks = started(*(_outcome(throttle, request) for _ in range(6)))
    await asyncio.sleep(0)  # all six reached the backend: four wait in the key's lane
    tasks[4].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[4], asyncio.CancelledError)
    assert await _outcome(throttle, request) == "admitted"
    (stat,) = [await throttle.stat(request)]
    assert stat is not None and stat.hits_remaining == 10 - 6


async def test_hits_waiting_for_their_round_fail_on_their_own_time_and_are_not_charged(
    db: Path,
) -> None:
    backend = SQLiteBackend(db, timeout=0.4, cache_refusals=False, on_error="raise")
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    request = _from("10.0.0.1")
    assert await _outcome(throttle, request) == "admitted"  # the key's row exists
    loop = asyncio.get_running_loop()
    held = hold(db)
    try:
        early = started(*(_outcome(throttle, request) for _ in range(3)))  # one waits, two queue
        ended: list[float] = []
        for task in early:
            task.add_done_callback(lambda _: ended.append(loop.time()))
        await asyncio.sleep(0.3)
        late = started(_outcome(throttle, request))  # queues behind the wait in flight
        done = await asyncio.gather(*early, return_exceptions=True)
        assert all(isinstance(r, BackendConnectionError) for r in done), done
        # The queued hits fail at their own time, with the first (they were called with it),
        # not a whole timeout (0.4 s) after it, once the first's round gave up.
        assert max(ended) - min(ended) < 0.2, "the queued hits waited for a round of their own"
        await asyncio.sleep(0.1)
    finally:
        release(held)  # the late hit's round gets the file before its time is up
    assert await late[0] == "admitted"
    stat = await throttle.stat(request)
    assert stat is not None and stat.hits_remaining == 10 - 2, "only the two decided charged"
    await backend.close()
