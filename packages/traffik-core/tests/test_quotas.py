"""Quota contexts: hits queued in a block, applied as one all-or-nothing decision."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.requests import Request as StarletteRequest

from traffik import EXEMPTED, HTTPThrottle, InMemoryBackend, ManualClock, is_throttled
from traffik.exceptions import (
    BackendError,
    ConfigurationError,
    ConnectionThrottled,
    QuotaAppliedError,
    QuotaCancelledError,
    QuotaError,
)
from traffik.quotas import QuotaContext
from traffik.strategies import FixedWindow, SlidingWindowLog, TokenBucket
from traffik.testing import FailingBackend

pytestmark = pytest.mark.anyio


def request(client: str = "1.2.3.4") -> StarletteRequest:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/work",
        "headers": [],
        "query_string": b"",
        "client": (client, 5000),
    }
    return StarletteRequest(scope)


def exempted(connection: Any) -> Any:
    return EXEMPTED


@pytest.fixture
def backend() -> InMemoryBackend:
    return InMemoryBackend(namespace="quotas", clock=ManualClock(1_700_000_040.0))


async def left(throttle: HTTPThrottle, conn: Any) -> float:
    stat = await throttle.stat(conn)
    assert stat is not None
    return stat.hits_remaining


async def test_hits_count_on_exit_not_before(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:exit", rate="10/min", backend=backend)
    conn = request()
    async with api.quota(conn) as quota:
        quota(cost=2)
        quota.consume(cost=3)
        quota()  # the throttle's own cost, 1
        assert quota.queued_cost == 6
        assert "queued=1" in repr(quota)  # consecutive hits of one throttle add up
        assert await left(api, conn) == 10  # nothing taken yet
    assert quota.consumed and quota.admitted is True and quota.applied_cost == 6
    assert await left(api, conn) == 4


async def test_await_consume_as_traffik12_docs_write_it(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:await", rate="10/min", backend=backend)
    conn = request()
    async with api.quota(conn) as quota:
        assert await quota(cost=2) is quota
        assert await quota.consume(cost=1) is quota
    assert await left(api, conn) == 7


async def test_explicit_apply_then_exit_applies_nothing_more(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:apply", rate="10/min", backend=backend)
    conn = request()
    async with api.quota(conn, apply_on_exit=False) as quota:
        quota(cost=4)
        assert await quota.apply() is True
        assert await quota.apply() is True  # idempotent
        with pytest.raises(QuotaAppliedError):
            quota(cost=1)
        with pytest.raises(QuotaAppliedError):
            await quota.cancel()
    assert await left(api, conn) == 6
    async with api.quota(conn) as again:  # no lock was left behind (1.2 deadlocked here)
        again(cost=1)
    assert await left(api, conn) == 5


async def test_cancel_takes_nothing(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:cancel", rate="10/min", backend=backend)
    conn = request()
    async with api.quota(conn) as quota:
        quota(cost=5)
        await quota.cancel()
        await quota.discard()  # idempotent
        assert quota.cancelled and not quota.active
        with pytest.raises(QuotaCancelledError):
            quota(cost=1)
        with pytest.raises(QuotaCancelledError):
            await quota.apply()
    assert await left(api, conn) == 10


async def test_an_error_in_the_block_applies_only_when_asked(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:error", rate="10/min", backend=backend)
    conn = request()
    with pytest.raises(RuntimeError):
        async with api.quota(conn) as quota:
            quota(cost=3)
            raise RuntimeError("the work failed")
    assert await left(api, conn) == 10
    with pytest.raises(KeyError):
        async with api.quota(conn, apply_on_error=(KeyError,)) as quota:
            quota(cost=3)
            raise KeyError("counted")
    with pytest.raises(ValueError):
        async with api.quota(conn, apply_on_error=(KeyError,)) as quota:
            quota(cost=3)
            raise ValueError("not counted")
    with pytest.raises(ValueError):
        async with api.quota(conn, apply_on_error=True) as quota:
            quota(cost=1)
            raise ValueError("counted")
    assert await left(api, conn) == 6


@pytest.mark.parametrize("apply_on_error", [False, (KeyError,)])
async def test_a_block_that_raised_unapplied_closes_its_context(
    backend: InMemoryBackend, apply_on_error: Any
) -> None:
    """A top-level context whose block raised, its hits not applied, stayed open: a hit
    queued on it afterwards, and an `apply()`, charged the dropped hits after all. It is
    cancelled, as a failed nested context is."""
    api = HTTPThrottle("q:closed", rate="10/min", backend=backend)
    conn = request()
    with pytest.raises(RuntimeError):
        async with api.quota(conn, apply_on_error=apply_on_error) as quota:
            quota(cost=3)
            raise RuntimeError("the work failed")
    assert quota.cancelled and not quota.active and quota.queued_cost == 0
    with pytest.raises(QuotaCancelledError):
        quota(cost=1)
    with pytest.raises(QuotaCancelledError):
        quota.nested()
    with pytest.raises(QuotaCancelledError):
        await quota.apply()
    assert await left(api, conn) == 10
    async with api.quota(conn, apply_on_exit=False) as kept:  # (no error: left to you)
        kept(cost=2)
    assert kept.active and await kept.apply() is True and await left(api, conn) == 8


async def test_a_cancelled_block_closes_its_context(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:cut", rate="10/min", backend=backend)
    conn = request()
    entered = asyncio.Event()
    quota = api.quota(conn)

    async def work() -> None:
        async with quota:
            quota(cost=4)
            entered.set()
            await asyncio.Event().wait()  # the client leaves here

    task = asyncio.ensure_future(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert quota.cancelled
    with pytest.raises(QuotaCancelledError):
        await quota.apply()
    assert await left(api, conn) == 10


async def test_nested_contexts_merge_into_the_parent(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:nested", rate="10/min", backend=backend)
    conn = request()
    async with api.quota(conn) as parent:
        parent(cost=1)
        async with parent.nested() as child:
            child(cost=2)
            assert child.is_nested and child.depth == 1 and child.owner is api
            assert parent.queued_cost == 3  # the child's hits count as queued
        assert child.consumed  # merged, not applied
        assert await left(api, conn) == 10
        async with parent.quota() as dropped:
            dropped(cost=4)
            await dropped.cancel()
    assert await left(api, conn) == 7  # 1 + 2, not the cancelled 4


async def test_a_failed_child_hands_nothing_to_its_parent(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:failed-child", rate="10/min", backend=backend)
    conn = request()
    async with api.quota(conn) as parent:
        parent(cost=1)
        with pytest.raises(RuntimeError):
            async with parent.nested() as child:
                child(cost=5)
                raise RuntimeError("this step failed")
        assert child.cancelled
        async with parent.nested(apply_on_exit=False) as later:
            later(cost=2)  # not merged on exit, but the parent takes it when it applies
    assert await left(api, conn) == 7


async def test_a_child_apply_decides_at_once_and_detaches(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:detach", rate="10/min", backend=backend)
    conn = request()
    async with api.quota(conn) as parent:
        parent(cost=1)
        child = parent.nested()
        child(cost=2)
        assert await child.apply() is True
        assert await left(api, conn) == 8  # applied now, on its own
        assert parent.queued_cost == 1  # and no longer the parent's
        explicit = parent.nested()
        explicit(cost=3)
        explicit.merge()
        assert parent.queued_cost == 4
        with pytest.raises(QuotaAppliedError):
            explicit.merge()
    assert await left(api, conn) == 4
    with pytest.raises(QuotaError):
        QuotaContext(conn, owner=api).merge()  # no parent


async def test_a_parent_folds_children_it_was_not_told_about(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:fold", rate="10/min", backend=backend)
    conn = request()
    async with api.quota(conn) as parent:
        parent.nested()(cost=2)  # never entered, never merged: folded at apply
    assert await left(api, conn) == 8


async def test_throttles_are_applied_all_or_nothing(backend: InMemoryBackend) -> None:
    """A refusal by any queued throttle takes nothing from the others (a refusing fixed
    window included), and is answered by
    the first refusing throttle's handler (429)."""
    small = HTTPThrottle("q:small", rate="3/min", backend=backend, strategy=SlidingWindowLog())
    large = HTTPThrottle("q:large", rate="100/min", backend=backend)
    conn = request()
    async with QuotaContext(conn) as quota:
        quota(large, cost=10)
        quota(small, cost=2)
    assert (await left(large, conn), await left(small, conn)) == (90, 1)
    with pytest.raises(ConnectionThrottled) as refused:
        async with QuotaContext(conn) as quota:
            quota(large, cost=10)
            quota(small, cost=2)
    assert refused.value.status_code == 429
    assert quota.consumed and quota.admitted is False and quota.applied_cost == 0
    assert (await left(large, conn), await left(small, conn)) == (90, 1)  # nothing taken


