"""Shadow mode, decision events (`on_decision`, process-wide observers) and the memory of
refused clients, on real apps and real backends (in memory, SQLite)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from traffik import HTTPThrottle, InMemoryBackend
from traffik.backends.base import ThrottleBackend
from traffik.backends.sqlite import SQLiteBackend
from traffik.clock import ManualClock
from traffik.config import THROTTLED_STATE_KEY
from traffik.events import DecisionEvent, add_observer
from traffik.exceptions import BackendError
from traffik.rates import Rate
from traffik.refusals import RefusedClients
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, Strategy, TokenBucket
from traffik.testing import FailingBackend

pytestmark = pytest.mark.anyio


def app_for(*throttles: HTTPThrottle) -> FastAPI:
    app = FastAPI()
    for index, throttle in enumerate(throttles):

        @app.get(f"/r{index}", dependencies=[Depends(throttle)])
        async def route() -> dict[str, bool]:
            return {"ok": True}

    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.fixture
def events() -> Iterator[list[DecisionEvent]]:
    seen: list[DecisionEvent] = []
    remove = add_observer(seen.append)
    yield seen
    remove()


async def test_a_shadow_throttle_never_refuses_and_reports_what_its_twin_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(1_000.0)
    backend = InMemoryBackend(clock=clock)
    seen: list[DecisionEvent] = []
    enforcing = HTTPThrottle("enforcing", rate="3/10s", backend=backend)
    shadow = HTTPThrottle(
        "shadow", rate="3/10s", backend=backend, shadow=True, on_decision=seen.append
    )
    rng = random.Random(7)
    enforced: list[int] = []
    watched: list[int] = []
    caplog.set_level(logging.INFO, logger="traffik")
    async with client(app_for(enforcing, shadow)) as http:
        for _ in range(60):
            clock.advance(ms=rng.choice([10, 200, 900, 2500]))
            enforced.append((await http.get("/r0")).status_code)
            response = await http.get("/r1")
            watched.append(response.status_code)
            assert "ratelimit" not in response.headers  # a shadow throttle writes no headers
    refusals = enforced.count(429)
    assert refusals > 10  # the sequence does go over the limit
    assert set(watched) == {200}
    outcomes = [event.outcome for event in seen]
    assert outcomes.count("shadow_refused") == refusals
    assert outcomes.count("allowed") == 60 - refusals
    assert [e.outcome == "shadow_refused" for e in seen] == [s == 429 for s in enforced]
    lines = [r for r in caplog.records if "would refuse" in r.getMessage()]
    assert lines and lines[0].levelno == logging.INFO
    assert "'shadow'" in lines[0].getMessage() and "3/10s" in lines[0].getMessage()


async def test_one_switch_on_the_backend_shadows_every_throttle_of_the_app() -> None:
    backend = InMemoryBackend(shadow=True)
    quiet = HTTPThrottle("quiet", rate="1/min", backend=backend)
    enforced = HTTPThrottle("enforced", rate="1/min", backend=backend, shadow=False)
    async with client(app_for(quiet, enforced)) as http:
        first = await http.get("/r0")
        assert "ratelimit" not in first.headers
        assert [(await http.get("/r0")).status_code for _ in range(2)] == [200, 200]
        assert [(await http.get("/r1")).status_code for _ in range(3)] == [200, 429, 429]
        assert first.status_code == 200


async def test_a_shadow_rule_of_the_middleware() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware

    backend = InMemoryBackend()
    watched = MiddlewareThrottle(
        HTTPThrottle("mw", rate="1/min", backend=backend), path="/w", shadow=True
    )
    enforced = MiddlewareThrottle(HTTPThrottle("mw2", rate="1/min", backend=backend), path="/e")

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/w", ok), Route("/e", ok)])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[watched, enforced])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert [(await http.get("/w")).status_code for _ in range(3)] == [200, 200, 200]
        assert [(await http.get("/e")).status_code for _ in range(2)] == [200, 429]


async def test_every_outcome_is_an_event(events: list[DecisionEvent]) -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = HTTPThrottle("api", rate="2/min", backend=backend, on_error="allow")
    async with client(app_for(throttle)) as http:
        statuses = [(await http.get("/r0")).status_code for _ in range(3)]
        with backend.failing(BackendError("store down")):
            statuses.append((await http.get("/r0")).status_code)
    assert statuses == [200, 200, 429, 200]
    assert [e.outcome for e in events] == ["allowed", "allowed", "refused", "error"]
    assert [e.remaining for e in events[:3]] == [1, 0, 0]
    assert events[2].wait_ms > 0 and str(events[2].rate) == "2/min"
    assert isinstance(events[3].error, BackendError) and events[3].key is not None
    assert all(e.throttle is throttle and e.backend is backend for e in events)
    assert all(e.duration_s >= 0 for e in events)


async def test_an_observer_that_raises_never_breaks_a_request(
    events: list[DecisionEvent],
) -> None:
    def broken(event: DecisionEvent) -> None:
        raise RuntimeError("observer bug")

    throttle = HTTPThrottle("api", rate="5/min", backend=InMemoryBackend(), on_decision=broken)
    async with client(app_for(throttle)) as http:
        assert (await http.get("/r0")).status_code == 200
    assert [e.outcome for e in events] == ["allowed"]  # the process-wide observer still ran


async def test_an_observer_that_removes_itself_leaves_the_next_its_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A one-shot observer removes itself during the event: every observer added when the
    # event began still sees it, and one added during it sees the next event only.
    seen: list[str] = []
    late: list[DecisionEvent] = []
    removals: list[Any] = []

    def once(event: DecisionEvent) -> None:
        seen.append("once")
        removals[0]()
        removals.append(add_observer(late.append))

    removals.append(add_observer(once))
    remove_after = add_observer(lambda event: seen.append("after"))
    try:
        throttle = HTTPThrottle("api", rate="5/min", backend=InMemoryBackend())
        async with client(app_for(throttle)) as http:
            assert (await http.get("/r0")).status_code == 200
            assert seen == ["once", "after"] and late == []
            assert (await http.get("/r0")).status_code == 200
        assert seen == ["once", "after", "after"] and len(late) == 1
    finally:
        remove_after()
        removals[-1]()


async def test_a_raising_observer_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: DecisionEvent) -> None:
        raise RuntimeError("observer bug")

    remove = add_observer(broken)
    caplog.set_level(logging.WARNING, logger="traffik")
    try:
        throttle = HTTPThrottle("api", rate="5/min", backend=InMemoryBackend())
        async with client(app_for(throttle)) as http:
            assert (await http.get("/r0")).status_code == 200
    finally:
        remove()
    [record] = [r for r in caplog.records if "observer" in r.getMessage()]
    assert record.exc_info is not None and "broken" in caplog.text.split("Traceback", 1)[1]


async def test_an_error_a_fallback_answered_is_the_failing_store_s(
    events: list[DecisionEvent],
) -> None:
    from traffik.error_handlers import fallback

    primary = FailingBackend(InMemoryBackend(namespace="primary"))
    spare = InMemoryBackend(namespace="spare")
    throttle = HTTPThrottle("api", rate="2/min", backend=primary, on_error=fallback(spare))
    async with client(app_for(throttle)) as http:
        with primary.failing(BackendError("store down")):
            assert (await http.get("/r0")).status_code == 200
    [event] = events
    assert event.outcome == "error" and isinstance(event.error, BackendError)
    assert event.backend is primary  # (traffik_backend_errors_total{backend="FailingBackend"})


async def test_throttles_decided_as_one_log_an_outage_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from traffik import throttled

    store = FailingBackend(InMemoryBackend())
    first = HTTPThrottle("as-one-a", rate="5/min", backend=store, on_error="allow")
    second = HTTPThrottle("as-one-b", rate="5/min", backend=store, on_error="allow")
    app = FastAPI()

    @app.get("/both")
    @throttled(first, second)
    async def both(request: Request) -> dict[str, bool]:
        return {"ok": True}

    caplog.set_level(logging.INFO, logger="traffik")
    with store.failing(BackendError("store down")):
        async with client(app) as http:
            assert [(await http.get("/both")).status_code for _ in range(20)] == [200] * 20
    lines = [r.getMessage() for r in caplog.records if r.name == "traffik"]
    assert len(lines) <= 3, lines  # (one per kind: the step, and each throttle's on_error)
    assert all(repr(store) in line for line in lines), lines


async def test_an_async_observer_is_named_in_the_log_not_silently_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Observers run synchronously: a coroutine function's coroutine would never run (and
    Python would only warn at garbage collection). It is closed and the observer named."""
    import warnings

    async def exporter(event: DecisionEvent) -> None:  # (a mistake: observers are sync)
        pass

    throttle = HTTPThrottle(
        "async-observer", rate="5/min", backend=InMemoryBackend(), on_decision=exporter
    )
    caplog.set_level(logging.WARNING, logger="traffik")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ("coroutine ... was never awaited" would be one)
        async with client(app_for(throttle)) as http:
            assert [(await http.get("/r0")).status_code for _ in range(3)] == [200] * 3
        import gc

        gc.collect()
    lines = [r.getMessage() for r in caplog.records if "exporter" in r.getMessage()]
    assert len(lines) == 1 and "coroutine" in lines[0] and "synchronous" in lines[0], lines
    with pytest.raises(TypeError, match="exporter"):
        add_observer(exporter)


