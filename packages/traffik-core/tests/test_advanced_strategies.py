"""The advanced strategies' settings, names and key markers (their decisions are in the
conformance suite, on every backend)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from traffik import HTTPThrottle, InMemoryBackend, ManualClock
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import TokenBucket, custom
from traffik.strategies.markers import KeyMarker

pytestmark = pytest.mark.anyio


def test_traffik12_names() -> None:
    for name in (
        "TieredRate",
        "AdaptiveThrottle",
        "PriorityQueue",
        "QuotaWithRollover",
        "TimeOfDay",
        "CostBasedTokenBucket",
    ):
        assert getattr(custom, name) is getattr(custom, name + "Strategy")
    assert custom.Priority.CRITICAL == 4


@pytest.mark.parametrize(
    "build",
    [
        lambda: custom.TieredRate({}),
        lambda: custom.TieredRate({"free": 0}),
        lambda: custom.TieredRate({"free": True}),
        lambda: custom.TieredRate({"free": 1.0}, default_tier="gold"),
        lambda: custom.AdaptiveThrottle(load_threshold=1.0),
        lambda: custom.AdaptiveThrottle(reduction_factor=0),
        lambda: custom.PriorityQueue(default_priority=5),
        lambda: custom.PriorityQueue(max_queue_size=0),
        lambda: custom.QuotaWithRollover(rollover_percentage=1.5),
        lambda: custom.QuotaWithRollover(max_rollover=-1),
        lambda: custom.TimeOfDay([]),
        lambda: custom.TimeOfDay([(8, 8, 1.0)]),
        lambda: custom.TimeOfDay([(0, 25, 1.0)]),
        lambda: custom.TimeOfDay([(0, 24, 0)]),
        lambda: custom.TimeOfDay(timezone_offset=15),
        lambda: custom.CostBasedTokenBucket(burst_size=0),
        lambda: custom.CostBasedTokenBucket(cost_window=0),
        lambda: custom.CostBasedTokenBucket(min_refill_rate=0),
    ],
)
def test_bad_settings_are_refused_at_construction(build: Any) -> None:
    with pytest.raises(ConfigurationError):
        build()


@pytest.mark.parametrize(
    ("build", "names"),
    [
        (lambda: custom.TieredRate(5), ["tier_multipliers=5", "mapping"]),
        (lambda: custom.TieredRate("free"), ["tier_multipliers='free'", "mapping"]),
        (lambda: custom.TieredRate({"free": 1, "pro:plus": 2}), ["'pro:plus'", "':'"]),
        (lambda: custom.TimeOfDay(8), ["time_windows=8", "(start_hour, end_hour, multiplier)"]),
        (lambda: custom.TimeOfDay("0-8"), ["time_windows='0-8'", "list"]),
        (
            lambda: custom.TimeOfDay([(8, 17, 1.0), (12, 14, 3.0)]),
            ["(8, 17, 1.0)", "(12, 14, 3.0)", "overlap", "hour 12"],
        ),
        (lambda: custom.TimeOfDay([(0, 8, "2")]), ["(0, 8, '2')", "finite number"]),
        (lambda: custom.TimeOfDay([(22, 2, 1.5)]), ["(22, 2, 1.5)", "(22, 24, m)"]),
        (
            lambda: custom.PriorityQueue(default_priority="urgent"),
            ["default_priority='urgent'", "1 to 4", "'low', 'normal', 'high', 'critical'"],
        ),
    ],
)
def test_bad_settings_name_the_value_and_what_is_valid(build: Any, names: list[str]) -> None:
    """Each was a TypeError or ValueError from inside the constructor, or was accepted: a
    tier no key can name, time windows of which one silently lost its hours."""
    with pytest.raises(ConfigurationError) as caught:
        build()
    for name in names:
        assert name in str(caught.value)


def test_settings_traffik12_code_passes() -> None:
    tiered = custom.TieredRateStrategy(
        tier_multipliers={"free": 1, "premium": 5.0}, lock_config={"ttl": 5}, marker="plan"
    )
    assert tiered.marker == "plan:" and tiered.multiplier("premium") == 5.0
    assert tiered == custom.TieredRate({"premium": 5.0, "free": 1}, marker="plan:")
    assert len({tiered, custom.TieredRate({"free": 1, "premium": 5.0}, marker="plan")}) == 1
    assert custom.TimeOfDay(timezone_offset=5.5).hour_of_day(0) == 5
    queue = custom.PriorityQueue(default_priority=custom.Priority.HIGH)
    assert queue.at(custom.Priority.LOW) is queue.at(custom.Priority.LOW)
    assert queue.at(custom.Priority.LOW) == queue  # one configuration: the priority is input


@pytest.mark.parametrize(
    ("key", "value", "stored"),
    [
        ("tier:premium:user:42", "premium", "user:42"),  # a key given to the strategy directly
        ("api:{tier%3Apremium%3Auser%3A42}:GET:/x", "premium", "api:{user%3A42}:GET:/x"),
        ("api:{203.0.113.7}:GET:/x:tier%3Apremium", "premium", "api:{203.0.113.7}:GET:/x"),
        ("tier:{tier%3Agold}", "gold", "tier:{tier%3Agold}"),  # a uid spelling it is left alone
        ("api:{user}:GET:/x", None, "api:{user}:GET:/x"),
    ],
)
def test_key_markers(key: str, value: Any, stored: str) -> None:
    assert KeyMarker("tier:").take(key) == (value, stored)


async def test_a_priority_from_the_throttle_context() -> None:
    """The context's `scope` ends the key, so it can carry the priority; every priority of a
    client shares one log."""
    backend = InMemoryBackend(clock=ManualClock(1_700_000_040.0))
    throttle = HTTPThrottle(
        "jobs", rate="2/min", backend=backend, strategy=custom.PriorityQueue(), per_route=False
    )
    app = FastAPI()

    @app.get("/batch")
    async def batch(request: Request) -> dict[str, bool]:
        await throttle.hit(request, context={"scope": "priority:low"})
        return {"ok": True}

    @app.get("/urgent", dependencies=[Depends(throttle)])
    async def urgent() -> dict[str, bool]:
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        batch_codes = [(await http.get("/batch")).status_code for _ in range(3)]
        urgent_codes = [(await http.get("/urgent")).status_code for _ in range(3)]
    assert batch_codes == [200, 200, 429]
    assert urgent_codes == [200, 200, 429]  # NORMAL does not count the LOW hits
    assert len(await backend.keys()) == 1  # one log for the client


def _request() -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [],
        "client": ("203.0.113.7", 1),
    }
    return Request(scope)


async def _refunded_after(
    strategy: Any, rate: str, before: list[int], slow_cost: int, advance: float, after: list[int]
) -> tuple[float, float]:
    """Hits of `before` costs, a noted charge of `slow_cost`, then `advance` seconds and hits
    of `after` costs; the units left before and after giving the charge back."""
    clock = ManualClock(1_700_000_040.0)
    throttle = HTTPThrottle(
        "refunds",
        rate=rate,
        backend=InMemoryBackend(clock=clock),
        strategy=strategy,
        cost=lambda request, context=None: request.scope["cost"],
        charge_when=lambda outcome: outcome.status_code >= 400,
    )

    async def hit(cost: int) -> Request:
        request = _request()
        request.scope["cost"] = cost
        await throttle.hit(request)
        return request

    for cost in before:
        await hit(cost)
    slow = await hit(slow_cost)
    clock.advance(advance)
    for cost in after:
        await hit(cost)
    stat = await throttle.stat(_request())
    assert stat is not None
    await throttle.refund(slow)
    refunded = await throttle.stat(_request())
    assert refunded is not None
    return stat.hits_remaining, refunded.hits_remaining


async def test_adaptive_refund_after_its_window_closed_gives_nothing() -> None:
    """The charge's window is over: giving it back must not free a unit of the new window,
    even while the limit is still recovering (the decision's reset reaches past the window)."""
    strategy = custom.AdaptiveThrottle(load_threshold=0.1)  # the second hit cuts 10 to 6
    before, after = await _refunded_after(strategy, "10/min", [1, 1], 1, 61, [1])
    assert before == after
    # In the charge's own window it is given back.
    before, after = await _refunded_after(strategy, "10/min", [1, 1], 1, 59, [])
    assert after == before + 1


async def test_cost_based_refund_gives_back_only_what_has_not_refilled() -> None:
    """As a token bucket: 9 s after taking all 10 tokens, 9 have refilled and been taken by
    another request; without the charge the bucket would have held 1, so 1 comes back (it
    gave back all 10)."""
    strategy = custom.CostBasedTokenBucket(min_refill_rate=1.0)
    assert await _refunded_after(strategy, "10/10s", [], 10, 9, [9]) == (0, 1)
    assert await _refunded_after(TokenBucket(), "10/10s", [], 10, 9, [9]) == (0, 1)
    # Average cost 10: half the rate, full in 20 s; at 18 s one unit is still missing.
    slow = custom.CostBasedTokenBucket(min_refill_rate=0.5)
    assert await _refunded_after(slow, "10/10s", [], 10, 18, [9]) == (0, 1)
    # Before anything refilled, the whole charge comes back.
    assert await _refunded_after(slow, "10/10s", [], 4, 0, []) == (6, 10)


def test_adaptive_under_another_limit_keeps_the_count_and_its_share_of_the_limit() -> None:
    """`100/min` cut to 60, then `10/min` in the same window: the count is kept and the
    effective limit is 60% of the new limit (6), never the 60 it was; a refund undoes the cut
    back to the new limit. Raised to `200/min`, an uncut client has all of it."""
    strategy = custom.AdaptiveThrottle(0.8, 0.6, 0.1, 0.3)
    old, new = Rate.parse("100/min"), Rate.parse("10/min")
    now, state = 60_000, None
    for _ in range(81):  # the 81st passes the threshold: cut to 60
        state = strategy.transition(state, now, old, 1)[1] or state
    assert state == [1, 81, 60, 100, 100, 60_000]
    decision, written, _ = strategy.transition(state, now, Rate.parse("100/min"), 1)
    assert not decision.allowed and written is None  # 81 > 60 under the old limit too
    assert strategy._window(state, now + 1, new)[2:] == (81, 6, 10)  # count, effective, cut_from
    assert not strategy.transition(state, now + 1, new, 1)[0].allowed
    refunded, _ = strategy.refund(state, now + 1, new, 80)  # count 1: no hit passed the threshold
    assert refunded == [1, 1, 10, 0, 10, 60_000]
    fresh = strategy.transition(None, now, Rate.parse("10/min"), 2)[1]
    assert strategy._window(fresh, now + 1, Rate.parse("200/min"))[2:] == (2, 200, 0)
    # another period, its window still open: the count and the cut's share carry into this
    # period's window
    assert strategy._window(state, now + 1, Rate.parse("10/s"))[2:] == (81, 6, 10)


def test_rollover_under_a_lower_limit_is_at_most_what_that_limit_rolls_over() -> None:
    strategy = custom.QuotaWithRollover(rollover_percentage=0.5, max_rollover=500)
    old, new = Rate.parse("100/min"), Rate.parse("10/min")
    state = strategy.transition(None, 0, old, 10)[1]  # 90 unused: 45 roll over
    state = strategy.transition(state, 60_000, old, 1)[1]
    assert state == [1, 1, 45, 60_000]
    admitted = 0
    for _ in range(60):
        decision, written, _ = strategy.transition(state, 60_001, new, 1)
        state, admitted = written or state, admitted + decision.allowed
    assert admitted == 10 + 5 - 1  # the new limit and the 5 it rolls over at most, less 1 used


@pytest.mark.parametrize(
    ("utc", "hour"),
    [
        ("2024-03-31T00:30:00", 1),  # 01:30 in Berlin (CET, +1)
        ("2024-03-31T01:30:00", 2),  # 03:30 in Berlin (CEST, +2 since 01:00 UTC): still +1 here
        ("2024-10-27T00:30:00", 1),  # 02:30 in Berlin (CEST): +1 here
        ("2024-10-27T01:30:00", 2),  # 02:30 again in Berlin (CET)
        ("2024-12-31T23:30:00", 0),  # midnight passed, in next year's first hour
    ],
)
def test_time_of_day_keeps_its_offset_all_year(utc: str, hour: int) -> None:
    """`timezone_offset` is a fixed offset from UTC, as in traffik 1.2: it does not follow a
    zone's daylight saving time, so in summer a Berlin app given `+1` has its hours an hour
    early by the local clock (docs/advanced-strategies.md)."""
    import datetime

    moment = datetime.datetime.fromisoformat(utc).replace(tzinfo=datetime.timezone.utc)
    assert custom.TimeOfDay(timezone_offset=1).hour_of_day(int(moment.timestamp() * 1000)) == hour


async def test_tiered_rate_admits_a_fixed_cost_a_higher_tier_can() -> None:
    """`capacity` is the largest tier's limit, as `TimeOfDay`'s is its largest multiplier's:
    a fixed cost only a higher tier admits is not refused when the throttle is built (a cost
    function's was already admitted for those tiers), and a client whose tier admits less is
    told the rate it has can never admit the cost."""
    strategy = custom.TieredRate()  # free 1x, premium 5x, enterprise 10x
    assert strategy.capacity(Rate.parse("10/min")) == 100
    throttle = HTTPThrottle(
        "tiers",
        rate="10/min",
        backend=InMemoryBackend(),
        strategy=strategy,
        cost=60,
        identifier=lambda request: f"tier:{request.headers['x-tier']}:acme",
    )
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(throttle)])
    async def x() -> dict[str, bool]:
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        enterprise = await http.get("/x", headers={"x-tier": "enterprise"})
        premium = await http.get("/x", headers={"x-tier": "premium"})
    assert enterprise.status_code == 200
    assert premium.status_code == 429
    assert "costs 60 units, more than the rate 50/min can ever admit" in premium.text
    with pytest.raises(ConfigurationError, match=r"cost=101 .* can ever admit \(100\)"):
        HTTPThrottle("tiers", rate="10/min", strategy=strategy, cost=101)


