"""The in-place steps (`traffik.backends.inmemory_steps`) decide and store exactly as the strategies do."""

from __future__ import annotations

import random
from typing import Any

import pytest

from traffik import InMemoryBackend, ManualClock, Rate
from traffik.backends.inmemory_steps import _STEPS, in_place_step
from traffik.exceptions import ConfigurationError
from traffik.strategies import (
    ADVANCED_STRATEGIES,
    BUILTIN_STRATEGIES,
    GCRA,
    LeakyBucket,
    SlidingWindowCounter,
    Strategy,
    TokenBucket,
    TokenBucketWithDebt,
)
from traffik.strategies.base import AHEAD_MS
from traffik.strategies.steps import IN_PLACE_STATE, Item, in_place_kind

pytestmark = pytest.mark.anyio

STRATEGIES = [
    *(cls() for cls in BUILTIN_STRATEGIES),
    *(cls() for cls in ADVANCED_STRATEGIES),
    TokenBucket(burst_size=3),
    TokenBucketWithDebt(burst_size=2, max_debt=3),
    GCRA(burst_tolerance_ms=0),
    GCRA(burst_tolerance_ms=700),
]
RATES = ["1/s", "4/3s", "7/250ms", "30/min", "10000000/d"]
IN_PLACE = [strategy for strategy in STRATEGIES if in_place_kind(strategy)]
"""The strategies a backend may decide in place; the others decide through their own `decide`."""


def _scaled(strategy: Strategy, rate_text: str) -> bool:
    """Whether a throttle accepts `rate_text` with `strategy` (its scaled numbers stay exact)."""
    try:
        getattr(strategy, "check_scale", lambda rate: None)(Rate.parse(rate_text))
    except ConfigurationError:
        return False
    return True


CASES = [(s, r) for s in IN_PLACE for r in RATES if _scaled(s, r)]
CORRUPT = ["", "x", "1", "1,2,3,4", "5,-3", "-9,99999999999"]
"""States kept as text that mean something, or nothing, to one strategy or another."""


def test_every_specialised_strategy_has_its_step() -> None:
    assert set(_STEPS) == {
        TokenBucket,
        TokenBucketWithDebt,
        GCRA,
        SlidingWindowCounter,
        LeakyBucket,
    }


def test_the_cases_cover_every_strategy_a_backend_decides_in_place() -> None:
    own = {type(s) for s in STRATEGIES} - {type(s) for s in IN_PLACE}
    assert own == {type(s) for s in STRATEGIES if not in_place_kind(s)}
    assert all(getattr(type(s), "decide", None) is not None for s in STRATEGIES)
    assert {type(s) for s, _ in CASES} == {type(s) for s in IN_PLACE}
    refused = [(s, r) for s in IN_PLACE for r in RATES if not _scaled(s, r)]
    for strategy, rate_text in refused:  # a throttle refuses them: nothing to decide in place
        with pytest.raises(ConfigurationError):
            strategy.check_scale(Rate.parse(rate_text))  # type: ignore[attr-defined]