async def test_each_observer_that_raises_is_named(caplog: pytest.LogCaptureFixture) -> None:
    """Two observers failing the same way (an exporter and the app's own) are each named: one
    must not hide the other for the log's interval."""

    def exporter(event: DecisionEvent) -> None:
        raise ValueError("sink full")

    def audit(event: DecisionEvent) -> None:
        raise ValueError("audit table gone")

    throttle = HTTPThrottle(
        "two-observers", rate="5/min", backend=InMemoryBackend(), on_decision=audit
    )
    caplog.set_level(logging.WARNING, logger="traffik")
    remove = add_observer(exporter)
    try:
        async with client(app_for(throttle)) as http:
            assert [(await http.get("/r0")).status_code for _ in range(3)] == [200] * 3
    finally:
        remove()
    lines = [r.getMessage() for r in caplog.records if "observer" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "audit table gone" in lines[0] and "sink full" in lines[1], lines


def test_on_decision_must_be_callable() -> None:
    with pytest.raises(Exception, match="on_decision"):
        HTTPThrottle("api", rate="5/min", backend=InMemoryBackend(), on_decision="log")


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("strategy", [cls() for cls in BUILTIN_STRATEGIES], ids=repr)
async def test_decisions_made_in_place_equal_the_strategy_s_own(
    strategy: Strategy, store: str, tmp_path: Path
) -> None:
    """The hot path (`decide_now`, in memory and on SQLite) admits and waits exactly as
    `strategy.decide` does in memory."""
    clock = ManualClock(5_000.0)
    slow = InMemoryBackend(clock=clock)
    fast: ThrottleBackend = (
        InMemoryBackend(clock=clock)
        if store == "memory"
        else SQLiteBackend(tmp_path / "fast.db", clock=clock, cache_refusals=False)
    )
    throttle = HTTPThrottle("api", rate="4/3s", backend=fast, strategy=strategy)
    rate = Rate.parse("4/3s")
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("1.2.3.4", 1)}
    request = Request(scope)
    rng = random.Random(3)
    for _ in range(80):
        clock.advance(ms=rng.choice([1, 50, 400, 1200]))
        await throttle.hit(request, skip_handler=True)
        expected = await strategy.decide(throttle.key_for(request, "1.2.3.4", {}), rate, slow, 1)
        assert request.scope["state"][THROTTLED_STATE_KEY] == (
            0.0 if expected.allowed else expected.wait_ms
        ), strategy
    probe = fast.get_key("probe")
    assert fast.decide_now(probe, strategy, rate, 1, throttle._in_place) is not None, "in place"
    await fast.close()


