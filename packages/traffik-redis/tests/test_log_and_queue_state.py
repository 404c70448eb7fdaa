"""SlidingWindowLog's log and LeakyBucketWithQueue's queue in Redis (`lua/sliding_window_log.lua`,
`lua/leaky_bucket_with_queue.lua`): read with one struct call and checked as they are counted,
written from the stored bytes and changed in place (SETRANGE) when only their newest entry
changes. Each step decides, gives back and stores exactly as `transition` and `refund` do: over
random timelines, long logs, states the programs never write (out of order, odd lengths,
negative amounts, numbers at the limits of exactness), several items on one key, and on the
server's clock, where the key may keep its time to live."""

from __future__ import annotations

import asyncio
import random
import struct
import time
from typing import Optional, Union, cast

import pytest
from redis.asyncio import Redis

from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.redis import RedisBackend
from traffik.backends.redis.scripts import decode_state
from traffik.clock import ManualClock
from traffik.decision import Decision
from traffik.rates import Rate
from traffik.strategies import FixedWindow, LeakyBucketWithQueue, SlidingWindowLog
from traffik.strategies.state import decode_state as decode_text
from traffik.strategies.steps import Combined, Item

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

Listed = Union[SlidingWindowLog, LeakyBucketWithQueue]
STRATEGIES: list[Listed] = [SlidingWindowLog(), LeakyBucketWithQueue()]
TOP = 2**53 - 1
"""The largest whole number a state holds exactly."""


def _packed(state: list[float]) -> bytes:
    """A list as the programs store it: 'i' and little-endian doubles."""
    return b"i" + struct.pack(f"<{len(state)}d", *state)


_CACHED_CLOCK_MS = 2
"""How far behind the moment it runs a command Redis may date it: it reads the time once for
several commands (its cached clock), so under load a key set with `PX` may be gone that much
early."""


def _lived(started: float) -> float:
    """Milliseconds since `started` (monotonic), plus the one a key lives past its expiry and
    the lag of the server's cached clock."""
    return (time.monotonic() - started) * 1000 + 1 + _CACHED_CLOCK_MS


async def _commands(raw: Redis) -> dict[str, int]:
    """Calls per command so far (`INFO commandstats`), the programs' own commands included."""
    stats = await raw.info("commandstats")
    return {name[len("cmdstat_") :]: int(found["calls"]) for name, found in stats.items()}


class _Walk:
    """One key driven through the backend and through Python side by side, on a test clock."""

    def __init__(
        self, backend: RedisBackend, raw: Redis, clock: ManualClock, strategy: Listed, key: str
    ) -> None:
        self.backend, self.raw, self.clock, self.strategy = backend, raw, clock, strategy
        self.key = backend.get_key(key) + strategy.suffix
        self.state: list[int] | None = None

    async def decide(self, rate: Rate, cost: int, commit: bool = True) -> None:
        expected, new_state, ttl = self.strategy.transition(self.state, self.clock.ms(), rate, cost)
        started = time.monotonic()
        got = await self.backend.evaluate(self.key, self.strategy, rate, cost, commit=commit)
        assert got == expected, (self.clock.ms(), cost, self.state)
        written = commit and new_state is not None
        if written:
            self.state = new_state
        await self.check(ttl if written else None, started)

    async def refund(self, rate: Rate, cost: int) -> None:
        started = time.monotonic()
        await self.backend.refund_all([Item(self.strategy, self.key, rate, cost)])
        ttl = None
        if self.state is not None:  # a missing key is a full budget already
            self.state, ttl = self.strategy.refund(self.state, self.clock.ms(), rate, cost)
        await self.check(ttl, started)

    async def check(self, ttl: Optional[int], started: float) -> None:
        # Keys expire on the server's clock, not the test clock: check the time to live just
        # written, then keep the key, as Python does.
        pipe = self.raw.pipeline(transaction=True)
        pttl, stored, _ = await pipe.pttl(self.key).get(self.key).persist(self.key).execute()
        if ttl is not None and stored is None:  # a short life, over on the server's clock
            assert _lived(started) >= ttl, ttl
            self.state = None
            self.clock.advance(ms=ttl)  # over on the test clock too
            return
        assert decode_state(cast(Optional[bytes], stored)) == self.state, self.clock.ms()
        if ttl is not None:
            gone_in = max(ttl, 2)  # the shortest life Redis gives a key
            assert gone_in - _lived(started) <= pttl + 1 <= gone_in, (pttl, ttl)