@pytest.mark.parametrize(("strategy", "rate_text"), CASES, ids=repr)
async def test_a_step_equals_the_strategy_s_decision_and_state(
    strategy: Strategy, rate_text: str
) -> None:
    """On a random timeline of hits (costs up to the capacity), refunds, text states and
    expiries, the decider's decisions, stored states and expiries equal `strategy.decide`'s."""
    kind = in_place_kind(strategy)
    rate = Rate.parse(rate_text)
    clock = ManualClock(1_000.0)
    fast, slow = InMemoryBackend(clock=clock), InMemoryBackend(clock=clock)
    await fast.initialize()
    rng = random.Random(f"{strategy!r}{rate_text}")
    most = min(strategy.capacity(rate), 3)
    deciders = {cost: fast.decider(strategy, rate, cost, kind) for cost in range(1, most + 1)}
    stored = fast.get_key("client") + strategy.suffix
    assert stored == slow.get_key("client") + strategy.suffix
    steps = [1, 1, 7, 50, 249, 400, 1200, 3100, rate.expire, 5 * rate.expire]
    for turn in range(300):
        clock.advance(ms=rng.choice(steps))
        roll = rng.random()
        if roll < 0.05:  # a state kept as text (another writer, another version)
            value = await slow.get(stored) if rng.random() < 0.5 else rng.choice(CORRUPT)
            expire = rng.choice([0.001, 1, 100])
            if value is not None:
                for backend in (fast, slow):
                    await backend.set(stored, value, expire=expire)
            continue
        if roll < 0.1 and kind == IN_PLACE_STATE:
            item = [Item(strategy, stored, rate, rng.randint(1, most))]
            await fast.refund_all(item)
            await slow.refund_all(item)
        else:
            cost = rng.randint(1, most)
            decider = deciders[cost]
            assert decider is not None
            made = decider("client")
            expected = await strategy.decide("client", rate, slow, cost)
            assert made == expected, (turn, cost)
        assert await fast.get(stored) == await slow.get(stored), turn
        assert await fast.ttl(stored) == await slow.ttl(stored), turn


