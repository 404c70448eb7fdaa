"""`SQLiteBackend`: a decision made at once on a row that exists is one `UPDATE` statement.

The throttle's hot path (`decide_now`) changes the row inside the `UPDATE` that writes it
(`RewritingCursor`), instead of a `BEGIN IMMEDIATE`, `SELECT`, `UPDATE`, `COMMIT`
transaction. These tests hold it to the transaction's answers and stored rows, hit by hit,
for every built-in strategy; a missing row still goes through the transaction (which
creates it). Real files; a raw `sqlite3` connection stands for another process.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_kit import hold, release, statements, stored

from traffik import HTTPThrottle, ManualClock, Rate
from traffik.backends.sqlite import SQLiteBackend
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, TokenBucket

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[SQLiteBackend, SQLiteBackend, ManualClock]]:
    """Two files on one clock: `rewritten` decided through `decide_now`, `transacted`
    through the strategy (a transaction per decision)."""
    clock = ManualClock()
    rewritten = SQLiteBackend(tmp_path / "rewritten.db", clock=clock)
    transacted = SQLiteBackend(tmp_path / "transacted.db", clock=clock)
    await rewritten.initialize()
    await transacted.initialize()
    yield rewritten, transacted, clock
    await rewritten.close()
    await transacted.close()


def kind_of(backend: SQLiteBackend, strategy: Any, rate: Rate) -> int:
    kind = HTTPThrottle("t", rate=rate, backend=backend, strategy=strategy)._in_place
    assert kind, f"{strategy!r} decides in place"
    return kind


async def decide_now(
    backend: SQLiteBackend, client: str, strategy: Any, rate: Rate, cost: int, kind: int
) -> Any:
    await asyncio.sleep(0)  # a loop iteration of its own: nothing else wrote in it
    key = backend.get_key(client) + getattr(strategy, "suffix", "")
    decision = backend.decide_now(key, strategy, rate, cost, kind)
    assert decision is not None, "decided at once"
    return decision


class Broken(TokenBucket):
    """A `TokenBucket` whose transition raises while `broken`."""

    broken = False

    def transition(self, state: Any, now: int, rate: Rate, cost: int) -> Any:
        if self.broken:
            raise ZeroDivisionError("a broken transition")
        return super().transition(state, now, rate, cost)


TIMELINE = [
    # (client, cost multiplier, seconds to advance after): bursts that refuse, pauses that
    # refill, and a pause past every window and bucket (expired rows are reused in place).
    *[("a", 1, 0)] * 7,
    ("b", 2, 1),
    *[("a", 1, 3)] * 3,
    ("b", 1, 0),
    ("c", 2, 200),
    *[("a", 2, 0)] * 4,
    ("c", 1, 0.5),
    ("b", 1, 0),
]


@pytest.mark.parametrize("cost", [1, 2])
@pytest.mark.parametrize("strategy_class", BUILTIN_STRATEGIES, ids=lambda c: c.__name__)
async def test_one_statement_decisions_answer_and_store_what_transactions_do(
    pair: tuple[SQLiteBackend, SQLiteBackend, ManualClock], strategy_class: type, cost: int
) -> None:
    rewritten, transacted, clock = pair
    strategy, rate = strategy_class(), Rate.parse("5/min")
    kind = kind_of(rewritten, strategy, rate)
    for backend in (rewritten, transacted):  # the connection opens (statements are traced)
        await backend.set("warm", "1")
    seen_clients: set[str] = set()
    allowed = refused = 0
    for client, times, advance in TIMELINE:
        with statements(rewritten) as seen:
            got = await decide_now(rewritten, client, strategy, rate, cost * times, kind)
        want = await strategy.decide(client, rate, transacted, cost * times)
        assert (got.allowed, got.wait_ms, got.remaining) == (
            want.allowed,
            want.wait_ms,
            want.remaining,
        ), (client, clock.now())
        # One statement, or (no row yet) that statement and then a transaction.
        new = ["BEGIN IMMEDIATE", "COMMIT"] if client not in seen_clients else []
        assert seen == ["REWRITE", *new]
        seen_clients.add(client)
        assert stored(rewritten.path) == stored(transacted.path)
        allowed += got.allowed
        refused += not got.allowed
        clock.advance(advance)
    assert allowed and refused, "the timeline both admits and refuses"


async def test_a_counter_that_is_not_a_number_counts_from_zero_as_in_a_transaction(
    pair: tuple[SQLiteBackend, SQLiteBackend, ManualClock],
) -> None:
    rewritten, transacted, _ = pair
    strategy, rate = FixedWindow(), Rate.parse("5/min")
    kind = kind_of(rewritten, strategy, rate)
    for backend in (rewritten, transacted):
        await backend.set("client" + strategy.suffix, "garbage", expire=30)
    got = await decide_now(rewritten, "client", strategy, rate, 2, kind)
    want = await strategy.decide("client", rate, transacted, 2)
    assert (got.allowed, got.remaining, got.reset_ms) == (True, 3, 30_000)
    assert (want.allowed, want.remaining, want.reset_ms) == (True, 3, 30_000)
    assert stored(rewritten.path) == stored(transacted.path)


async def test_a_transition_that_raises_leaves_the_row_and_the_connection_as_they_were(
    tmp_path: Path,
) -> None:
    backend = SQLiteBackend(tmp_path / "t.db", clock=ManualClock())
    await backend.initialize()

    strategy, rate = Broken(), Rate.parse("5/min")
    kind = kind_of(backend, strategy, rate)
    first = await decide_now(backend, "client", strategy, rate, 1, kind)
    assert first.allowed and first.remaining == 4
    before = stored(backend.path)
    strategy.broken = True
    await asyncio.sleep(0)
    key = backend.get_key("client") + strategy.suffix
    with pytest.raises(ZeroDivisionError, match="a broken transition"):
        backend.decide_now(key, strategy, rate, 1, kind)
    assert stored(backend.path) == before
    conn = backend._db._handle().cursor
    assert conn is not None and not conn.connection.in_transaction
    strategy.broken = False
    assert (await decide_now(backend, "client", strategy, rate, 1, kind)).remaining == 3
    await backend.close()


async def test_while_another_process_writes_the_statement_is_not_made_at_once(
    pair: tuple[SQLiteBackend, SQLiteBackend, ManualClock],
) -> None:
    # The one statement needs the write lock like a transaction: busy, it answers None
    # (the throttle then waits its turn) and changes nothing.
    backend = pair[0]
    strategy, rate = TokenBucket(), Rate.parse("5/min")
    kind = kind_of(backend, strategy, rate)
    await decide_now(backend, "client", strategy, rate, 1, kind)
    before = stored(backend.path)
    held = hold(backend.path)
    try:
        await asyncio.sleep(0)
        key = backend.get_key("client") + strategy.suffix
        assert backend.decide_now(key, strategy, rate, 1, kind) is None
    finally:
        release(held)
    assert stored(backend.path) == before
    assert (await decide_now(backend, "client", strategy, rate, 1, kind)).remaining == 3


def test_the_rewrite_functions_refuse_a_statement_of_their_own(tmp_path: Path) -> None:
    from traffik.backends.sqlite._rewrite import RewritingCursor

    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    cursor = conn.cursor(RewritingCursor)
    cursor.execute("CREATE TABLE traffik_entries (key TEXT PRIMARY KEY, value, expires_at)")
    cursor.execute("INSERT INTO traffik_entries VALUES ('k', 'v', NULL)")
    with pytest.raises(sqlite3.OperationalError):
        cursor.execute(
            "UPDATE traffik_entries SET value = traffik_value(value, expires_at) WHERE key = 'k'"
        )
    assert cursor.execute("SELECT value FROM traffik_entries").fetchall() == [("v",)]
    assert cursor.rewrite("k", lambda v, e: (v + "!", e, "done")) == "done"
    assert cursor.execute("SELECT value FROM traffik_entries").fetchall() == [("v!",)]
    conn.close()


# -- gathered: one statement each in the batch's transaction, no savepoint ------------------


async def test_gathered_decisions_are_a_statement_each_and_a_failing_one_is_undone_alone(
    tmp_path: Path,
) -> None:
    backend = SQLiteBackend(tmp_path / "t.db", clock=ManualClock(), max_keys=6)
    await backend.initialize()
    good, broken, rate = TokenBucket(), Broken(), Rate.parse("5/min")
    kind = kind_of(backend, good, rate)
    decide = backend.waited_decider(good, rate, 1, kind)
    decide_broken = backend.waited_decider(broken, rate, 1, kind)
    assert decide is not None and decide_broken is not None
    clients = ["a", "b", "c", "d", "e"]
    for client in clients:  # every row exists
        await decide(client)
    before = dict((key, value) for key, value, _ in stored(backend.path))
    broken.broken = True
    calls = [decide_broken("c") if c == "c" else decide(c) for c in clients]
    with statements(backend) as seen:
        results = await asyncio.gather(*calls, decide("new"), return_exceptions=True)
    assert isinstance(results[2], ZeroDivisionError), results
    assert [r.remaining for i, r in enumerate(results[:5]) if i != 2] == [3, 3, 3, 3]
    assert results[5].remaining == 4, "a new row is created in the same transaction"
    # The first at once; the others in one transaction, the new row's in a savepoint.
    assert seen == [
        "REWRITE",
        "BEGIN IMMEDIATE",
        *["REWRITE"] * 4,
        "REWRITE",
        "SAVEPOINT atomically",
        "RELEASE atomically",
        "COMMIT",
    ]
    after = dict((key, value) for key, value, _ in stored(backend.path))
    changed = {key for key in after if after[key] != before.get(key)}
    assert changed == {backend.get_key(c) + good.suffix for c in ("a", "b", "d", "e", "new")}
    # A new row beyond the cap fails alone too, its savepoint undone.
    full = await asyncio.gather(decide("a"), decide("x"), decide("b"), return_exceptions=True)
    assert [type(r).__name__ for r in full] == ["Decision", "BackendCapacityError", "Decision"]
    assert backend.get_key("x") + good.suffix not in {key for key, _, _ in stored(backend.path)}
    await backend.close()


# -- what a throttle's row change reads when it runs, not when it was made -----------------


@pytest.mark.parametrize("where", ["file", ":memory:"])
@pytest.mark.parametrize("strategy_class", BUILTIN_STRATEGIES, ids=lambda c: c.__name__)
async def test_a_clock_set_after_the_decider_was_made_times_the_next_hits(
    tmp_path: Path, strategy_class: type, where: str
) -> None:
    # A throttle's deciders are made at its first hit; a clock set on the backend
    # afterwards is the time of its next hits, at once or in turn, as it is for a new row
    # and on the other backends.
    backend = SQLiteBackend(tmp_path / "t.db" if where == "file" else ":memory:")
    backend.clock = before = ManualClock()
    strategy, rate = strategy_class(), Rate.parse("2/min")
    kind = kind_of(backend, strategy, rate)
    async with backend:
        decide = backend.decider(strategy, rate, 1, kind)
        waited = backend.waited_decider(strategy, rate, 1, kind)
        assert decide is not None and waited is not None
        allowed = []
        for _ in range(4):
            await asyncio.sleep(0)  # (a loop iteration each: decided at once)
            decision = decide("client")
            assert decision is not None
            allowed.append(decision.allowed)
        assert allowed[-1] is False, allowed
        backend.clock = ManualClock(before() + 7200)  # two hours on: every window is past
        await asyncio.sleep(0)
        again = decide("client")
        assert again is not None and again.allowed, "at once, on the new clock"
        assert (await waited("client")).allowed, "in turn, on the new clock"
        ((_, _, expires_at),) = stored_rows(backend)
        assert expires_at > before.ms() + 7_200_000, "the row's expiry is on the new clock"


def stored_rows(backend: SQLiteBackend) -> list[tuple[str, str, Any]]:
    """The backend's rows, read on its own connection (a `:memory:` database has no file)."""
    handle = backend._db._handle()
    assert handle.cursor is not None
    rows: list[tuple[str, str, Any]] = handle.cursor.execute(
        "SELECT key, value, expires_at FROM traffik_entries ORDER BY key"
    ).fetchall()
    return rows


