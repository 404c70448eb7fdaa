"""The `on_error` handlers on real throttles and backends: `fallback`, `retry` and `failover`.

Failures are injected with `traffik.testing.FailingBackend`; each handler is called with
the `exc_info` a real throttle gives it, so `exc_info["decide"]` re-runs a real decision.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import nullcontext
from typing import Any, Optional

import pytest
from starlette.requests import Request
from starlette.responses import Response

from traffik import HTTPThrottle, InMemoryBackend, ManualClock, Rate
from traffik.backends.base import ThrottleBackend
from traffik.backoff import ConstantBackoff
from traffik.config import THROTTLED_STATE_KEY
from traffik.error_handlers import (
    CircuitBreaker,
    DecidedWait,
    ThrottleExceptionInfo,
    backend_fallback,
    failover,
    fallback,
    retry,
)
from traffik.exceptions import (
    BackendConnectionError,
    BackendError,
    CircuitOpenError,
    ConfigurationError,
    ConnectionThrottled,
)
from traffik.outcomes import Outcome, settle
from traffik.strategies import FixedWindow, TokenBucket
from traffik.testing import FailingBackend

pytestmark = pytest.mark.anyio

RATE = Rate.parse("2/min")
CLIENT = "client:1"
KEY = "t:{client%3A1}"
"""The throttle key of `CLIENT` for the throttle `throttle_on` builds (uid "t", no route)."""


def request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": []})


def throttle_on(
    backend: ThrottleBackend, strategy: Any = None, on_error: Any = None, identifier: Any = None
) -> HTTPThrottle:
    return HTTPThrottle(
        "t",
        rate=RATE,
        backend=backend,
        strategy=strategy,
        on_error=on_error,
        identifier=identifier or (lambda connection: CLIENT),
        per_route=False,
    )


class Sleeps(list[float]):
    """A `sleep` that records the delays instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


async def failing_exc_info(
    backend: ThrottleBackend, strategy: Any = None, identifier: Any = None
) -> ThrottleExceptionInfo:
    """The `exc_info` a throttle on `backend` gives its handler for the failure `backend` is
    armed with."""
    seen: list[ThrottleExceptionInfo] = []

    async def capture(connection: Any, exc_info: ThrottleExceptionInfo) -> float:
        seen.append(exc_info)
        return 0

    await throttle_on(backend, strategy, capture, identifier).hit(request())
    assert len(seen) == 1, "the throttle did not fail"
    return seen[0]


async def remaining(backend: ThrottleBackend, strategy: Any = None) -> float:
    stat = await (FixedWindow() if strategy is None else strategy).get_stat(KEY, RATE, backend)
    return stat.hits_remaining


def failing(namespace: str = "primary") -> FailingBackend:
    backend = FailingBackend(InMemoryBackend(namespace=namespace))
    backend.fail(BackendError)
    return backend


# -- the information a handler gets -----------------------------------------------------------


async def test_exc_info_knows_the_key_after_a_store_failure() -> None:
    info = await failing_exc_info(failing())
    assert isinstance(info["exception"], BackendError)
    assert info["key"] == KEY and info["rate"] == RATE and info["cost"] == 1


async def test_exc_info_has_no_key_when_the_identifier_failed() -> None:
    def broken(connection: Any) -> str:
        raise LookupError("no such user")

    info = await failing_exc_info(InMemoryBackend(), identifier=broken)
    assert isinstance(info["exception"], LookupError)
    assert info["key"] is None and info["rate"] == RATE


async def test_handlers_answer_traffik12_exc_info_with_a_wait() -> None:
    # traffik 1.2 code calls handlers itself, with an exc_info it builds (no `decide`), and
    # reads a wait in milliseconds back.
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    info: Any = {
        "exception": BackendError("down"),
        "connection": request(),
        "key": KEY,
        "cost": 1,
        "rate": RATE,
        "backend": primary,
        "context": {},
        "throttle": throttle_on(primary),
    }
    waits = [await fallback(spare)(None, info) for _ in range(3)]
    assert waits[:2] == [0.0, 0.0] and 0 < waits[2] <= 60_000
    assert all(isinstance(wait, float) for wait in waits)
    assert await remaining(spare) == 0
    primary.recover()
    retried = await retry(max_retries=1, retry_delay=0)(None, info)
    assert retried == 0.0 and retried.decision.remaining == 1
    assert await failover(spare, max_retries=1, retry_delay=0)(None, info) == 0.0