@pytest.mark.parametrize(("strategy", "rate_text"), CASES, ids=repr)
async def test_a_step_decides_a_state_later_than_now_as_the_strategy_does(
    strategy: Strategy, rate_text: str
) -> None:
    """A clock that goes back (a state written at a later time, as by a host whose clock is
    ahead): the decider decides at the state's time, as `strategy.decide` does, and stores
    the same states and expiries; from more than `AHEAD_MS` back, as on no state."""
    kind = in_place_kind(strategy)
    rate = Rate.parse(rate_text)
    clock = ManualClock(1_000_000.0)
    fast, slow = InMemoryBackend(clock=clock), InMemoryBackend(clock=clock)
    await fast.initialize()
    rng = random.Random(f"back {strategy!r}{rate_text}")
    decider = fast.decider(strategy, rate, 1, kind)
    assert decider is not None
    stored = fast.get_key("client") + strategy.suffix
    for turn in range(200):
        back = rng.choice(
            [0, 1, 50, rate.expire // 2, rate.expire, 2 * rate.expire, AHEAD_MS + 1, 600_000]
        )
        clock.set(clock() + (rng.choice([1, 7, 200]) - back) / 1000)
        assert decider("client") == await strategy.decide("client", rate, slow, 1), turn
        assert await fast.get(stored) == await slow.get(stored), turn
        assert await fast.ttl(stored) == await slow.ttl(stored), turn


@pytest.mark.parametrize("strategy", IN_PLACE, ids=repr)
async def test_a_step_equals_the_strategy_s_decision_when_the_rate_changes(
    strategy: Strategy,
) -> None:
    """One key decided at every rate in turn (`update_rate`, a rate callable, a deploy): the
    step reads a state written under another rate as the strategy does, and stores the same."""
    kind = in_place_kind(strategy)
    rates = [Rate.parse(text) for text in RATES if _scaled(strategy, text)]
    clock = ManualClock(1_000.0)
    fast, slow = InMemoryBackend(clock=clock), InMemoryBackend(clock=clock)
    await fast.initialize()
    rng = random.Random(f"rates {strategy!r}")
    stored = fast.get_key("client") + strategy.suffix
    for turn in range(400):
        clock.advance(ms=rng.choice([0, 1, 7, 50, 249, 1200]))
        rate = rng.choice(rates)
        cost = rng.randint(1, min(strategy.capacity(rate), 3))
        decider = fast.decider(strategy, rate, cost, kind)
        assert decider is not None
        made = decider("client")
        assert made == await strategy.decide("client", rate, slow, cost), (turn, rate, cost)
        assert await fast.get(stored) == await slow.get(stored), turn
        assert await fast.ttl(stored) == await slow.ttl(stored), turn


@pytest.mark.parametrize("strategy", IN_PLACE, ids=repr)
async def test_decide_now_is_the_decider_s_step(strategy: Strategy) -> None:
    kind = in_place_kind(strategy)
    clock = ManualClock(1_000.0)
    fast, slow = InMemoryBackend(clock=clock), InMemoryBackend(clock=clock)
    await fast.initialize()
    rate = Rate.parse("3/s")
    key = fast.get_key("c") + strategy.suffix
    for _ in range(5):
        clock.advance(ms=150)
        made = fast.decide_now(key, strategy, rate, 1, kind)
        assert made == await strategy.decide("c", rate, slow, 1)


def test_only_built_in_kinds_have_a_step() -> None:
    assert in_place_step(TokenBucket(), Rate.parse("1/s"), 1, 0) is None


async def test_a_decider_makes_no_decision_when_it_cannot() -> None:
    backend = InMemoryBackend()
    strategy: Any = TokenBucket()
    decide = backend.decider(strategy, Rate.parse("1/s"), 1, in_place_kind(strategy))
    assert decide is not None
    assert decide("c") is None, "not ready: the awaited path initialises the backend"
    await backend.initialize()
    assert decide("c") is not None
    backend.evaluate = backend.evaluate  # type: ignore[method-assign]  # replaced, as a mock does
    assert decide("c") is None


def _reference_evaluate_all(backend: InMemoryBackend, items: list[Item], commit: bool) -> Any:
    """`evaluate_all` as it was written before it ran the in-place steps (each state by its
    strategy's `transition`), a refused step's admitting items stated uncharged (`combine`
    given the costs) and its refusing items' states written when they converted another
    rate's (`traffik.strategies.base.Transition`): the reference the steps are held to."""
    from traffik.backends.inmemory_steps import whole_number
    from traffik.strategies.fixed_window import counter_decision, too_late
    from traffik.strategies.steps import charged, combine, is_counter

    now = backend.now_ms()
    parts, pending, counters = [], [], []
    for item in items:
        entry = backend._live(item.key, now)
        counter = is_counter(item.strategy)
        counters.append(counter)
        if counter:
            count = whole_number(entry[0]) if entry is not None else 0
            left = entry[1] - now if entry is not None and entry[1] is not None else None
            if commit and entry is not None and too_late(left, item.rate.expire):
                left = item.rate.expire
                entry[1] = now + left
            parts.append(counter_decision(count, left, item.rate, item.cost))
            pending.append((entry, None, 0))
        else:
            decision, new_state, ttl_ms = item.strategy.transition(
                backend._state(entry), now, item.rate, item.cost
            )
            parts.append(decision)
            pending.append((entry, new_state, ttl_ms))
    decision = combine(parts, [item.cost for item in items])
    if commit:
        for item, charge, part, counter, (entry, new_state, ttl_ms) in zip(
            items, charged(parts, items), parts, counters, pending
        ):
            if charge and counter:
                backend._add(item.key, item.cost, item.rate.expire, now)
            elif new_state is not None and (charge or not part.allowed):  # (refused: converted)
                backend._save(item.key, entry, new_state, ttl_ms, now)
        if not decision.allowed:
            for part, (entry, _, _) in zip(parts, pending):
                if entry is not None:
                    entry[3] = now + part.reset_ms
    decision.at = now
    return decision


MULTI_RATES = [("1/s", "4/3s"), ("7/250ms", "30/min", "1/s"), ("30/min", "10000000/d")]
MULTI_CASES = [
    (s, rates) for s in IN_PLACE for rates in MULTI_RATES if all(_scaled(s, r) for r in rates)
]


@pytest.mark.parametrize(("strategy", "rate_texts"), MULTI_CASES, ids=repr)
async def test_several_rates_in_place_equal_evaluate_all(
    strategy: Strategy, rate_texts: tuple[str, ...]
) -> None:
    """On a random timeline of hits (costs up to the capacity), refunds, text states and
    expiries, `decider_all`'s decisions (each rate's part too) and every stored entry (state,
    expiry, size, refused-until) equal those of `evaluate_all` decided by each strategy's
    `transition` (`_reference_evaluate_all`) on the throttle's items."""
    from traffik.strategies.steps import items

    kind = in_place_kind(strategy)
    rates = tuple(Rate.parse(text) for text in rate_texts)
    clock = ManualClock(1_000.0)
    fast, slow = InMemoryBackend(clock=clock), InMemoryBackend(clock=clock)
    await fast.initialize()
    await slow.initialize()
    rng = random.Random(f"{strategy!r}{rate_texts}")
    most = min(min(strategy.capacity(rate) for rate in rates), 3)
    deciders = {cost: fast.decider_all(strategy, rates, cost, kind) for cost in range(1, most + 1)}
    keys = [item.key for item in items(strategy, "client", rates, 1, slow)]
    # (bursts at one instant, so that every rate gets spent and refuses)
    steps = [0] * 20 + [1, 1, 7, 50, 249, 400, 1200, 3100, *(rate.expire for rate in rates)]
    refused = 0
    for turn in range(400):
        clock.advance(ms=rng.choice(steps))
        roll = rng.random()
        if roll < 0.05:  # a state kept as text (another writer, another version)
            stored = rng.choice(keys)
            value = await slow.get(stored) if rng.random() < 0.5 else rng.choice(CORRUPT)
            if value is not None:
                expire = rng.choice([0.001, 1, 100])
                for backend in (fast, slow):
                    await backend.set(stored, value, expire=expire)
            continue
        if roll < 0.1:
            given = items(strategy, "client", rates, rng.randint(1, most), slow)
            await fast.refund_all(given)
            await slow.refund_all(given)
        else:
            cost = rng.randint(1, most)
            decider = deciders[cost]
            assert decider is not None
            made = decider("client")
            expected = _reference_evaluate_all(
                slow, items(strategy, "client", rates, cost, slow), True
            )
            assert made == expected, (turn, cost)
            assert made is not None and made.at == expected.at, turn
            assert getattr(made, "parts", None) == getattr(expected, "parts", None), turn
            refused += not made.allowed
        assert fast._data == slow._data, turn
    assert refused, "the timeline never refused: the all-or-nothing path went untested"


@pytest.mark.parametrize("commit", [True, False])
async def test_evaluate_all_on_the_steps_equals_it_on_the_transitions(commit: bool) -> None:
    """`evaluate_all` of items of any in-place strategies, rates, keys and costs (beyond a
    rate's capacity too, a lone item too), committing or only deciding, over a random
    timeline: its decisions and every stored entry equal the reference's."""
    clock = ManualClock(1_000.0)
    fast, slow = InMemoryBackend(clock=clock), InMemoryBackend(clock=clock)
    await fast.initialize()
    await slow.initialize()
    rng = random.Random(f"evaluate_all {commit}")
    pool = [(s, Rate.parse(r)) for s, r in CASES]
    refused = 0
    for turn in range(1500):
        clock.advance(ms=rng.choice([0] * 8 + [1, 7, 50, 400, 1200, 3100]))
        chosen = rng.sample(pool, rng.randint(1, 3))
        made_items = [
            Item(s, fast.get_key(f"c{rng.randint(0, 2)}") + s.suffix + f":{i}", rate, cost)
            for i, (s, rate) in enumerate(chosen)
            for cost in [rng.choice([1, 1, 2, s.capacity(rate), s.capacity(rate) + 1])]
        ]
        made = await fast.evaluate_all(made_items, commit=commit)
        expected = _reference_evaluate_all(slow, made_items, commit)
        assert made == expected and made.at == expected.at, turn
        assert getattr(made, "parts", None) == getattr(expected, "parts", None), turn
        assert fast._data == slow._data, turn
        refused += not made.allowed
    assert refused