async def _random_walk(walk: _Walk, rng: random.Random, rate: Rate, steps: int) -> None:
    """Hits with the clock standing still often (added to the newest entry, or queued in one
    millisecond), costs from 0 to past the limit, refunds, peeks and pauses."""
    interval = max(rate.expire // rate.limit, 1)
    for step in range(steps):
        clock_step = rng.choice([0, 0, 0, 1, 1, 2, interval, 3 * interval, rate.expire // 7])
        if step % 97 == 96:
            clock_step = rng.choice([rate.expire // 2, rate.expire, 3 * rate.expire])
        walk.clock.advance(ms=clock_step)
        cost = rng.choice([1, 1, 1, 1, 2, 3, 0, rng.randint(1, rate.limit), rate.limit + 1])
        kind = rng.random()
        if kind < 0.1:  # may reach back past several entries
            await walk.refund(rate, rng.choice([min(cost, rate.limit), 2 * rate.limit]))
        elif kind < 0.16:
            await walk.decide(rate, cost, commit=False)
        else:
            await walk.decide(rate, cost)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
@pytest.mark.parametrize(
    ("rate", "steps"),
    [
        (Rate.parse("5/s"), 300),
        (Rate.parse("10/3s"), 300),
        (Rate.parse("40/min"), 400),
        (Rate.parse("10000/10ms"), 400),
        (Rate.parse("7/1500ms"), 300),
        (Rate.parse("300/min"), 500),
    ],
    ids=str,
)
async def test_random_timelines_decide_and_store_as_python(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis, strategy: Listed, rate: Rate, steps: int
) -> None:
    backend, clock = clocked
    walk = _Walk(backend, raw, clock, strategy, f"walk:{rate}")
    before = await _commands(raw)
    await _random_walk(walk, random.Random(f"{strategy!r} {rate}"), rate, steps)
    if isinstance(strategy, SlidingWindowLog):  # a queue, on the server's clock only
        assert (await _commands(raw)).get("setrange", 0) > before.get("setrange", 0)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
async def test_long_logs_decide_and_store_as_python(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis, strategy: Listed
) -> None:
    """Hundreds of entries, then past 4096 numbers (read and written by load_state and
    pack_state in parts): hits added in place, entries leaving a few at a time, refusals."""
    backend, clock = clocked
    rng = random.Random(f"long {strategy!r}")
    # A log keeps a minute of hits; a queue drains an entry of cost 1 per 6 ms.
    rate = Rate.parse("100000/min" if isinstance(strategy, SlidingWindowLog) else "10000/min")
    walk = _Walk(backend, raw, clock, strategy, "long")
    steps = [0, 1, 1, 1, 2, 5] if isinstance(strategy, SlidingWindowLog) else [0, 0, 0, 1, 2]
    for step in range(2600):
        clock.advance(ms=rng.choice(steps))
        if step % 211 == 210:
            await walk.refund(rate, rng.choice([1, 3, 40]))
        else:
            await walk.decide(rate, rng.choice([1, 1, 1, 2, 7]))
    assert walk.state is not None and len(walk.state) > 4096
    for _ in range(60):
        clock.advance(ms=rng.choice([0, 1, 3_000]))
        await walk.decide(rate, rng.choice([1, 2, 20_000, 99_000]))


def _irregular(strategy: Listed, rng: random.Random, rate: Rate, now: int) -> list[float]:
    """Lists the programs never write, or seldom: times out of order, ahead of now or at the
    limits of exactness, entries of 0, odd lengths, negative amounts, one amount of 2**52 (its
    sums stay exact), numbers past exactness, not whole, NaN and the infinities (no state)."""
    period = rate.expire
    times = [now - period, now - period + 1, now, now + rng.randint(1, period), -TOP, TOP]
    state: list[float] = []
    if isinstance(strategy, LeakyBucketWithQueue):
        state.append(rng.choice([now, now, now - 1, now + 3, now - period, -TOP, TOP]))
    for t in sorted(now - rng.randint(0, 2 * period) for _ in range(rng.randint(0, 5))):
        amount = rng.choice([0, 1, 1, rng.randint(1, rate.limit * period)])
        state += [t if rng.random() < 0.75 else rng.choice(times), amount]
    if len(state) > 1 and rng.random() < 0.3:
        state[-1 - 2 * rng.randrange(len(state) // 2)] = rng.choice([-1, -period, 2**52])
    if rng.random() < 0.15:
        state.append(rng.choice(times))  # an odd length
    if state and rng.random() < 0.2:
        spoiled = [2.0**53, -(2.0**53), 0.5, float("nan"), float("inf"), -float("inf")]
        state[rng.randrange(len(state))] = rng.choice(spoiled)
    return state


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
async def test_irregular_states_are_read_as_python_reads_them(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis, strategy: Listed
) -> None:
    """Every list decides, and takes refunds, as Python does on what `decode_state` reads of it;
    a value it reads as no state decides as a fresh key."""
    backend, clock = clocked
    rng = random.Random(f"irregular {strategy!r}")
    key = backend.get_key("irregular") + strategy.suffix
    for step in range(500):
        rate = rng.choice([Rate.parse("5/s"), Rate.parse("1000/min"), Rate.parse("10000/10ms")])
        clock.advance(ms=rng.randint(0, 50))
        now = clock.ms()
        value = _packed(_irregular(strategy, rng, rate, now))
        state = decode_state(value)
        cost = rng.choice([0, 1, 1, 2, rate.limit])
        await raw.set(key, value)
        expected, new_state, ttl = strategy.transition(state, now, rate, cost)
        started = time.monotonic()
        got = await backend.evaluate(key, strategy, rate, cost)
        assert got == expected, (step, value)
        stored = await raw.get(key)
        if new_state is None:
            assert stored == value, (step, value)
        else:  # None: a short life, over on the server's clock
            assert decode_state(stored) == new_state or (stored is None and _lived(started) >= ttl)
        await raw.set(key, value)
        started = time.monotonic()
        await backend.refund_all([Item(strategy, key, rate, cost)])
        stored = await raw.get(key)
        if state is None:  # nothing to give back to
            assert stored == value, (step, value)
        else:
            refunded, ttl = strategy.refund(state, now, rate, cost)
            assert decode_state(stored) == refunded or (stored is None and _lived(started) >= ttl)


async def test_keys_meeting_in_one_call_decide_as_in_memory(redis_url: str, raw: Redis) -> None:
    """Several items on one log or queue in one call (a throttle twice, two throttles of one
    client), with counters: each decides on the value as the call found it and the last one's
    state stays, as in memory, whether stored anew or changed in place."""
    clock = ManualClock(1_700_000_000.0)
    backend = RedisBackend(redis_url, namespace="lists-meet", clock=clock)
    memory = InMemoryBackend(namespace="lists-meet", clock=clock)
    rng = random.Random("meeting")
    rate = Rate.parse("12/2s")
    log, queue = SlidingWindowLog(), LeakyBucketWithQueue()
    keys = [backend.get_key(f"meet:{n}") + s.suffix for n in range(2) for s in (log, queue)]
    counter = backend.get_key("meet") + ":fw"
    try:
        for step in range(400):
            clock.advance(ms=rng.choice([0, 0, 1, 50, 400]))
            started = time.monotonic()
            hit = []
            for _ in range(rng.randint(2, 4)):
                key = rng.choice(keys)
                strategy = log if key.endswith(log.suffix) else queue
                hit.append(Item(strategy, key, rate, rng.randint(0, 3)))
            if rng.random() < 0.3:
                hit.append(Item(FixedWindow(), counter, Rate.parse("1000/day"), 1))
            if step % 7 == 6:  # one item: in memory, refunds on one key add up in turn
                await backend.refund_all(hit[:1])
                await memory.refund_all(hit[:1])
            else:
                commit = step % 9 != 4
                got = await backend.evaluate_all(hit, commit=commit)
                expected = await memory.evaluate_all(hit, commit=commit)
                assert got.allowed is expected.allowed, step
                for item, part, reference in zip(hit, _parts(got), _parts(expected)):
                    if isinstance(item.strategy, FixedWindow):  # waits on each store's clock
                        assert (part.allowed, part.remaining) == (
                            reference.allowed,
                            reference.remaining,
                        ), step
                    else:
                        assert part == reference, (step, item)
            # Keep every state until the test clock ends it, as in memory; one whose short
            # life is over on either clock (a queue drained) goes from both.
            for key in keys:
                # read and kept in one step: a key read, then gone before PERSIST, would part
                # the stores at the next step
                pipe = raw.pipeline(transaction=True)
                stored, _ = await pipe.get(key).persist(key).execute()
                expected_state = await memory.get(key)
                if stored is None and expected_state is not None:
                    left = await memory.ttl(key)
                    assert left is not None and left <= _lived(started), (step, key, left)
                    await memory.delete(key)
                elif expected_state is None:
                    await raw.delete(key)
                else:
                    assert decode_state(stored) == decode_text(expected_state), (step, key)
    finally:
        await backend.reset()
        await backend.close()


def _parts(decision: Decision) -> tuple[Decision, ...]:
    return decision.parts if isinstance(decision, Combined) else (decision,)


def _ms(reading: tuple[int, int]) -> int:
    seconds, microseconds = reading
    return seconds * 1000 + microseconds // 1000


@pytest.mark.parametrize(
    ("strategy", "rate"),
    [
        (SlidingWindowLog(), Rate.parse("100000/2s")),
        (SlidingWindowLog(), Rate.parse("30/5ms")),
        (LeakyBucketWithQueue(), Rate.parse("1000/10ms")),
        (LeakyBucketWithQueue(), Rate.parse("10/10ms")),  # each hit a millisecond more to live
    ],
    ids=str,
)
async def test_on_the_servers_clock_decisions_and_lives_are_pythons(
    redis_url: str, raw: Redis, strategy: Listed, rate: Rate
) -> None:
    """Hits one after another on the server's clock, often several in one millisecond (where
    the key may keep its time to live): each admitted hit decides and stores as Python at the
    millisecond its state shows (the newest entry's time, the queue's head), the key living
    Python's time to live from that millisecond; each refused one decides as Python at a
    millisecond it ran in. A key is gone once its state is all out of the window (drained),
    which Python reads as it reads that state."""
    backend = RedisBackend(redis_url, namespace=f"lists-server {strategy!r} {rate}")
    log = isinstance(strategy, SlidingWindowLog)
    key = backend.get_key("server") + strategy.suffix
    rng = random.Random(f"server {strategy!r} {rate}")
    state: list[int] | None = None
    refused = 0
    try:
        for step in range(400):
            cost = rng.choice([1, 1, 2])
            before = _ms(await raw.time())
            got = await backend.evaluate(key, strategy, rate, cost)
            pipe = raw.pipeline(transaction=True)
            stored, pttl, after = await pipe.get(key).pttl(key).time().execute()
            previous, state = state, decode_state(stored)
            if not got.allowed:
                refused += 1
                assert state is None or state == previous, step
                decisions = [
                    strategy.transition(previous, ms, rate, cost)[0]
                    for ms in range(before, _ms(after) + 1)
                ]
                assert got in decisions, (step, previous)
                continue
            if state is None:  # a life of a few milliseconds, over already
                assert stored is None and rate.expire < 1_000, step
                continue
            now = state[-2] if log else state[0]
            assert before <= now <= _ms(after), step
            expected, python_state, ttl = strategy.transition(previous, now, rate, cost)
            assert got == expected and state == python_state, (step, now, previous)
            gone_in = max(ttl, 2)
            assert gone_in - (_ms(after) - now) <= pttl + 1 <= gone_in, (step, pttl, ttl)
        assert refused < 400
        if rate.limit < 1_000:
            return
        # Bursts: hits sent together land in one millisecond, changing the value in place.
        calls = await _commands(raw)
        for _ in range(100):
            await asyncio.gather(*[backend.evaluate(key, strategy, rate, 1) for _ in range(4)])
        assert (await _commands(raw)).get("setrange", 0) > calls.get("setrange", 0)
    finally:
        await backend.reset()
        await backend.close()
