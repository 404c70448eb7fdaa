"""What a quota context takes: `apply_on_error`, costs and throttles checked where they are
given; and an unbound `check()` that answers as `apply()` decides, on every store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle, InMemoryBackend
from traffik.backends.base import ThrottleBackend
from traffik.exceptions import BackendError, ConfigurationError
from traffik.quotas import QuotaContext
from traffik.strategies import FixedWindow, SlidingWindowCounter, TokenBucket
from traffik.testing import FailingBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
async def memory() -> AsyncIterator[InMemoryBackend]:
    backend = InMemoryBackend(namespace="quota-inputs")
    async with backend():
        yield backend


def connection() -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("1.2.3.4", 1)}
    return Request(scope)


async def left(throttle: HTTPThrottle) -> float:
    stat = await throttle.stat(connection())
    assert stat is not None
    return stat.hits_remaining


# -- apply_on_error ----------------------------------------------------------------------------

NOT_APPLY_ON_ERROR = [
    "TimeoutError",
    [TimeoutError],
    TimeoutError("x"),
    (TimeoutError, "KeyError"),
    (int,),
    int,
    None,
    1,
]


@pytest.mark.parametrize("bad", NOT_APPLY_ON_ERROR, ids=repr)
async def test_apply_on_error_is_refused_when_it_is_not_a_documented_form(
    memory: InMemoryBackend, bad: Any
) -> None:
    api = HTTPThrottle("inputs:aoe", rate="10/min", backend=memory)
    makers = [
        lambda: QuotaContext(connection(), apply_on_error=bad),
        lambda: api.quota(connection(), apply_on_error=bad),
    ]
    if bad is not None:  # (a child's None inherits its parent's)
        makers.append(lambda: api.quota(connection()).nested(apply_on_error=bad))
    for make in makers:
        with pytest.raises(ConfigurationError) as refused:
            make()
        message = str(refused.value)
        assert repr(bad) in message and "True, False" in message and "tuple" in message


@pytest.mark.parametrize(
    "good", [True, False, KeyError, asyncio.CancelledError, (KeyError, ValueError), ()], ids=repr
)
async def test_apply_on_error_takes_its_documented_forms(
    memory: InMemoryBackend, good: Any
) -> None:
    api = HTTPThrottle("inputs:aoe-ok", rate="10/min", backend=memory)
    with pytest.raises(KeyError):
        async with api.quota(connection(), apply_on_error=good) as quota:
            quota(cost=1)
            raise KeyError("the work failed")
    assert quota.apply_on_error == good
    applied = good is True or good is KeyError or good == (KeyError, ValueError)
    assert await left(api) == (9 if applied else 10)


async def test_a_bad_apply_on_error_set_later_is_refused_and_the_block_error_kept(
    memory: InMemoryBackend,
) -> None:
    api = HTTPThrottle("inputs:aoe-later", rate="10/min", backend=memory)
    quota = api.quota(connection())
    with pytest.raises(ConfigurationError, match="'TimeoutError'"):
        quota.apply_on_error = "TimeoutError"  # type: ignore[assignment]
    assert quota.apply_on_error is False
    with pytest.raises(KeyError):  # the block's own error, not one of traffik's
        async with quota:
            quota(cost=1)
            raise KeyError("the work failed")
    assert quota.cancelled and quota.queued_cost == 0
    assert await left(api) == 10


# -- costs and throttles -----------------------------------------------------------------------


@pytest.mark.parametrize("cost", [-1, 1.5, "2", True], ids=repr)
async def test_check_refuses_a_cost_as_consume_does(memory: InMemoryBackend, cost: Any) -> None:
    api = HTTPThrottle("inputs:cost", rate="10/min", backend=memory)
    bound = api.quota(connection())
    unbound = QuotaContext(connection())
    unbound(api, cost=1)
    for check in (
        lambda: bound.check(cost=cost),
        lambda: unbound.check(api, cost=cost),
        lambda: unbound.check(cost=cost),
    ):
        with pytest.raises(ConfigurationError, match=f"cost={cost!r}"):
            await check()
    with pytest.raises(ConfigurationError, match=f"cost={cost!r}"):
        bound(cost=cost)


@pytest.mark.parametrize("given", ["api", 3, object()], ids=["str", "int", "object"])
async def test_a_hit_of_something_not_a_throttle_is_refused_when_queued(
    memory: InMemoryBackend, given: Any
) -> None:
    api = HTTPThrottle("inputs:throttle", rate="10/min", backend=memory)
    for quota in (QuotaContext(connection()), api.quota(connection())):
        with pytest.raises(TypeError) as refused:
            quota(given, cost=1)
        message = str(refused.value)
        assert repr(given) in message and "HTTPThrottle or WebSocketThrottle" in message
        assert quota.queued_cost == 0 and await quota.apply() is True
    assert await left(api) == 10


# -- an unbound check answers as apply decides -------------------------------------------------


@pytest.mark.parametrize(
    "strategy", [TokenBucket(), FixedWindow(), SlidingWindowCounter()], ids=repr
)
async def test_an_unbound_check_sums_the_hits_on_one_bucket_as_apply_does(
    clocked_backend: ThrottleBackend, strategy: Any
) -> None:
    """Hits of one throttle with different contexts and `skip_handler` land on one bucket:
    `apply()` decides them as one item, their costs summed; `check()` says so first."""
    backend = clocked_backend
    api = HTTPThrottle("inputs:sum", rate="5/min", backend=backend, strategy=strategy)
    other = HTTPThrottle("inputs:other", rate="5/min", backend=backend, strategy=strategy)

    over = QuotaContext(connection())
    over(api, cost=3, context={"step": "a"}, skip_handler=True)
    over(api, cost=3, context={"step": "b"}, skip_handler=True)
    assert await over.check() is False
    assert await over.apply() is False
    assert await left(api) == 5

    fits = QuotaContext(connection())
    fits(api, cost=2, context={"step": "a"})
    fits(other, cost=5)
    fits(api, cost=3, context={"step": "b"}, skip_handler=True)
    assert await fits.check() is True
    assert await fits.apply() is True
    assert (await left(api), await left(other)) == (0, 0)


@pytest.mark.parametrize("policy", ["allow", "throttle", "raise"])
async def test_an_unbound_check_on_a_failing_store_answers_by_on_error(
    memory: InMemoryBackend, policy: str
) -> None:
    failing = FailingBackend(memory)
    api = HTTPThrottle(
        "inputs:failing", rate="5/min", backend=failing, strategy=TokenBucket(), on_error=policy
    )
    quota = QuotaContext(connection())
    quota(api, cost=1, context={"step": "a"})
    quota(api, cost=1, context={"step": "b"})
    with failing.failing(BackendError("store down")):
        if policy == "raise":
            with pytest.raises(BackendError, match="store down"):
                await quota.check()
        else:
            assert await quota.check() is (policy == "allow")
    assert await quota.check() is True
