"""PriorityQueue's state in Redis (`lua/priority_queue.lua`): a log read and written in ranges
decides, gives back and keeps its entries exactly as `PriorityQueue.transition` and `refund` do,
over long logs, evictions, refusals and refunds; states the scripts wrote before ('i') convert;
a clock going back is followed exactly."""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Optional, cast

import pytest
from redis.asyncio import Redis

from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.redis import RedisBackend
from traffik.backends.redis.scripts import decode_state
from traffik.clock import ManualClock
from traffik.decision import Decision
from traffik.rates import Rate
from traffik.strategies import Priority, PriorityQueue
from traffik.strategies.state import decode_state as decode_text
from traffik.strategies.steps import Combined, Item

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

_BLOCK = 189
"""The bytes after the records: the front, the counts and the newest entry (`lua/priority_queue.lua`)."""


def _listed(log: list[int]) -> bytes:
    """A log as the scripts before 'q' stored it: 'i' and little-endian doubles."""
    return b"i" + struct.pack(f"<{len(log)}d", *log)


async def _stored(raw: Redis, key: str) -> Optional[bytes]:
    """The value at `key`, as the programs left it (the client decodes no responses)."""
    return cast(Optional[bytes], await raw.get(key))


class _Walk:
    """One key's log driven through the backend and through Python side by side."""

    def __init__(
        self, backend: RedisBackend, raw: Redis, clock: ManualClock, queue: PriorityQueue, key: str
    ) -> None:
        self.backend, self.raw, self.clock = backend, raw, clock
        self.levels = [queue.at(priority) for priority in Priority]
        self.key = backend.get_key(key) + queue.suffix
        self.state: list[int] | None = None
        self.formats: list[bytes] = []

    async def decide(
        self, strategy: PriorityQueue, rate: Rate, cost: int, commit: bool = True
    ) -> bool:
        """Whether the hit was admitted and stored."""
        expected, new_state, _ = strategy.transition(self.state, self.clock.ms(), rate, cost)
        got = await self.backend.evaluate(self.key, strategy, rate, cost, commit=commit)
        assert got == expected, (self.clock.ms(), strategy.priority, cost, self.state)
        written = commit and new_state is not None
        if written:
            self.state = new_state
        await self.check()
        return written

    async def refund(self, strategy: PriorityQueue, rate: Rate, cost: int) -> None:
        await self.backend.refund_all([Item(strategy, self.key, rate, cost)])
        if self.state is not None:  # a missing key is a full budget already
            self.state, _ = strategy.refund(self.state, self.clock.ms(), rate, cost)
        await self.check()

    async def check(self) -> None:
        # Keys expire on the server's clock, not the test clock: keep the key, as Python does.
        # (A log lives its period from its last write, so the periods here are 5 s and more:
        # a key that expired before this read would part Redis from Python.)
        stored = await _stored(self.raw, self.key)
        await self.raw.persist(self.key)
        assert decode_state(stored) == self.state, (self.clock.ms(), stored)
        if stored is not None:
            self.formats.append(stored[:1])