async def test_hits_of_one_bucket_are_one_item_whatever_the_order(
    backend: InMemoryBackend,
) -> None:
    api = HTTPThrottle("q:bucket", rate="3/min", backend=backend, strategy=TokenBucket())
    other = HTTPThrottle("q:other", rate="10/min", backend=backend)
    conn = request()
    quota = QuotaContext(conn)
    quota(api, cost=2)
    quota(other, cost=1)
    quota(api, cost=2)  # not consecutive: a second entry, but the same bucket
    with pytest.raises(ConnectionThrottled):
        await quota.apply()  # 4 > 3: refused, though each entry alone would pass
    assert await left(api, conn) == 3


@pytest.mark.parametrize("strategy", [TokenBucket(), FixedWindow()], ids=["TokenBucket", "Fixed"])
async def test_hits_of_one_bucket_with_different_settings_are_charged_together(
    backend: InMemoryBackend, strategy: Any
) -> None:
    api = HTTPThrottle("q:settings", rate="5/min", backend=backend, strategy=strategy)
    conn = request()
    with pytest.raises(ConnectionThrottled):
        async with api.quota(conn) as quota:
            quota(cost=3, context={"step": "a"})
            quota(cost=3, skip_handler=True)  # 6 > 5, whatever the context and handler
    assert quota.admitted is False and quota.applied_cost == 0
    conn = request("5.6.7.8")  # (a refusing fixed window counts what it refused)
    async with api.quota(conn) as quota:
        quota(cost=2, context={"step": "a"})
        quota(cost=2)
    assert quota.applied_cost == 4
    with pytest.raises(ConnectionThrottled):  # 4 + 2 > 5
        async with api.quota(conn) as quota:
            quota(cost=1, context={"step": "a"})
            quota(cost=1)


