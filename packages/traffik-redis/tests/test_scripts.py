"""The Lua programs reproduce the Python exactly: each `transition` and `refund` (decisions, state
and TTL), and `evaluate_all`/`refund_all` over several items as the in-memory backend runs them."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Sequence
from importlib import resources

import pytest
from redis.asyncio import Redis

from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.redis import RedisBackend
from traffik.backends.redis.native import native
from traffik.backends.redis.scripts import decode_state
from traffik.clock import ManualClock
from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import (
    ADVANCED_STRATEGIES,
    BUILTIN_STRATEGIES,
    GCRA,
    AdaptiveThrottle,
    CostBasedTokenBucket,
    FixedWindow,
    LeakyBucket,
    LeakyBucketWithQueue,
    Priority,
    PriorityQueue,
    QuotaWithRollover,
    SlidingWindowCounter,
    SlidingWindowLog,
    StateStrategy,
    Strategy,
    TieredRate,
    TimeOfDay,
    TokenBucket,
    TokenBucketWithDebt,
)
from traffik.strategies.steps import Combined, Item, items

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

STRATEGIES: list[StateStrategy] = [
    SlidingWindowCounter(),
    SlidingWindowLog(),
    TokenBucket(),
    TokenBucket(burst_size=7),
    TokenBucketWithDebt(max_debt=3),
    TokenBucketWithDebt(burst_size=2, max_debt=1),
    TokenBucketWithDebt(burst_size=1, max_debt=6),
    LeakyBucket(),
    LeakyBucketWithQueue(),
    GCRA(),
    GCRA(burst_tolerance_ms=0),
    GCRA(burst_tolerance_ms=0.3),
    GCRA(burst_tolerance_ms=1234.5),
    GCRA(burst_tolerance_ms=90_000),
    TieredRate(),
    AdaptiveThrottle(),
    AdaptiveThrottle(load_threshold=0.5, reduction_factor=0.25, recovery_rate=0.3),
    PriorityQueue(),
    PriorityQueue(max_queue_size=3).at(Priority.HIGH),
    PriorityQueue().at(Priority.LOW),
    QuotaWithRollover(),
    QuotaWithRollover(rollover_percentage=1.0, max_rollover=2),
    CostBasedTokenBucket(),
    CostBasedTokenBucket(burst_size=9, cost_window=3, min_refill_rate=0.125),
    TimeOfDay(),
    TimeOfDay([(0, 7, 0.5), (7, 13, 3), (13, 20, 1), (22, 24, 2)], 5.5),
    TimeOfDay([(0, 1, 0.01), (1, 23, 0.3), (23, 24, 1)], -9.75),
]
"""Every built-in state strategy (each has a Lua port), advanced ones at several settings (a
`PriorityQueue` bound to a priority decides at it; the walks mix priorities on one log; a
`TimeOfDay` with hours that allow nothing, and one whose waits cross hours and windows)."""
SMALL_RATES = [
    *(Rate.parse(r) for r in ("5/s", "3/min", "7/1500ms", "100/hour", "1/s", "10/3s")),
    Rate(limit=7, milliseconds=997),
]
DAY_RATES = [Rate.parse(r) for r in ("4/day", "6/day", "9/day")]
RATES = [*SMALL_RATES, Rate(limit=1_000_003, milliseconds=2_147_483_647)]
"""The last one takes the numbers to about 2**52, where a double quotient may round wrong."""
CORRUPT = [
    *(text.encode() for text in ("not,numbers", "1,2", "1,,2", "inf", "nan,1", "", "1e400")),
    b"i1234567",
    b"i" + b"\xff" * 8,  # NaN
    b"i" + struct.pack("<2d", 1.5, 2),  # not whole
    b"i" + struct.pack("<2d", 2**53, 2),  # not exact
    b"i" + struct.pack("<2d", float("inf"), 2),
    b"#" + struct.pack("<2d", 1.0, 1_700_000_000_000.0),  # the float-era format
]
"""Stored values that are no state: the scripts start a fresh key on each."""


def _packed(state: Sequence[float], mark: bytes = b"i") -> bytes:
    """A state as the scripts store it (`pack_state` in `lua/_lists.lua`): `i` and its numbers,
    which CostBasedTokenBucket's scripts wrote before its runs (`h`)."""
    return mark + struct.pack(f"<{len(state)}d", *state)