# -- fallback ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy", [FixedWindow(), TokenBucket()], ids=["fixed_window", "token_bucket"]
)
async def test_fallback_decides_on_the_fallback_backend(strategy: Any) -> None:
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    handler = fallback(spare)
    info = await failing_exc_info(primary, strategy)
    first, second, third = [await handler(None, info) for _ in range(3)]
    # traffik 1.2's answer, a wait in ms, carrying the whole decision for the headers.
    assert first == 0 and first.decision.allowed and first.decision.remaining == 1
    assert second == 0 and second.decision.allowed and second.decision.remaining == 0
    assert third > 0 and third == third.decision.wait_ms and not third.decision.allowed
    assert await remaining(spare, strategy) == 0
    primary.recover()
    assert await remaining(primary, strategy) == 2


async def test_fallback_with_a_never_initialised_spare() -> None:
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    handler = backend_fallback(backend=spare, fallback_on=(BackendError,))
    assert backend_fallback is fallback
    assert not spare.initialized
    decision = await handler(None, await failing_exc_info(primary))
    assert isinstance(decision, DecidedWait) and decision.decision.allowed
    assert spare.initialized


async def test_fallback_reraises_the_original_for_unlisted_errors() -> None:
    primary, spare = FailingBackend(InMemoryBackend()), InMemoryBackend(namespace="spare")
    primary.fail(ValueError("a bug"))
    info = await failing_exc_info(primary)
    with pytest.raises(ValueError, match="a bug") as caught:
        await fallback(spare)(None, info)
    assert caught.value is info["exception"]
    assert not spare.initialized
    assert isinstance(await fallback(spare, on=ValueError)(None, info), DecidedWait)


async def test_fallback_after_an_identifier_failure_reruns_the_identifier() -> None:
    calls: list[int] = []

    def flaky(connection: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise BackendError("the user store is down")
        return CLIENT

    spare = InMemoryBackend(namespace="spare")
    info = await failing_exc_info(InMemoryBackend(), identifier=flaky)
    assert info["key"] is None
    decision = await fallback(spare)(None, info)
    assert isinstance(decision, DecidedWait) and decision.decision.allowed
    assert len(calls) == 2 and await remaining(spare) == 1  # the client's own bucket


async def test_fallback_failure_is_chained_to_the_original() -> None:
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    await spare.initialize()
    await spare.close()
    info = await failing_exc_info(primary)
    with pytest.raises(BackendConnectionError, match="was closed") as caught:
        await fallback(spare)(None, info)
    assert caught.value.__cause__ is info["exception"]


async def test_fallback_initialized_false_reopens_a_closed_spare() -> None:
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    await spare.initialize()
    await spare.close()
    decision = await fallback(spare, initialized=False)(None, await failing_exc_info(primary))
    assert isinstance(decision, DecidedWait) and decision.decision.allowed
    assert spare.initialized


async def test_fallback_runs_a_strategy_without_decide_and_uses_its_wait() -> None:
    seen: list[tuple[Any, ...]] = []

    async def strategy(key: Any, rate: Rate, backend: ThrottleBackend, cost: int = 1) -> float:
        seen.append((key, rate, backend, cost))
        if backend.namespace == "primary":
            raise BackendError("down")
        return 250.0

    primary, spare = InMemoryBackend(namespace="primary"), InMemoryBackend(namespace="spare")
    info = await failing_exc_info(primary, strategy)
    decision = (await fallback(spare)(None, info)).decision
    assert not decision.allowed and decision.wait_ms == 250 and decision.remaining is None
    assert seen[-1] == (KEY, RATE, spare, 1)


async def test_fallback_takes_traffik12_positional_order() -> None:
    """traffik 1.2's order: backend, fallback_on, on, initialized."""
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    info = await failing_exc_info(primary)
    decision = await fallback(spare, None, (BackendError,), True)(None, info)
    assert isinstance(decision, DecidedWait) and decision.decision.allowed
    assert await remaining(spare) == 1
    legacy = fallback(spare, (TimeoutError,))  # fallback_on, which replaces on
    with pytest.raises(BackendError) as caught:
        await legacy(None, info)
    assert caught.value is info["exception"]


def test_fallback_settings_are_validated() -> None:
    spare = InMemoryBackend()
    with pytest.raises(
        ConfigurationError, match=r"fallback\(backend='memory://'\): must be a ThrottleBackend"
    ):
        fallback("memory://")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match=r"fallback\(on=\(\)\): must be an exception class"
    ):
        fallback(spare, on=())
    with pytest.raises(ConfigurationError, match=r"fallback_on='BackendError'\)"):
        fallback(spare, fallback_on="BackendError")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError,
        match=r"`fallback_on` is the old name of `on` \(traffik 1.2 used `fallback_on`\); give only one",
    ):
        fallback(spare, on=ValueError, fallback_on=(BackendError,))
    with pytest.raises(
        ConfigurationError, match=r"initialized='yes'\): must be None, True or False"
    ):
        fallback(spare, initialized="yes")  # type: ignore[arg-type]
    fallback(spare, on=(BackendError,), fallback_on=[BackendError])  # type: ignore[arg-type]