@pytest.mark.parametrize(
    ("segment", "level"),
    [
        ("high", custom.Priority.HIGH),  # a name, in any case, spaces around it dropped
        ("HIGH", custom.Priority.HIGH),
        (" Critical ", custom.Priority.CRITICAL),
        ("1", custom.Priority.LOW),  # a level, in ASCII digits
        ("03", custom.Priority.HIGH),
        ("9", custom.Priority.NORMAL),  # anything else: the default priority, no error
        ("0", custom.Priority.NORMAL),
        ("urgent", custom.Priority.NORMAL),
        ("-3", custom.Priority.NORMAL),
        ("²", custom.Priority.NORMAL),  # (a digit to `str.isdigit`, not to `int`: it raised)
        ("٣", custom.Priority.HIGH),  # (a decimal digit, as `int` reads it)
    ],
)
def test_a_key_s_priority_segment_names_a_level_or_is_the_default(
    segment: str, level: custom.Priority
) -> None:
    """docs/advanced-strategies.md: a key's priority segment comes from the client at
    request time, so a value that names no level decides at `default_priority` (and is still
    taken out of the storage key: one log per client), never an error; `default_priority`
    itself raises a `ConfigurationError` for such a value."""
    queue = custom.PriorityQueue()
    assert queue.priority_of(f"priority:{segment}:svc") == (level, "svc")
    if level is custom.Priority.NORMAL:
        with pytest.raises(ConfigurationError, match="default_priority"):
            custom.PriorityQueue(default_priority=segment)  # type: ignore[arg-type]