async def _random_walk(walk: _Walk, rng: random.Random, rate: Rate, steps: int) -> None:
    """Hits of every priority (most of them one of two), costs from 0 to past the limit,
    refunds, peeks and pauses, with the clock standing still often (entries that add up)."""
    interval = max(rate.expire // rate.limit, 1)
    for step in range(steps):
        clock_step = rng.choice([0, 0, 0, 1, 1, 2, interval, 3 * interval, rate.expire // 7])
        if step % 97 == 96:
            clock_step = rng.choice([rate.expire // 2, rate.expire, 3 * rate.expire])
        walk.clock.advance(ms=clock_step)
        strategy = rng.choice(walk.levels[:2] * 3 + walk.levels)
        cost = rng.choice([1, 1, 1, 1, 2, 3, 0, rng.randint(1, rate.limit), rate.limit + 1])
        kind = rng.random()
        if kind < 0.12:  # a refund may reach back past several entries
            await walk.refund(strategy, rate, rng.choice([min(cost, rate.limit), 2 * rate.limit]))
        elif kind < 0.18:
            await walk.decide(strategy, rate, cost, commit=False)
        else:
            await walk.decide(strategy, rate, cost)


@pytest.mark.parametrize(
    ("max_queue_size", "rate", "steps"),
    [
        (3, Rate.parse("5/min"), 400),
        (6, Rate.parse("10/3min"), 400),
        (10, Rate.parse("40/min"), 500),
        (25, Rate.parse("100/10s"), 600),
        (1000, Rate.parse("30/min"), 600),
        (1000, Rate.parse("7/90s"), 400),
    ],
    ids=lambda value: str(value),
)
async def test_random_timelines_decide_and_store_as_python(
    clocked: tuple[RedisBackend, ManualClock],
    raw: Redis,
    max_queue_size: int,
    rate: Rate,
    steps: int,
) -> None:
    backend, clock = clocked
    queue = PriorityQueue(max_queue_size=max_queue_size)
    walk = _Walk(backend, raw, clock, queue, f"walk:{max_queue_size}:{rate}")
    await _random_walk(walk, random.Random(f"{max_queue_size} {rate}"), rate, steps)
    assert walk.formats.count(b"q") > 0.9 * len(walk.formats)  # the ranges, not the list


async def test_long_logs_evict_refuse_and_give_back_as_python(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    """Logs of hundreds of entries: the front used up and taken again, evictions at the oldest,
    further in and of the new entry itself, records marked left, the space before the head
    reclaimed; every step as Python decides it."""
    backend, clock = clocked
    rng = random.Random("long logs")
    rate = Rate.parse("100000/min")
    queue = PriorityQueue(max_queue_size=300)
    walk = _Walk(backend, raw, clock, queue, "long")
    low, normal, high, critical = walk.levels
    for step in range(2500):
        clock.advance(ms=rng.choice([0, 1, 1, 1, 5, 40]))
        strategy = rng.choice([normal] * 6 + [low, high, critical])
        if step % 13 == 5:
            await walk.refund(strategy, rate, rng.choice([1, 1, 2, 5]))
        else:
            await walk.decide(strategy, rate, rng.choice([1, 1, 1, 2, 7]))
        if step % 500 == 499:  # time enough for the oldest to leave the window, a few at a time
            clock.advance(ms=rng.randint(1, 20_000))
    stored = await _stored(raw, walk.key)
    assert stored is not None and stored[:1] == b"q"
    entries = len(walk.state or []) // 3
    assert len(stored) <= 1 + 2 * 17 * entries + 2048 + 17 + _BLOCK  # reclaimed as it goes


async def test_refusals_wait_for_the_entries_they_count(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    """Full windows of mixed priorities, refused hits of every priority and cost: the waits and
    resets come from the oldest and newest entries each priority counts, past the front."""
    backend, clock = clocked
    rng = random.Random("refusals")
    rate = Rate.parse("60/min")
    walk = _Walk(backend, raw, clock, PriorityQueue(max_queue_size=500), "refusals")
    for _ in range(1200):
        clock.advance(ms=rng.choice([0, 10, 250, 900]))
        strategy = rng.choice(walk.levels)
        await walk.decide(strategy, rate, rng.choice([1, 1, 2, 5, 30, 60]))


async def test_states_written_before_q_are_read_and_converted(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    """A deploy mid-window: logs the previous scripts stored as 'i' decide, give back and go on
    as in Python, stored as 'q' from their first write."""
    backend, clock = clocked
    rng = random.Random("converted")
    rate = Rate.parse("50/10s")
    queue = PriorityQueue(max_queue_size=40)
    for round_ in range(12):
        walk = _Walk(backend, raw, clock, queue, f"converted:{round_}")
        state: list[int] | None = None
        for _ in range(rng.randint(1, 60)):  # a log as Python keeps it, the previous format's
            clock.advance(ms=rng.choice([0, 1, 100]))
            strategy = rng.choice(walk.levels)
            _, new_state, _ = strategy.transition(state, clock.ms(), rate, rng.randint(1, 3))
            state = new_state if new_state is not None else state
        assert state is not None
        await raw.set(walk.key, _listed(state))
        walk.state = state
        clock.advance(ms=rng.choice([0, 1, 3000]))
        if round_ % 3 == 0:
            await walk.refund(rng.choice(walk.levels), rate, rng.randint(1, 4))
            written = True
        else:
            written = await walk.decide(rng.choice(walk.levels), rate, rng.randint(1, 4))
        assert (await _stored(raw, walk.key) or b"")[:1] == (b"q" if written else b"i")
        await _random_walk(walk, rng, rate, 40)


async def test_a_clock_going_back_is_followed_exactly(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    """Entries newer than now (another host's clock, a clock set back): a hit is decided at
    the newest entry's time (a state's time never goes back), so the times stay in order and
    the log stays 'q', exactly as Python keeps it."""
    backend, clock = clocked
    rng = random.Random("backwards")
    rate = Rate.parse("20/5s")
    walk = _Walk(backend, raw, clock, PriorityQueue(max_queue_size=12), "backwards")
    for _ in range(30):
        clock.advance(ms=rng.choice([0, 10, 100]))
        await walk.decide(rng.choice(walk.levels), rate, rng.randint(1, 2))
    assert walk.formats[-1] == b"q"
    for _ in range(60):
        step = rng.choice([-700, -50, -1, 0, 1, 30, 200])
        clock.set(clock() + step / 1000)
        if rng.random() < 0.2:
            await walk.refund(rng.choice(walk.levels), rate, rng.randint(1, 3))
        else:
            await walk.decide(rng.choice(walk.levels), rate, rng.randint(1, 3))
    assert b"i" not in walk.formats  # the times never go out of order
    clock.advance(ms=2 * rate.expire)
    for _ in range(20):
        clock.advance(ms=rng.choice([0, 5, 300]))
        await walk.decide(rng.choice(walk.levels), rate, 1)
    assert walk.formats[-1] == b"q"


async def test_keys_meeting_in_one_call_decide_as_in_memory(redis_url: str, raw: Redis) -> None:
    """Several items on one log in one call (priorities of one client, a throttle twice): each
    decides on the log as the call found it and the last one's log stays, as in memory."""
    clock = ManualClock(1_700_000_000.0)
    backend = RedisBackend(redis_url, namespace="priority-meet", clock=clock)
    memory = InMemoryBackend(namespace="priority-meet", clock=clock)
    rng = random.Random("meeting")
    queue = PriorityQueue(max_queue_size=5)
    levels = [queue.at(priority) for priority in Priority]
    rate = Rate.parse("8/2min")  # (a log lives its period on the server's clock)
    key = backend.get_key("meet") + queue.suffix
    try:
        for step in range(300):
            clock.advance(ms=rng.choice([0, 1, 3000, 24_000]))
            hit = [
                Item(rng.choice(levels), key, rate, rng.randint(1, 3))
                for _ in range(rng.randint(2, 3))
            ]
            if step % 7 == 6:  # one item: in memory, refunds on one key add up in turn
                await backend.refund_all(hit[:1])
                await memory.refund_all(hit[:1])
            else:
                got = await backend.evaluate_all(hit)
                expected = await memory.evaluate_all(hit)
                assert _parts(got) == _parts(expected), step
            stored = await _stored(raw, key)
            await raw.persist(key)
            assert decode_state(stored) == decode_text(await memory.get(key)), step
    finally:
        await backend.reset()
        await backend.close()


def _parts(decision: Decision) -> tuple[Decision, ...]:
    return decision.parts if isinstance(decision, Combined) else (decision,)


async def test_a_peek_writes_nothing(clocked: tuple[RedisBackend, ManualClock], raw: Redis) -> None:
    backend, clock = clocked
    rate = Rate.parse("10/min")  # (a log lives its period on the server's clock)
    walk = _Walk(backend, raw, clock, PriorityQueue(max_queue_size=4), "peek")
    for step in range(40):
        clock.advance(ms=[0, 1800, 12_000, 90_000][step % 4])
        before = await _stored(raw, walk.key)
        await walk.decide(walk.levels[step % 4], rate, 1 + step % 3, commit=False)
        assert await _stored(raw, walk.key) == before
        await walk.decide(walk.levels[(step + 1) % 4], rate, 1 + step % 5)


async def test_what_is_not_a_log_is_a_fresh_key(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    """Values that are no state of the program's (not 'q' nor 'i', or 'q' with a block out of
    place) decide as a fresh key, and are written anew."""
    backend, clock = clocked
    rate = Rate.parse("3/min")
    queue = PriorityQueue()
    key = backend.get_key("garbage") + queue.suffix
    fresh, _, _ = queue.transition(None, clock.ms(), rate, 1)
    block = struct.pack("<68s15dB", b"", 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, ord("q"))
    for garbage in (b"q" * 300, b"q" + block, b"not a log", b"q", b"#" + b"\0" * 200):
        await raw.set(key, garbage)
        assert decode_state(garbage) is None
        assert await backend.evaluate(key, queue, rate, 1) == fresh
        assert decode_state(await _stored(raw, key)) == [clock.ms(), int(queue.priority), 1]


async def test_a_smaller_max_queue_size_evicts_down_to_it(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    """A log kept under a larger max_queue_size, then decided under a smaller one (a changed
    setting): the extra entries leave at the next admission, as in Python."""
    backend, clock = clocked
    rng = random.Random("smaller")
    rate = Rate.parse("1000/min")
    walk = _Walk(backend, raw, clock, PriorityQueue(max_queue_size=60), "smaller")
    for _ in range(80):
        clock.advance(ms=rng.choice([0, 1, 3]))
        await walk.decide(rng.choice(walk.levels), rate, 1)
    small = PriorityQueue(max_queue_size=7)
    walk.levels = [small.at(priority) for priority in Priority]
    clock.advance(ms=1)
    for _ in range(40):
        clock.advance(ms=rng.choice([0, 1, 3]))
        await walk.decide(rng.choice(walk.levels), rate, rng.randint(1, 2))
    assert len(walk.state or []) <= 3 * 7
    assert walk.formats[-1] == b"q"


async def test_entries_given_back_and_added_to_in_one_millisecond(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    """Within one millisecond: entries of two priorities, the newer given all back (marked
    left, the older the newest again), then more cost for the older: added to it in place."""
    backend, clock = clocked
    rate = Rate.parse("50/min")  # (a log lives its period on the server's clock)
    walk = _Walk(backend, raw, clock, PriorityQueue(max_queue_size=20), "one ms")
    low, normal, high, _ = walk.levels
    for _ in range(6):  # entries after the front
        clock.advance(ms=180)
        await walk.decide(low, rate, 1)
    clock.advance(ms=180)
    await walk.decide(normal, rate, 2)
    await walk.decide(high, rate, 3)
    await walk.refund(high, rate, 3)
    await walk.decide(normal, rate, 4)  # the newest is normal's again: its cost grows
    await walk.refund(normal, rate, 5)
    await walk.decide(normal, rate, 1)
    await walk.refund(low, rate, 20)  # every low entry, and more
    assert walk.formats[-1] == b"q"


async def test_on_the_servers_clock_the_key_lives_a_period_past_its_last_write(
    redis_url: str, raw: Redis
) -> None:
    """Hits one after another on the server's clock (many within one millisecond, added to
    the newest entry with no PEXPIRE): after each, the key lives `period` from that write's
    millisecond, and never longer."""
    backend = RedisBackend(redis_url, namespace="priority-ttl")
    queue, rate = PriorityQueue(), Rate.parse("100000/h")
    key = backend.get_key("ttl") + queue.suffix
    try:
        for _ in range(200):
            before = await raw.time()
            hits = [backend.evaluate(key, queue, rate, 1) for _ in range(4)]
            assert all(decision.allowed for decision in await asyncio.gather(*hits))
            pttl = await raw.pttl(key)
            after = await raw.time()
            elapsed = (after[0] - before[0]) * 1000 + (after[1] - before[1]) // 1000 + 1
            assert rate.expire - elapsed <= pttl + 1 <= rate.expire, (pttl, elapsed)
        state = decode_state(await _stored(raw, key))
        assert state is not None and len(state) < 3 * 800  # many added to the newest entry
    finally:
        await backend.reset()
        await backend.close()