# -- retry ------------------------------------------------------------------------------


def flaky(failures: int, error: Any = BackendError) -> FailingBackend:
    backend = FailingBackend(InMemoryBackend())
    backend.fail(error, times=failures)
    return backend


async def test_retry_retries_at_once_then_waits_the_backoff() -> None:
    """As traffik 1.2 ran it: the first retry at once, then `retry_delay`, twice that..."""
    backend = flaky(3)
    sleeps = Sleeps()
    info = await failing_exc_info(backend)
    decision = await retry(max_retries=3, retry_delay=0.1, sleep=sleeps)(None, info)
    assert isinstance(decision, DecidedWait) and decision.decision.allowed
    assert sleeps == pytest.approx([0.1, 0.2])
    assert backend.failures == 3 and await remaining(backend) == 1


async def test_retry_exhausted_raises_the_last_error() -> None:
    backend = flaky(100)
    sleeps = Sleeps()
    info = await failing_exc_info(backend)
    with pytest.raises(BackendError) as caught:
        await retry(max_retries=3, retry_delay=0.1, sleep=sleeps)(None, info)
    assert caught.value is not info["exception"]  # the last retry's error
    assert sleeps == pytest.approx([0.1, 0.2]) and backend.failures == 4


async def test_a_transient_failure_is_retried_without_waiting() -> None:
    """traffik 1.2's `retry(max_retries=3, retry_delay=0.05, backoff_multiplier=2.0)` with two
    failures in a row (the decision's and the first retry's) waits 0.05 s once."""
    backend = flaky(2)
    sleeps = Sleeps()
    info = await failing_exc_info(backend)
    handler = retry(max_retries=3, retry_delay=0.05, backoff_multiplier=2.0, sleep=sleeps)
    decision = await handler(None, info)
    assert isinstance(decision, DecidedWait) and decision.decision.allowed
    assert sleeps == pytest.approx([0.05]) and backend.failures == 2
    one_blip = flaky(1)
    sleeps.clear()
    await retry(retry_delay=0.05, sleep=sleeps)(None, await failing_exc_info(one_blip))
    assert sleeps == []


async def test_retry_with_real_sleep_and_tiny_delays() -> None:
    info = await failing_exc_info(flaky(2))
    decision = await retry(max_retries=2, retry_delay=0.001)(None, info)
    assert isinstance(decision, DecidedWait) and decision.decision.allowed


async def test_retry_zero_retries_reraises_the_original() -> None:
    backend = flaky(1)
    info = await failing_exc_info(backend)
    with pytest.raises(BackendError) as caught:
        await retry(max_retries=0, sleep=Sleeps())(None, info)
    assert caught.value is info["exception"]
    assert backend.failures == 1


async def test_retry_leaves_unlisted_errors_alone() -> None:
    backend = flaky(1, ValueError)
    sleeps = Sleeps()
    info = await failing_exc_info(backend)
    with pytest.raises(ValueError) as caught:
        await retry(retry_on=(BackendError,), sleep=sleeps)(None, info)
    assert caught.value is info["exception"] and sleeps == [] and backend.failures == 1


async def test_retry_stops_at_an_unlisted_error_during_retries() -> None:
    backend = flaky(1)
    info = await failing_exc_info(backend)
    backend.fail(ValueError("not a backend error"), times=5)
    with pytest.raises(ValueError, match="not a backend error"):
        await retry(retry_on=BackendError, sleep=Sleeps())(None, info)
    assert backend.failures == 2


