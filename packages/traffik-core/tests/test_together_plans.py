"""Several throttles decided as one from a plan made once per client (`traffik.together._plan`
and `InMemoryBackend.items_decider`): the same answers, headers and stored states as the
step made anew and awaited each time (`evaluate_all`), and a plan that follows its throttles
when they change."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle, InMemoryBackend, ManualClock, ThrottleMiddleware, together
from traffik.decision import Decision
from traffik.middleware import MiddlewareThrottle
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, TokenBucket
from traffik.strategies.steps import Combined, combine

pytestmark = pytest.mark.anyio


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


class Unplanned(HTTPThrottle):
    """A throttle making its items its own way: its groups are never planned (made anew on
    every hit)."""

    def items(self, *args: Any) -> Any:
        return super().items(*args)


def _app(backend: InMemoryBackend, strategies: list[Any], kind: type[HTTPThrottle]) -> Starlette:
    """Four middleware throttles on one route: two strategies, a throttle of two rates, one
    sharing the first one's uid and rate (one bucket: their costs summed), and costs above
    one."""
    first, second = strategies
    throttles = [
        MiddlewareThrottle(kind("g:a", "6/s", backend=backend, strategy=first)),
        MiddlewareThrottle(kind("g:b", "4/s;9/min", backend=backend, strategy=second), cost=2),
        MiddlewareThrottle(kind("g:a", "6/s", backend=backend, strategy=first)),
        MiddlewareThrottle(kind("g:c", "20/min", backend=backend, strategy=FixedWindow()), cost=3),
    ]
    middleware = [Middleware(ThrottleMiddleware, middleware_throttles=throttles, sort=None)]
    return Starlette(routes=[Route("/r", ok)], middleware=middleware)


def _answer(response: httpx.Response) -> tuple[Any, ...]:
    headers = sorted(
        (name, value)
        for name, value in response.headers.items()
        if name.startswith("ratelimit") or name == "retry-after"
    )
    return response.status_code, tuple(headers)


def _stored(backend: InMemoryBackend) -> dict[str, Any]:
    return {name: repr(entry) for name, entry in backend._data.items()}


@pytest.mark.parametrize(
    "strategies",
    [
        (a(), b())
        for a, b in zip(BUILTIN_STRATEGIES, BUILTIN_STRATEGIES[1:] + BUILTIN_STRATEGIES[:1])
    ],
    ids=[
        f"{a.__name__}+{b.__name__}"
        for a, b in zip(BUILTIN_STRATEGIES, BUILTIN_STRATEGIES[1:] + BUILTIN_STRATEGIES[:1])
    ],
)
async def test_a_planned_group_answers_and_stores_what_a_step_made_anew_does(
    strategies: tuple[Any, Any],
) -> None:
    clock = ManualClock(1_700_000_000.0)
    planned = InMemoryBackend(namespace="g", clock=clock)
    awaited = InMemoryBackend(namespace="g", clock=clock)
    # The reference: every step made anew and awaited.
    awaited.items_decider = lambda items: None  # type: ignore[method-assign]
    apps = [
        _app(planned, list(strategies), HTTPThrottle),
        _app(awaited, list(strategies), Unplanned),
    ]
    draw = random.Random(7)
    transports = [
        {peer: httpx.ASGITransport(app=app, client=(peer, 1)) for peer in ("1.1.1.1", "2.2.2.2")}
        for app in apps
    ]
    statuses = set()
    for _ in range(400):
        peer = draw.choice(("1.1.1.1", "2.2.2.2"))
        answers = []
        for by_peer in transports:
            async with httpx.AsyncClient(transport=by_peer[peer], base_url="http://t") as http:
                answers.append(_answer(await http.get("/r")))
        assert answers[0] == answers[1]
        assert _stored(planned) == _stored(awaited)
        statuses.add(answers[0][0])
        clock.advance(ms=draw.choice((0, 0, 30, 150, 700, 2500, 20_000)))
    assert statuses == {200, 429}  # (both kinds of answer were compared)
    assert planned._data  # (and states were)
    assert not [identity for identity in together._plans if identity[0] == id(awaited)]


async def test_a_throttle_changed_after_its_group_was_planned_decides_on_its_change() -> None:
    backend = InMemoryBackend(clock=ManualClock(1_700_000_000.0))
    minute = HTTPThrottle("c:minute", "3/min", backend=backend)
    second = HTTPThrottle("c:second", "10/s", backend=backend, strategy=TokenBucket())
    middleware = [Middleware(ThrottleMiddleware, middleware_throttles=[minute, second])]
    app = Starlette(routes=[Route("/r", ok)], middleware=middleware)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        assert (await http.get("/r")).status_code == 200  # (planned)
        await minute.update_rate("1/min")
        refused = await http.get("/r")  # 1 of 1 taken: refused on the new rate
        await minute.update_strategy(TokenBucket())
        admitted = await http.get("/r")  # a new strategy starts its own state
    assert refused.status_code == 429
    assert admitted.status_code == 200


async def test_a_group_is_planned_once_per_client_and_the_plans_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(together, "_plans", {})
    monkeypatch.setattr(together, "PLANS_KEPT", 8)
    backend = InMemoryBackend()
    made = []
    items_decider = backend.items_decider

    def counted(items: Any) -> Any:
        made.append(items)
        return items_decider(items)

    backend.items_decider = counted  # type: ignore[method-assign]
    pair = [HTTPThrottle(f"p:{n}", "100/min", backend=backend) for n in "ab"]
    middleware = [Middleware(ThrottleMiddleware, middleware_throttles=pair)]
    app = Starlette(routes=[Route("/r", ok)], middleware=middleware)
    for peer in range(12):
        transport = httpx.ASGITransport(app=app, client=(f"10.0.0.{peer}", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for _ in range(3):
                assert (await http.get("/r")).status_code == 200
        assert len(together._plans) <= 8
    assert len(made) == 12  # one plan per client, made on its first request


def _reference(parts: list[Decision], refused: Any) -> tuple[Any, ...]:
    """`Combined`'s fields as its docstring defines them."""
    known = [p.remaining for p in parts if p.remaining is not None]
    fewest = min(known) if known else None
    reset = max(p.reset_ms for p in parts)
    if refused is not None:
        wait = max(p.wait_ms for p in parts if not p.allowed)
        return False, wait, fewest, reset, parts[refused].limit
    left = [p.remaining if p.remaining is not None else float("inf") for p in parts]
    tightest = left.index(min(left))
    return True, 0, fewest, reset, parts[tightest].limit


def test_a_combined_decision_reads_its_parts_as_documented() -> None:
    draw = random.Random(3)
    for _ in range(3000):
        parts = []
        for _ in range(draw.randint(2, 4)):
            allowed = draw.random() < 0.6
            parts.append(
                Decision(
                    allowed,
                    0 if allowed else draw.choice((1, 5, 5, 900)),
                    draw.choice((None, 0, 1, 3, 3, 7)),
                    draw.choice((0, 5, 5, 60_000)),
                    draw.choice((1, 5, 10)),
                    draw.choice((None, 17)),
                )
            )
        decision = combine(parts)
        assert isinstance(decision, Combined)
        fields = (
            decision.allowed,
            decision.wait_ms,
            decision.remaining,
            decision.reset_ms,
            decision.limit,
        )
        assert fields == _reference(parts, decision.refused)
        assert decision.at == parts[0].at
        if decision.refused is not None:
            assert not parts[decision.refused].allowed
            assert parts[decision.refused].wait_ms == decision.wait_ms