async def test_applied_cost_is_what_was_taken(backend: InMemoryBackend) -> None:
    watched = HTTPThrottle("q:shadow", rate="2/min", backend=backend, shadow=True)
    exempt = HTTPThrottle("q:exempt", rate="2/min", backend=backend, identifier=exempted)
    enforced = HTTPThrottle("q:enforced", rate="9/min", backend=backend)
    conn = request()
    async with watched.quota(conn) as quota:
        quota(cost=5)  # a shadow throttle would refuse: admitted, nothing taken
    assert (quota.admitted, quota.applied_cost, await left(watched, conn)) == (True, 0, 2)
    async with exempt.quota(conn) as quota:
        quota(cost=5)
    assert (quota.admitted, quota.applied_cost) == (True, 0)
    async with QuotaContext(conn) as quota:
        quota(enforced, cost=3)
        quota(watched, cost=1)
        quota(exempt, cost=1)
    assert (quota.admitted, quota.applied_cost) == (True, 4)
    assert (await left(enforced, conn), await left(watched, conn)) == (6, 1)


async def test_a_refusal_the_handler_lets_through_settles_the_context(
    backend: InMemoryBackend,
) -> None:
    api = HTTPThrottle("q:skip", rate="2/min", backend=backend)
    conn = request()
    async with api.quota(conn) as quota:
        quota(cost=3, skip_handler=True)
    assert quota.admitted is False and is_throttled(conn)
    assert await quota.apply() is False