async def test_retry_reruns_the_identity_not_a_missing_key() -> None:
    """Four clients at 2/min whose first identification fails: each keeps its own bucket."""
    attempts: dict[str, int] = {}

    def identify(connection: Any) -> str:
        client = connection.headers["x-client"]
        attempts[client] = attempts.get(client, 0) + 1
        if attempts[client] == 1:
            raise BackendError("identity service hiccup")
        return client

    backend = InMemoryBackend()
    throttle = HTTPThrottle(
        "r",
        rate="2/min",
        backend=backend,
        identifier=identify,
        per_route=False,
        on_error=retry(max_retries=1, sleep=Sleeps()),
    )
    allowed = []
    for client in "abcd":
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"x-client", client.encode())],
        }
        await throttle.hit(Request(scope))
        allowed.append(
            Request(scope).scope.get("state", {}).get("__traffik_throttled_state__") in (None, 0.0)
        )
    assert all(allowed)
    assert sorted(await backend.keys()) == [f"inmemory:r:{{{c}}}:fw" for c in "abcd"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"backoff_multiplier": 3.0}, [0.1, 0.3]),
        ({"backoff": ConstantBackoff}, [0.1, 0.1]),
        ({"backoff": ConstantBackoff, "backoff_multiplier": 3.0}, [0.1, 0.1]),  # 1.2: backoff wins
        ({"max_retries": 1}, []),
    ],
)
async def test_retry_backoff_choices(kwargs: dict[str, Any], expected: list[float]) -> None:
    sleeps = Sleeps()
    info = await failing_exc_info(failing())
    with pytest.raises(BackendError):
        await retry(retry_delay=0.1, sleep=sleeps, **kwargs)(None, info)
    assert sleeps == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_retries": -1}, r"retry\(max_retries=-1\): must be a whole number >= 0"),
        ({"max_retries": True}, r"max_retries=True"),
        ({"retry_delay": -0.1}, r"retry\(retry_delay=-0.1\): must be a finite number >= 0"),
        ({"retry_delay": float("nan")}, r"retry_delay=nan"),
        ({"backoff_multiplier": 0.5}, r"backoff_multiplier=0.5\): must be a finite number >= 1"),
        ({"backoff": 2}, r"backoff=2\): must be a callable \(attempt, base_delay\)"),
        ({"backoff": ConstantBackoff, "backoff_multiplier": 0}, r"backoff_multiplier=0\)"),
        ({"retry_on": "BackendError"}, r"retry_on='BackendError'\): must be an exception class"),
    ],
)
def test_retry_settings_are_validated(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        retry(**kwargs)


# -- failover ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(0.0)


async def test_failover_opens_the_breaker_then_skips_the_primary(clock: ManualClock) -> None:
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    breaker = CircuitBreaker(
        failure_threshold=2, recovery_timeout=30.0, success_threshold=1, clock=clock
    )
    sleeps = Sleeps()
    handler = failover(spare, breaker=breaker, max_retries=2, retry_delay=0.05, sleep=sleeps)
    info = await failing_exc_info(primary)
    for expected_failures in (3, 5):
        decision = await handler(None, info)
        assert isinstance(decision, DecidedWait) and decision.decision.allowed
        assert primary.failures == expected_failures
    assert sleeps == pytest.approx([0.05, 0.05])  # the first retry at once, as in traffik 1.2
    assert breaker.is_open

    third = await handler(None, info)
    assert isinstance(third, DecidedWait) and not third.decision.allowed
    assert primary.failures == 5 and len(sleeps) == 2

    primary.recover()
    clock.advance(30)
    recovered = await handler(None, info)
    assert isinstance(recovered, DecidedWait) and recovered.decision.allowed
    assert breaker.is_closed
    assert await remaining(primary) == 1 and await remaining(spare) == 0


async def test_failover_records_a_success_on_the_first_good_retry(clock: ManualClock) -> None:
    primary, spare = flaky(2), InMemoryBackend(namespace="spare")
    breaker = CircuitBreaker(failure_threshold=2, clock=clock)
    await breaker.record_failure()
    info = await failing_exc_info(primary)
    decision = await failover(spare, breaker=breaker, max_retries=2, sleep=Sleeps())(None, info)
    assert isinstance(decision, DecidedWait) and decision.decision.allowed
    assert (await breaker.info())["failure_count"] == 0
    assert await remaining(primary) == 1 and await remaining(spare) == 2


async def test_failover_without_retries_records_a_failure_and_falls_back(
    clock: ManualClock,
) -> None:
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    info = await failing_exc_info(primary)
    decision = await failover(spare, breaker=breaker, max_retries=0)(None, info)
    assert isinstance(decision, DecidedWait) and decision.decision.allowed
    assert breaker.is_open and primary.failures == 1


async def test_failover_while_probing_sends_other_callers_to_the_spare(clock: ManualClock) -> None:
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    breaker = CircuitBreaker(
        failure_threshold=1, recovery_timeout=5.0, success_threshold=1, clock=clock
    )
    await breaker.force_open()
    clock.advance(5)
    release = asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        await release.wait()

    handler = failover(spare, breaker=breaker, max_retries=1, sleep=held_sleep)
    info = await failing_exc_info(primary)
    primary.recover()
    probe = asyncio.ensure_future(handler(None, info))
    await asyncio.sleep(0)
    assert breaker.is_half_open
    calls = primary.calls
    other = await handler(None, info)
    assert isinstance(other, DecidedWait) and other.decision.allowed
    assert primary.calls == calls and await remaining(spare) == 1
    release.set()
    probed = await probe
    assert isinstance(probed, DecidedWait) and probed.decision.allowed
    assert breaker.is_closed


async def test_failover_cancelled_while_retrying_counts_as_a_failure(clock: ManualClock) -> None:
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=5.0, clock=clock)

    async def cancelled_sleep(seconds: float) -> None:
        raise asyncio.CancelledError

    info = await failing_exc_info(primary)
    with pytest.raises(asyncio.CancelledError):
        await failover(spare, breaker=breaker, sleep=cancelled_sleep)(None, info)
    assert breaker.is_open and (await breaker.info())["probe_in_progress"] is False