def _lived(started: float) -> float:
    """Milliseconds since `started` (monotonic), plus the one a key lives past its expiry."""
    return (time.monotonic() - started) * 1000 + 1


def _foreign_state(rng: random.Random, rate: Rate, now: int) -> list[int]:
    """Whole numbers of any count: amounts, times near `now`, window ids, counts."""
    period = rate.expire
    kinds = [
        lambda: rng.randint(-3 * period, 3 * rate.limit * period),
        lambda: now + rng.randint(-2 * period, 2 * period),
        lambda: now // period + rng.randint(-2, 1),
        lambda: rng.randint(0, rate.limit),
    ]
    return [rng.choice(kinds)() for _ in range(rng.choice([0, 1, 2, 2, 3, 3, 4, 5, 7]))]


def _decidable(strategy: StateStrategy, rates: list[Rate]) -> list[Rate]:
    """The rates `strategy` decides exactly (a cost bucket's scaled tokens refuse the largest)."""
    fitting = []
    for rate in rates:
        try:
            strategy.check_scale(rate)
        except ConfigurationError:
            continue
        fitting.append(rate)
    return fitting


def test_every_scripted_strategy_is_covered() -> None:
    scripted = {cls for cls in (*BUILTIN_STRATEGIES, *ADVANCED_STRATEGIES)} - {FixedWindow}
    assert {type(strategy) for strategy in STRATEGIES} == scripted
    assert all(native(strategy) is not None for strategy in [*STRATEGIES, FixedWindow()])


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
async def test_script_matches_transition_and_refund(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis, strategy: StateStrategy
) -> None:
    backend, clock = clocked
    rng = random.Random(f"{strategy!r}")
    lowest = 0  # the fewest tokens a token bucket held: below 0 means in debt
    rates = _decidable(strategy, RATES)
    # One key for the whole walk: each rate takes over the state the one before left, and
    # every 25 steps a hit comes under another rate (`update_rate`, a rate callable).
    key = backend.get_key(f"{strategy!r}") + strategy.suffix
    state: list[int] | None = None
    for rate in rates:
        interval = rate.expire // rate.limit
        for step in range(150):
            clock.advance(ms=rng.choice([0, 0, 1, 7, 33, interval - 1, interval, 250]))
            if step % 40 == 39:
                clock.advance(ms=rng.choice([rate.expire // 2, rate.expire, 5 * rate.expire // 2]))
            at = rng.choice(rates) if step % 25 == 12 else rate
            capacity = strategy.capacity(at)
            cost = min(rng.choice([1, 1, 1, 2, 3, capacity, rng.randint(1, capacity)]), capacity)
            written, ttl_ms, started = False, 0, time.monotonic()
            if step % 7 == 3:
                await backend.refund_all([Item(strategy, key, at, cost)])
                if state is not None:  # a missing key is a full budget already
                    state, ttl_ms = strategy.refund(state, clock.ms(), at, cost)
                    written = True
            else:
                commit = step % 11 != 5
                expected, new_state, ttl_ms = strategy.transition(state, clock.ms(), at, cost)
                got = await backend.evaluate(key, strategy, at, cost, commit=commit)
                assert got == expected, (step, at, cost, state)
                assert all(type(n) is int for n in (got.wait_ms, got.remaining, got.reset_ms))
                if commit and new_state is not None:
                    state, written = new_state, True
            # Keys expire on the server's clock, not the test clock: check the TTL just
            # written, then remove it so the next step sees the state Python expects.
            pipe = raw.pipeline(transaction=True)
            pttl, stored, _ = await pipe.pttl(key).get(key).persist(key).execute()
            if written and stored is None:  # a short life, already over on the server's clock
                assert _lived(started) >= ttl_ms, (step, at, cost, ttl_ms)
                state = None
                clock.advance(ms=ttl_ms)  # over on the test clock too
            elif written:
                gone_in = max(ttl_ms, 2)  # the shortest life Redis gives a key
                assert gone_in - _lived(started) <= pttl + 1 <= gone_in, (pttl, ttl_ms)
            assert decode_state(stored) == state, (step, at, cost)
            if state is not None and isinstance(strategy, TokenBucket):
                lowest = min(lowest, state[0])
    if isinstance(strategy, TokenBucketWithDebt):
        assert lowest < 0, "the walk never took the bucket into debt"


async def test_priorities_meet_in_one_log_as_in_python(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    """Hits of every priority on one client's log (and refunds), the script against Python."""
    backend, clock = clocked
    rng = random.Random("priorities")
    queue = PriorityQueue(max_queue_size=6)
    levels = [queue.at(priority) for priority in Priority]
    # SMALL_RATES' periods times 60: a log lives its period on the server's clock, and one
    # gone before the read after its write would part Redis from Python.
    for rate in (Rate(limit=small.limit, milliseconds=60 * small.expire) for small in SMALL_RATES):
        key = backend.get_key(f"priorities:{rate}") + queue.suffix
        state: list[int] | None = None
        for step in range(120):
            clock.advance(
                ms=rng.choice([0, 0, 1, 3000, rate.expire // rate.limit, rate.expire // 3])
            )
            strategy = rng.choice(levels)
            cost = rng.randint(1, rate.limit)
            if step % 9 == 4:
                await backend.refund_all([Item(strategy, key, rate, cost)])
                if state is not None:
                    state, _ = strategy.refund(state, clock.ms(), rate, cost)
            else:
                expected, new_state, _ = strategy.transition(state, clock.ms(), rate, cost)
                assert await backend.evaluate(key, strategy, rate, cost) == expected, (step, state)
                state = new_state if new_state is not None else state
            stored = await raw.get(key)
            await raw.persist(key)
            assert decode_state(stored) == state, (step, rate)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
async def test_any_valid_state_is_read_as_python_reads_it(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis, strategy: StateStrategy
) -> None:
    """States the programs never write (any length, values out of their usual ranges) still
    decide, and take refunds, exactly as the Python transition and refund do."""
    backend, clock = clocked
    rng = random.Random(f"foreign {strategy!r}")
    key = backend.get_key(f"foreign {strategy!r}") + strategy.suffix
    for _ in range(300):
        rate = rng.choice(SMALL_RATES)
        now = clock.ms()
        state = _foreign_state(rng, rate, now)
        await raw.set(key, _packed(state))
        assert decode_state(await raw.get(key)) == state
        cost = rng.randint(1, strategy.capacity(rate))
        expected, new_state, life_ms = strategy.transition(state, now, rate, cost)
        started = time.monotonic()
        assert await backend.evaluate(key, strategy, rate, cost) == expected, (rate, cost, state)
        stored = await raw.get(key)  # None: a short life, already over on the server's clock
        assert decode_state(stored) == (state if new_state is None else new_state) or (
            stored is None and new_state is not None and _lived(started) >= life_ms
        )
        await raw.set(key, _packed(state))
        started = time.monotonic()
        await backend.refund_all([Item(strategy, key, rate, cost)])
        refunded, ttl_ms = strategy.refund(state, now, rate, cost)
        stored = await raw.get(key)  # None: a short life, already over on the server's clock
        assert decode_state(stored) == refunded or (stored is None and _lived(started) >= ttl_ms)
        clock.advance(ms=rng.randint(0, 2 * rate.expire))


WINDOW_RATES = [
    Rate.parse(r)
    for r in ("7/min", "14/min", "3/min", "6/min", "13/min", "2/min", "10/90s", "100/h", "9/h")
]
"""Rates of one period (a limit changes) and of others (a period changes). Of a minute and
more: a key written with a window's time to live expires on the server's clock, and one gone
before the read that follows would part the script from Python."""


@pytest.mark.parametrize(
    "strategy",
    [
        s
        for s in STRATEGIES
        if isinstance(
            s, (SlidingWindowCounter, AdaptiveThrottle, TieredRate, QuotaWithRollover, TimeOfDay)
        )
    ],
    ids=repr,
)
async def test_a_window_state_under_another_rate_is_read_as_python_reads_it(
    redis_url: str, raw: Redis, strategy: StateStrategy
) -> None:
    """A window strategy's state, written by its hits under one rate, decided and refunded
    under another (`update_rate`): a new limit keeps the counts (an adaptive limit its share
    of the limit), a new period starts a new window; on a clock near 0 too, where the window
    ids of two periods meet. The script against Python."""
    rng = random.Random(f"rates {strategy!r}")
    for start in (0.7, 1_700_000_000.0):
        clock = ManualClock(start)
        backend = RedisBackend(
            redis_url, namespace=f"window-rates-{start}", clock=clock, persistent=False
        )
        try:
            key = backend.get_key(f"rates {strategy!r}") + strategy.suffix
            for _ in range(150):
                first, second = rng.choice(WINDOW_RATES), rng.choice(WINDOW_RATES)
                state: list[int] | None = None
                for _ in range(rng.randint(1, first.limit + 2)):  # a cut, a window filled
                    cost = rng.randint(1, min(3, strategy.capacity(first)))
                    state = strategy.transition(state, clock.ms(), first, cost)[1] or state
                    clock.advance(ms=rng.choice([0, 0, 1, 2220, first.expire // 3]))
                if state is None:
                    continue
                clock.advance(ms=rng.choice([0, 1, second.expire // 2, second.expire]))
                now, cost = clock.ms(), rng.randint(1, strategy.capacity(second))
                await raw.set(key, _packed(state))
                expected, new_state, _ = strategy.transition(state, now, second, cost)
                got = await backend.evaluate(key, strategy, second, cost)
                assert got == expected, (first, second, cost, state)
                written = decode_state(await raw.get(key))
                assert written == (state if new_state is None else new_state), (first, second)
                await raw.set(key, _packed(state))
                await backend.refund_all([Item(strategy, key, second, cost)])
                refunded, _ = strategy.refund(state, now, second, cost)
                assert decode_state(await raw.get(key)) == refunded, (first, second, state)
        finally:
            await backend.reset()
            await backend.close()


def _parts(decision: Decision) -> tuple[Decision, ...]:
    return decision.parts if isinstance(decision, Combined) else (decision,)


def _throttles(rng: random.Random) -> list[tuple[Strategy, list[Rate]]]:
    """Two throttles per strategy, of one rate and of two or three (a key always keeps one
    strategy and one rate, as in use)."""
    throttles: list[tuple[Strategy, list[Rate]]] = []
    for strategy in [FixedWindow(), *STRATEGIES]:
        choices = DAY_RATES if isinstance(strategy, FixedWindow) else SMALL_RATES
        throttles.append((strategy, rng.sample(choices, 1)))
        throttles.append((strategy, rng.sample(choices, rng.randint(2, 3))))
    return throttles


def _several(
    rng: random.Random, throttles: list[tuple[Strategy, list[Rate]]], backend: RedisBackend
) -> list[Item]:
    """The items of one or two throttles for one of two clients, with a random cost: keys
    often meet, within a call too."""
    hit: list[Item] = []
    for _ in range(rng.randint(1, 2)):
        index = rng.randrange(len(throttles))
        strategy, rates = throttles[index]
        cost = rng.randint(1, min(3, *(strategy.capacity(rate) for rate in rates)))
        hit += items(strategy, f"t{index}:{rng.choice('ab')}", rates, cost, backend)
    return hit


async def test_several_items_decide_and_refund_as_in_memory(redis_url: str, raw: Redis) -> None:
    """Random walks of `evaluate_all` (charging and peeking) and `refund_all` over mixed items
    give the in-memory backend's decisions. FixedWindow's windows are days, so neither store
    expires a counter; its waits follow each store's own clock and are not compared."""
    clock = ManualClock(1_700_000_000.0)
    backend = RedisBackend(redis_url, namespace="scripts-items", clock=clock)
    memory = InMemoryBackend(namespace="scripts-items", clock=clock)  # the same keys
    rng = random.Random("several items")
    throttles = _throttles(rng)
    states: set[str] = set()
    try:
        for step in range(400):
            clock.advance(ms=rng.choice([0, 0, 1, 50, 200, 1000, 3000]))
            hit = _several(rng, throttles, backend)
            states.update(item.key for item in hit if not isinstance(item.strategy, FixedWindow))
            started = time.monotonic()
            if step % 6 == 5:
                await backend.refund_all(hit)
                await memory.refund_all(hit)
            else:
                commit = step % 6 != 4
                got = await backend.evaluate_all(hit, commit=commit)
                expected = await memory.evaluate_all(hit, commit=commit)
                assert got.allowed is expected.allowed, (step, hit)
                for item, part, reference in zip(hit, _parts(got), _parts(expected)):
                    if isinstance(item.strategy, FixedWindow):
                        assert (part.allowed, part.remaining) == (
                            reference.allowed,
                            reference.remaining,
                        ), (step, item)
                    else:
                        assert part == reference, (step, item)
            # Keep every state until the test clock ends it, as in memory; one whose short
            # life is already over on the server's clock is dropped from memory too.
            pipe = raw.pipeline(transaction=True)
            for key in sorted(states):
                pipe.exists(key).persist(key)
            replies = await pipe.execute()
            for key, exists in zip(sorted(states), replies[::2]):
                left = await memory.ttl(key)
                if not exists and left is not None:
                    assert left <= _lived(started), (step, key, left)
                    await memory.delete(key)
    finally:
        await backend.reset()
        await backend.close()


async def test_floordiv_and_its_rounding_up_round_like_python(raw: Redis) -> None:
    lua = resources.files("traffik.backends.redis").joinpath("lua")
    prelude = "".join(
        lua.joinpath(f"{part}.lua").read_text(encoding="utf-8")
        for part in ("_prelude", "_floordiv")
    )
    body = """
local out = {}
for i = 2, #ARGV, 2 do
  local a, b = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  out[#out + 1] = floordiv(a, b)
  out[#out + 1] = -floordiv(-a, b) -- rounded up, as the programs write it
end
return out
"""
    rng = random.Random("division")
    top = 2**53 - 1
    pairs = [(a, b) for a in (top, -top, 0, 1, -1) for b in (1, 2, 3, 7, 2**26 + 1, top)]
    while len(pairs) < 2_000:
        b = rng.choice([1, 2, 3, 7, 1000, rng.randint(1, 2**26), rng.randint(1, 2**52)])
        a = rng.randint(-top // b, top // b) * b + rng.choice([-1, 0, 1, rng.randint(-b, b)])
        if abs(a) <= top:
            pairs.append((a, b))
    call = struct.pack("<BdB5d", ord("p"), 0, 0, *[0] * 5)  # the prelude reads the call first
    replies = await raw.eval(
        prelude + body,
        0,
        call,
        *[str(n) for pair in pairs for n in pair],
    )
    assert replies == [n for a, b in pairs for n in (a // b, -(-a // b))]


async def test_rescaled_rounds_like_python(raw: Redis) -> None:
    """`lua/_rescaled.lua`: a state of another rate's amount rescaled exactly (held * unit /
    was_unit, rounded up, as `_another_rate.rescaled`), however large the periods: past 2**53
    its product is taken a bit at a time."""
    lua = resources.files("traffik.backends.redis").joinpath("lua")
    prelude = "".join(
        lua.joinpath(f"{part}.lua").read_text(encoding="utf-8")
        for part in ("_prelude", "_floordiv")
    )
    rescaled = lua.joinpath("_rescaled.lua").read_text(encoding="utf-8")
    body = f"""
local out = {{}}
for i = 2, #ARGV, 3 do
  local held, was_unit, unit, carried = tonumber(ARGV[i]), tonumber(ARGV[i + 1]),
    tonumber(ARGV[i + 2]), 0
{rescaled}
  out[#out + 1] = carried
end
return out
"""
    rng = random.Random("rescaled")
    cases = []
    while len(cases) < 2_000:
        # A unit is a period (or a period in thousandths): below 2**52; the whole units held
        # are at most the new capacity, whose units stay below 2**53.
        was_unit = rng.choice([1, 7, 60_000, 86_400_000, rng.randint(1, 2**52 - 1)])
        unit = rng.choice([1, 3, 1000, 3_600_000, 2_592_000_000_000, rng.randint(1, 2**52 - 1)])
        whole = rng.randint(0, min(1000, (2**53 - 1) // unit))
        rest = rng.choice([0, 1, was_unit - 1, rng.randint(0, was_unit - 1)])
        held = whole * was_unit + rest
        if held < 2**53 and -(-held * unit // was_unit) < 2**53:
            cases.append((held, was_unit, unit))
    call = struct.pack("<BdB5d", ord("p"), 0, 0, *[0] * 5)  # the prelude reads the call first
    replies = await raw.eval(prelude + body, 0, call, *[str(n) for case in cases for n in case])
    assert replies == [-(-held * unit // was_unit) for held, was_unit, unit in cases]


def test_anything_else_is_no_state() -> None:
    assert decode_state(b"i") == []
    assert all(decode_state(garbage) is None for garbage in CORRUPT)


def test_runs_are_read_as_the_history_they_hold() -> None:
    assert decode_state(_packed([7, 9, 2, 3, 5, 1], b"h")) == [7, 9, 2, 2, 2, 5]
    assert decode_state(_packed([7, 9], b"h")) == [7, 9]
    assert decode_state(_packed([7, 9, 2, 3, 5, -1000], b"h")) == [7, 9, 2, 2, 2, 5, -1000]
    assert decode_state(_packed([7, 9, 5, -1000], b"h")) == [7, 9, 5, -1000]  # and its rate
    for runs in ([7], [7, 9, 2], [7, 9, 2, 0], [7, 9, 2, -1, 5, 1], [7, 9, 2, 1.5]):
        assert decode_state(_packed(runs, b"h")) is None, runs


async def test_cost_histories_written_before_runs_are_read_as_they_were(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    """A deploy mid-window: a CostBasedTokenBucket state the previous scripts wrote (`i`, every
    cost of the history) decides, takes refunds and goes on as Python does, stored as runs
    from then on; runs that are not ours (a count below 1) are no state."""
    backend, clock = clocked
    rng = random.Random("cost histories")
    rate = Rate.parse("1000/day")  # a bucket that never fills again here: no short TTLs
    for strategy in (CostBasedTokenBucket(), CostBasedTokenBucket(cost_window=5)):
        key = backend.get_key(f"histories {strategy!r}") + strategy.suffix
        state: list[int] | None = None
        for _ in range(60):  # a history of mixed costs, as the previous scripts kept it
            clock.advance(ms=rng.choice([0, 1, 100]))
            _, new_state, _ = strategy.transition(state, clock.ms(), rate, rng.randint(1, 4))
            state = new_state if new_state is not None else state
        assert state is not None and len(state) > 3
        await raw.set(key, _packed(state))
        for step in range(40):
            clock.advance(ms=rng.choice([0, 1, 50, 400]))
            cost = rng.randint(1, 4)
            if step % 5 == 4:
                await backend.refund_all([Item(strategy, key, rate, cost)])
                state, _ = strategy.refund(state, clock.ms(), rate, cost)
            else:
                expected, new_state, _ = strategy.transition(state, clock.ms(), rate, cost)
                assert await backend.evaluate(key, strategy, rate, cost) == expected, step
                state = new_state if new_state is not None else state
            assert decode_state(await raw.get(key)) == state, step
        assert (await raw.get(key))[:1] == b"h"
        await raw.set(key, _packed([*state[:2], 1, 0], b"h"))
        await backend.refund_all([Item(strategy, key, rate, 1)])
        assert await raw.get(key) == _packed([*state[:2], 1, 0], b"h")  # nothing to give back to
        fresh, _, _ = strategy.transition(None, clock.ms(), rate, 1)
        assert await backend.evaluate(key, strategy, rate, 1) == fresh


async def test_corrupt_state_counts_as_a_fresh_key(redis_url: str, raw: Redis) -> None:
    backend = RedisBackend(redis_url, namespace="corrupt")
    rate = Rate.parse("2/min")
    try:
        for strategy in (TokenBucket(), SlidingWindowLog(), GCRA(), LeakyBucketWithQueue()):
            key = backend.get_key("k") + strategy.suffix
            for garbage in (*CORRUPT, b"i"):  # b"i": the empty state, fresh for every strategy
                await raw.set(key, garbage)
                decision = await backend.evaluate(key, strategy, rate, 1)
                assert decision.allowed
                assert decision.remaining == 1, (strategy, garbage)
                await raw.delete(key)
    finally:
        await backend.reset()
        await backend.close()


async def test_get_stat_writes_nothing(redis_url: str, raw: Redis) -> None:
    backend = RedisBackend(redis_url, namespace="readonly")
    rate = Rate.parse("3/min")
    try:
        for strategy in STRATEGIES:
            await strategy.get_stat("quiet", rate, backend)
        assert await raw.keys("readonly:*") == []
    finally:
        await backend.close()