# -- a decision says when it was made, for what a refund gives back -------------------------


def _one_unit(connection: Any, context: Any) -> int:
    return 1  # (a cost worked out per connection)


@pytest.mark.parametrize("where", ["file", ":memory:"])
@pytest.mark.parametrize("path", ["in place", "strategy"])
@pytest.mark.parametrize("strategy_class", BUILTIN_STRATEGIES, ids=lambda c: c.__name__)
async def test_a_charge_whose_window_closed_is_not_given_back(
    tmp_path: Path, strategy_class: type, path: str, where: str
) -> None:
    # `refund` gives back what a charge still holds, from when it was made (`Decision.at`):
    # nothing once its window closed. Without the remembered refusals (which note when a
    # hit asked), that time is the store's to tell, on every path a decision takes.
    from starlette.requests import Request

    clock = ManualClock()
    backend = SQLiteBackend(
        tmp_path / "t.db" if where == "file" else ":memory:", clock=clock, cache_refusals=False
    )
    extra: dict[str, Any] = {} if path == "in place" else {"cost": _one_unit}
    throttle = HTTPThrottle(
        "t",
        rate="3/min",
        backend=backend,
        strategy=strategy_class(),
        charge_when=lambda o: True,
        **extra,
    )
    if path == "strategy":  # (the strategy's own `decide`, as a strategy of one's own is)
        throttle._in_place = 0

    def request() -> Request:
        scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "state": {}}
        return Request({**scope, "client": ("1.2.3.4", 1), "query_string": b""})

    async with backend:
        first = request()
        await throttle.hit(first)
        clock.advance(3600)  # every window and bucket of the first hit is past
        await throttle.hit(request())
        before = await throttle.stat(request())
        await throttle.refund(first)
        after = await throttle.stat(request())
    assert before is not None and after is not None
    assert after.hits_remaining == before.hits_remaining, "the new window keeps its charge"


@pytest.mark.parametrize("strategy_class", [FixedWindow, TokenBucket], ids=lambda c: c.__name__)
async def test_hits_decided_together_say_when_they_were_made(
    tmp_path: Path, strategy_class: type
) -> None:
    # Hits that queue on a key behind one waiting for the file are decided in one round
    # (`decide_in_turn`): each charged decision says when, as a decision made alone does.
    clock = ManualClock()
    backend = SQLiteBackend(tmp_path / "t.db", clock=clock)
    strategy, rate = strategy_class(), Rate.parse("3/min")
    kind = kind_of(backend, strategy, rate)
    async with backend:
        waited = backend.waited_decider(strategy, rate, 1, kind)
        assert waited is not None
        await waited("client")
        held = hold(backend.path)
        calls = [asyncio.ensure_future(waited("client")) for _ in range(4)]
        await asyncio.sleep(0.01)  # the first waits for the file, the others behind it
        release(held)
        decisions = await asyncio.gather(*calls)
    assert [d.allowed for d in decisions] == [True, True, False, False]
    charged = decisions if strategy_class is FixedWindow else decisions[:2]  # (a count is)
    assert [d.at for d in charged] == [clock.ms()] * len(charged)