async def test_failover_fallback_failure_is_chained(clock: ManualClock) -> None:
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    await spare.initialize()
    await spare.close()
    info = await failing_exc_info(primary)
    with pytest.raises(BackendConnectionError) as caught:
        await failover(spare, breaker=CircuitBreaker(clock=clock), sleep=Sleeps())(None, info)
    assert caught.value.__cause__ is info["exception"]


def test_failover_makes_its_own_breaker_and_validates_settings() -> None:
    spare = InMemoryBackend()
    failover(spare)
    with pytest.raises(
        ConfigurationError, match=r"failover\(backend=None\): must be a ThrottleBackend"
    ):
        failover(None)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match=r"failover\(breaker='open'\): must be a CircuitBreaker or None"
    ):
        failover(spare, breaker="open")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"failover\(max_retries=-2\)"):
        failover(spare, max_retries=-2)
    with pytest.raises(ConfigurationError, match=r"failover\(retry_delay=-1\)"):
        failover(spare, retry_delay=-1)
    with pytest.raises(ConfigurationError, match=r"failover\(backoff='fast'\)"):
        failover(spare, backoff="fast")  # type: ignore[arg-type]


# -- FailingBackend itself ----------------------------------------------------------------


async def test_failing_backend_passes_through_until_armed() -> None:
    inner = InMemoryBackend(namespace="wrapped")
    backend = FailingBackend(inner)
    assert await backend.increment_with_ttl(backend.get_key("k"), amount=2, ttl=60) == 2
    with backend.failing(BackendError("down"), operations=["increment_with_ttl"]):
        with pytest.raises(BackendError, match="down"):
            await backend.increment_with_ttl(backend.get_key("k"))
        assert await backend.get(backend.get_key("k")) == "2"  # other operations pass
    assert await inner.get(inner.get_key("k")) == "2"
    assert backend.failures == 1
    with pytest.raises(ValueError, match="unknown operations"):
        backend.fail(operations=["explode"])
    none: Optional[str] = await backend.get(backend.get_key("missing"))
    assert none is None


# -- a fallback's share, and the store's circuit --------------------------------------------


async def test_fallback_per_process_decides_on_a_share_of_the_limit() -> None:
    primary = FailingBackend(InMemoryBackend(namespace="primary"))
    primary.fail(BackendConnectionError)
    spare = InMemoryBackend(namespace="spare")
    throttle = HTTPThrottle(
        "shared",
        rate="10/min;100/hour",
        backend=primary,
        on_error=fallback(spare, per_process=0.5),
        identifier=lambda connection: CLIENT,
        per_route=False,
    )
    admitted = 0
    for _ in range(10):
        try:
            await throttle.hit(request())
        except ConnectionThrottled:
            continue
        admitted += 1
    assert admitted == 5  # the tighter limit, halved