async def test_queueing_errors(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:errors", rate="2/min", backend=backend)
    unbound = QuotaContext(request())
    with pytest.raises(ValueError, match="no throttle"):
        unbound.consume(cost=1)
    with pytest.raises(ValueError, match="no throttle"):
        await unbound.stat()
    with pytest.raises(ConfigurationError):
        unbound.consume(api, cost=-1)
    assert unbound.consume(api, cost=0).queued_cost == 0
    with pytest.warns(DeprecationWarning, match="no lock"):
        api.quota(request(), lock="user:1")
    api.quota(request(), lock=True)  # the 1.2 default: nothing to say


async def test_check_and_stat(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:check", rate="3/min", backend=backend)
    other = HTTPThrottle("q:check2", rate="1/min", backend=backend)
    conn = request()
    async with api.quota(conn) as quota:
        assert await quota.check() and await quota.check(cost=3)
        assert not await quota.check(cost=4)
        stat = await quota.stat()
        assert stat is not None and stat.hits_remaining == 3
        quota(cost=2)
    unbound = QuotaContext(conn)
    unbound(api, cost=1)
    unbound(other, cost=1)
    assert await unbound.check()  # every queued hit would pass now
    unbound(api, cost=1)
    assert not await unbound.check(api, cost=2)


async def test_a_failed_apply_is_retried_whole(backend: InMemoryBackend) -> None:
    failing = FailingBackend(backend)
    api = HTTPThrottle("q:retry", rate="5/min", backend=failing, on_error="raise")
    conn = request()
    failing.fail(BackendError("blip"), times=1)
    async with api.quota(conn) as quota:
        quota(cost=2, retry=1, retry_on=BackendError, base_delay=0.001)
    assert failing.failures == 1 and quota.admitted is True
    assert await left(api, conn) == 3
    failing.fail(BackendError("down"), times=2)
    with pytest.raises(BackendError):
        async with api.quota(conn) as quota:
            quota(cost=1, retry=1, retry_on=lambda info: info["attempt"] < 5, base_delay=0.001)
    assert quota.active  # nothing was decided: it may be applied again
    assert await quota.apply() is True


async def test_concurrent_contexts_never_over_admit(backend: InMemoryBackend) -> None:
    """Fifty contexts applying at once, each taking 1 from two throttles: exactly the five
    the tighter one allows pass, and the looser one is charged for those five only."""
    tight = HTTPThrottle("q:tight", rate="5/min", backend=backend)
    loose = HTTPThrottle("q:loose", rate="100/min", backend=backend)
    conn = request()

    async def work() -> bool:
        quota = QuotaContext(request())
        quota(loose, cost=1)
        quota(tight, cost=1, skip_handler=True)
        return await quota.apply()

    results = await asyncio.gather(*(work() for _ in range(50)))
    assert sum(results) == 5
    assert (await left(tight, conn), await left(loose, conn)) == (0, 95)


async def test_in_a_fastapi_endpoint(backend: InMemoryBackend) -> None:
    api = HTTPThrottle("q:app", rate="5/min", backend=backend, strategy=TokenBucket())
    app = FastAPI()

    @app.post("/batch/{size}")
    async def batch(size: int, request: Request) -> dict[str, int]:
        async with api.quota(request) as quota:
            for _ in range(size):
                quota(cost=1)
        return {"size": size}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        codes = [(await http.post(f"/batch/{n}")).status_code for n in (3, 3, 2)]
    assert codes == [200, 429, 200]