class CountingSQLite(SQLiteBackend):
    """A real SQLite store that counts the decisions it is asked for."""

    asked = 0

    async def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return await super().evaluate(*args, **kwargs)

    async def increment_with_ttl(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return await super().increment_with_ttl(*args, **kwargs)


@pytest.mark.parametrize("remember", [True, False])
async def test_a_refused_client_is_refused_again_without_the_store(
    tmp_path: Path, remember: bool
) -> None:
    clock = ManualClock(10_000.0)
    backend = CountingSQLite(
        f"sqlite:///{tmp_path / 'refusals.db'}", clock=clock, cache_refusals=remember
    )
    throttle = HTTPThrottle("api", rate="5/min", backend=backend, strategy=FixedWindow())
    async with backend(), client(app_for(throttle)) as http:
        statuses = [(await http.get("/r0")).status_code for _ in range(200)]
        assert statuses == [200] * 5 + [429] * 195
        assert backend.asked == (6 if remember else 200)
        waits = {int((await http.get("/r0")).headers["retry-after"])}
        clock.advance(59.0)
        waits.add(int((await http.get("/r0")).headers["retry-after"]))
        assert waits == {60, 1}  # the remembered wait runs down with the clock
        clock.advance(1.0)
        assert (await http.get("/r0")).status_code == 200  # and then the store decides again
        await backend.reset()


async def test_reset_and_refunds_forget_remembered_refusals(tmp_path: Path) -> None:
    backend = SQLiteBackend(f"sqlite:///{tmp_path / 'forget.db'}")
    throttle = HTTPThrottle("api", rate="1/min", backend=backend)
    async with backend(), client(app_for(throttle)) as http:
        assert [(await http.get("/r0")).status_code for _ in range(2)] == [200, 429]
        assert len(backend.refusals or ()) == 1
        await throttle.reset("127.0.0.1", path="/r0")
        assert (await http.get("/r0")).status_code == 200
        assert (await http.get("/r0")).status_code == 429
        await backend.clear()
        assert len(backend.refusals or ()) == 0
        assert (await http.get("/r0")).status_code == 200


@pytest.mark.parametrize("how", ["connection", "identifier"])
async def test_a_refund_whose_caller_left_still_forgets_remembered_refusals(
    tmp_path: Path, how: str
) -> None:
    # A store that runs a refund to its end once begun (Memcached's `refund_all`) gives the
    # units back after its caller was cancelled: the refusal remembered for that client
    # must go too, else the store's answer is not asked until the memory runs out.
    import asyncio

    backend = SQLiteBackend(f"sqlite:///{tmp_path / 'left.db'}")
    # (a bucket: a fixed window would count the refused hit, and stay full after the refund)
    throttle = HTTPThrottle("api", rate="1/min", backend=backend, strategy=TokenBucket())
    own = backend.refund_all

    async def refund_then_cancelled(items: Any) -> None:
        await own(items)  # (the store took it)
        raise asyncio.CancelledError  # (and the caller had left)

    seen: list[Request] = []
    app = FastAPI()

    @app.get("/r0", dependencies=[Depends(throttle)])
    async def route(request: Request) -> dict[str, bool]:
        seen.append(request)
        return {"ok": True}

    async with backend(), client(app) as http:
        assert [(await http.get("/r0")).status_code for _ in range(2)] == [200, 429]
        assert len(backend.refusals or ()) == 1
        backend.refund_all = refund_then_cancelled  # type: ignore[method-assign]
        with pytest.raises(asyncio.CancelledError):
            if how == "connection":
                await throttle.refund(seen[0])
            else:
                await throttle.refund("127.0.0.1", path="/r0")
        assert len(backend.refusals or ()) == 0
        assert (await http.get("/r0")).status_code == 200


def test_the_memory_of_refusals_is_bounded_and_exact_about_costs() -> None:
    from traffik.decision import Decision

    rates = (Rate.parse("5/min"),)
    memory = RefusedClients(max_keys=4)
    refused = Decision(False, 1000, 0, 1000, 5)
    memory.remember("a", rates, 2, refused, now_ms=0)
    assert memory.check("a", rates, 1, now_ms=10) is None  # a cheaper hit may still pass
    # A dearer one waits longer than the refusal said, by what only the store knows.
    assert memory.check("a", rates, 3, now_ms=400) is None
    again = memory.check("a", rates, 2, now_ms=400)
    assert again is not None and again.wait_ms == 600 and not again.allowed
    assert memory.check("a", (Rate.parse("9/min"),), 2, now_ms=400) is None
    assert memory.check("a", rates, 2, now_ms=1000) is None and len(memory) == 0
    for key in "bcdefgh":
        memory.remember(key, rates, 1, refused, now_ms=0)
    assert len(memory) <= 4


async def test_quota_contexts_and_combined_throttles_are_events(
    events: list[DecisionEvent],
) -> None:
    from traffik.fastapi import throttled

    backend = InMemoryBackend()
    outer = HTTPThrottle("quota", rate="3/min", backend=backend)
    inner = HTTPThrottle("quota-inner", rate="10/min", backend=backend)
    first = HTTPThrottle("first", rate="2/min", backend=backend)
    second = HTTPThrottle("second", rate="5/min", backend=backend)
    app = FastAPI()

    @app.get("/quota")
    async def quota_route(request: Request) -> dict[str, bool]:
        async with outer.quota(request) as quota:
            quota(cost=2)
            quota(inner, cost=5)
        return {"ok": True}

    @app.get("/both")
    @throttled(first, second)
    async def both(request: Request) -> dict[str, bool]:
        return {"ok": True}

    async with client(app) as http:
        assert [(await http.get("/quota")).status_code for _ in range(2)] == [200, 429]
        quota_events = [(e.throttle.uid, e.outcome, e.remaining) for e in events]
        events.clear()
        assert [(await http.get("/both")).status_code for _ in range(3)] == [200, 200, 429]
    assert quota_events == [
        ("quota", "allowed", 1),
        ("quota-inner", "allowed", 5),
        ("quota", "refused", 0),  # refused as one step: nothing decided for the other
    ]
    assert [(e.throttle.uid, e.outcome) for e in events] == [
        ("first", "allowed"),
        ("second", "allowed"),
        ("first", "allowed"),
        ("second", "allowed"),
        ("first", "refused"),
    ]
    assert all(e.key is not None and "127.0.0.1" in e.key for e in events)


async def test_a_refund_cancelled_before_the_store_was_asked_can_be_asked_again() -> None:
    # `refund(request)` awaits the identifier before it asks the store: cancelled there, it
    # gave nothing back and left the request marked as refunded, so a later `refund` gave
    # nothing either.
    import asyncio

    release = asyncio.Event()
    waiting = asyncio.Event()
    slow = False

    async def identifier(connection: Any) -> str:
        if slow:
            waiting.set()
            await release.wait()
        return "client"

    throttle = HTTPThrottle(
        "api",
        rate="2/min",
        backend=InMemoryBackend(),
        identifier=identifier,
        strategy=TokenBucket(),
    )
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    await throttle.hit(request)
    slow = True
    refund = asyncio.ensure_future(throttle.refund(request))
    await waiting.wait()
    refund.cancel()
    with pytest.raises(asyncio.CancelledError):
        await refund
    slow = False
    await throttle.refund(request)
    stat = await throttle.stat(request)
    assert stat is not None and stat.hits_remaining == 2