@pytest.mark.parametrize("rate", ["4/min", "4/min;40/hour"], ids=["one-rate", "two-rates"])
@pytest.mark.parametrize("how", ["settle", "refund"])
@pytest.mark.parametrize("handler", ["fallback", "failover"])
async def test_a_per_process_fallback_gives_its_charge_back_on_the_fallback(
    rate: str, how: str, handler: str
) -> None:
    primary = FailingBackend(InMemoryBackend(namespace="primary"))
    primary.fail(BackendConnectionError)
    spare = InMemoryBackend(namespace="spare")
    on_error = (
        backend_fallback(spare, per_process=0.5)
        if handler == "fallback"
        else failover(spare, max_retries=0, per_process=0.5)
    )
    throttle = HTTPThrottle(
        "shared",
        rate=rate,
        backend=primary,
        on_error=on_error,
        identifier=lambda connection: CLIENT,
        per_route=False,
        charge_when=lambda outcome: outcome.status_code >= 400,
    )
    succeeded = request()
    await throttle.hit(succeeded)  # one of the fallback's 2 (4, halved)
    if how == "settle":
        await settle(succeeded, Outcome(200))  # does not count: given back on the spare
    else:
        await throttle.refund(succeeded)
    admitted = 0
    for _ in range(3):
        try:
            await throttle.hit(request())
        except ConnectionThrottled:
            continue
        admitted += 1
    assert admitted == 2


async def test_a_per_process_fallback_scales_the_limits_after_the_identifier_failed() -> None:
    calls: list[int] = []

    def identify(connection: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise BackendError("user directory hiccup")
        return CLIENT

    handler = fallback(InMemoryBackend(namespace="spare"), per_process=0.5)
    decided: list[DecidedWait] = []

    async def recording(connection: Any, exc_info: ThrottleExceptionInfo) -> DecidedWait:
        decided.append(await handler(connection, exc_info))
        return decided[-1]

    throttle = throttle_on(InMemoryBackend(), on_error=recording, identifier=identify)
    await throttle.hit(request())  # decided again, identity included, on the spare
    assert [(d.decision.limit, d.decision.remaining) for d in decided] == [(1, 0)]  # 2, halved


async def test_failover_skips_its_retries_while_the_stores_circuit_is_open(
    clock: ManualClock,
) -> None:
    primary, spare = failing(), InMemoryBackend(namespace="spare")
    primary.fail(CircuitOpenError("not attempted"))
    breaker = CircuitBreaker(clock=clock)
    sleeps = Sleeps()
    handler = failover(spare, breaker=breaker, sleep=sleeps)
    info = await failing_exc_info(primary)
    failures = primary.failures
    decision = await handler(None, info)
    assert isinstance(decision, DecidedWait) and decision.decision.allowed
    assert sleeps == [] and primary.failures == failures and breaker.is_closed
    assert await remaining(spare) == 1


def test_fallback_share_and_reconcile_settings_are_validated() -> None:
    spare = InMemoryBackend()
    with pytest.raises(ConfigurationError, match=r"fallback\(per_process=2\)"):
        fallback(spare, per_process=2)
    with pytest.raises(ConfigurationError, match=r"failover\(per_process=0\)"):
        failover(spare, per_process=0)
    with pytest.raises(ConfigurationError, match=r"fallback\(reconcile='no'\)"):
        fallback(spare, reconcile="no")  # type: ignore[arg-type]


# -- what an operator reads in the log -----------------------------------------------------------


@pytest.mark.parametrize(
    ("on_error", "outcome"),
    [
        ("throttle", "refused"),
        ("allow", "let through"),
        (fallback(InMemoryBackend(namespace="spare")), "handed to the handler"),
    ],
)
async def test_a_failed_decision_is_logged_once_per_interval_naming_the_store(
    caplog: pytest.LogCaptureFixture, on_error: Any, outcome: str
) -> None:
    """One line for 50 failed hits, naming the throttle, the store that failed, the error,
    the policy, what the client got and where to look."""
    import logging

    store = FailingBackend(InMemoryBackend(namespace="primary"))
    uid = f"logged-{outcome.split()[0]}"
    throttle = HTTPThrottle(uid, rate="5/min", backend=store, on_error=on_error, skip_handler=True)
    caplog.set_level(logging.WARNING, logger="traffik")
    with store.failing(BackendConnectionError("store down")):
        for _ in range(50):
            await throttle.hit(request())
    lines = [
        r.getMessage() for r in caplog.records if r.name == "traffik" and uid in r.getMessage()
    ]
    assert len(lines) == 1, lines
    assert repr(store) in lines[0] and "BackendConnectionError: store down" in lines[0]
    assert outcome in lines[0] and "check that the store answers" in lines[0], lines[0]
    # a store that answered with an error of its own (a full disk): its message is the advice
    with store.failing(BackendError("the disk is full")):
        await throttle.hit(request())
    [line] = [r.getMessage() for r in caplog.records if "the disk is full" in r.getMessage()]
    assert "the store's error says what to fix" in line and "store answers" not in line, line


async def on_store_error(connection: Any, exc_info: Any) -> float:
    return 0.0


@pytest.mark.parametrize(
    ("on_error", "named"),
    [
        (
            fallback(InMemoryBackend(namespace="spare")),
            "fallback(InMemoryBackend(namespace='spare'))",
        ),
        (
            failover(InMemoryBackend(namespace="spare")),
            "failover(InMemoryBackend(namespace='spare'))",
        ),
        (retry(max_retries=0), "retry(max_retries=0, retry_delay=0.1)"),
        (on_store_error, "on_store_error"),
    ],
    ids=["fallback", "failover", "retry", "yours"],
)
async def test_a_handler_is_named_readably_in_the_log(
    caplog: pytest.LogCaptureFixture, on_error: Any, named: str
) -> None:
    """The log names a built-in handler as it was made, and one of yours by its qualified
    name: never as a function's `repr` with its address."""
    import logging

    store = FailingBackend(InMemoryBackend(namespace="primary"))
    uid = f"named-{named.split('(')[0]}"
    throttle = HTTPThrottle(uid, rate="5/min", backend=store, on_error=on_error, skip_handler=True)
    caplog.set_level(logging.WARNING, logger="traffik")
    with store.failing(BackendConnectionError("store down")):
        with pytest.raises(BackendConnectionError) if named.startswith("retry") else nullcontext():
            await throttle.hit(request())
        await throttle.stat(request())
    lines = [r.getMessage() for r in caplog.records if uid in r.getMessage()]
    assert len(lines) == 2, lines
    for line in lines:
        assert f"on_error={named}:" in line and "<function" not in line, line


async def test_a_failure_before_the_key_points_at_the_throttle_s_own_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    def identify(connection: Any) -> str:
        raise RuntimeError("user directory down")

    throttle = HTTPThrottle(
        "logged-identifier",
        rate="5/min",
        backend=InMemoryBackend(),
        identifier=identify,
        skip_handler=True,
    )
    caplog.set_level(logging.WARNING, logger="traffik")
    await throttle.hit(request())
    [line] = [r.getMessage() for r in caplog.records if "logged-identifier" in r.getMessage()]
    assert "RuntimeError: user directory down" in line and "identifier" in line, line
    assert "check that the store answers" not in line, line


@pytest.mark.parametrize("watched", [False, True], ids=["alone", "observed"])
async def test_a_hit_the_fallback_decided_gets_that_decisions_headers(watched: bool) -> None:
    """A hit whose store failed and that a fallback store admitted writes the rate-limit
    headers of the fallback's decision on the response, and marks the request admitted,
    whether or not an `on_decision` observer watches (which is told of the error)."""
    primary = FailingBackend(InMemoryBackend(namespace="primary"))
    primary.fail(BackendConnectionError)
    events: list[Any] = []
    throttle = HTTPThrottle(
        "t",
        rate=RATE,
        backend=primary,
        on_error=backend_fallback(InMemoryBackend(namespace="spare")),
        identifier=lambda connection: CLIENT,
        per_route=False,
        on_decision=events.append if watched else None,
    )
    for remaining in (1, 0):
        response = Response()
        admitted = await throttle.hit(request(), response=response)
        assert response.headers["ratelimit-policy"] == '"t";q=2;w=60'
        assert re.fullmatch(rf'"t";r={remaining};t=\d+', response.headers["ratelimit"])
        assert admitted.scope["state"][THROTTLED_STATE_KEY] == 0.0
    assert [event.outcome for event in events] == (["error", "error"] if watched else [])
    if watched:
        assert events[0].backend is primary
