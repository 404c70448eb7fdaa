"""`--profile`: where an in-memory throttle's time goes (dependency and middleware), by ablation and by cProfile."""

from __future__ import annotations

import cProfile
import gc
import io
import math
import pstats
import statistics
from typing import Any

from fastapi import Request, Response

from benchmarks import middleware_overhead
from benchmarks.apps import dependency_app, noop, plain_app
from benchmarks.asgi import Target, asgi_target, bare_request, clients
from benchmarks.fused import fused_dependency
from benchmarks.timing import CPU_TIME, measure, run_block
from benchmarks.workloads import WORKLOADS
from traffik import HTTPThrottle
from traffik.backends.inmemory import InMemoryBackend
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES
from traffik.strategies.steps import in_place_kind

__all__ = ["profile"]

_BLOCK, _REPETITIONS = 200, 41
_ROUNDS, _CHUNK = 10, 2_000
_REQUESTS = _ROUNDS * _CHUNK
_TOP = 25


async def _noop_with_response(request: Request, response: Response) -> Request:
    """A no-op with the throttle's signature: FastAPI also injects the sub-response."""
    return request


async def _noop_with_headers(request: Request, response: Response) -> Request:
    """The same, writing two rate-limit headers as the throttle does."""
    response.headers.append("RateLimit-Policy", '"profile";q=1000000;w=86400')
    response.headers.append("RateLimit", '"profile";r=999999;t=86400')
    return request


def _rate(strategy: Any) -> str:
    """The strategy's rate in the benchmark's one-key workload (a limit nobody reaches)."""
    return WORKLOADS[0].rate_for(type(strategy).__name__)


def _throttle(strategy: Any, headers: Any = "ietf") -> HTTPThrottle:
    return HTTPThrottle(
        "profile",
        rate=_rate(strategy),
        backend=InMemoryBackend(namespace="profile"),
        strategy=strategy,
        headers=headers,
    )


async def _ablation(strategy_class: type) -> str:
    """CPU time per request of variants that add the throttle's parts one at a time."""
    peers = clients(1)
    throttle = _throttle(strategy_class())
    bare = _throttle(strategy_class(), headers=None)
    strategy = strategy_class()
    rate = Rate.parse(_rate(strategy))
    backend = InMemoryBackend(namespace="profile-decide")
    request = bare_request(peers[0])

    key = "profile:10.0.0.0:GET:/"
    # The store's own decision, as a throttle's hit makes it: in place when the backend can.
    in_place = backend.decider(strategy, rate, 1, in_place_kind(strategy))

    async def decision(request: Request) -> Request:
        """A no-op dependency making the store's decision on a fixed key, and nothing else."""
        if in_place is not None:
            in_place(key)
        else:
            await strategy.decide(key, rate, backend, 1)
        return request

    async def decide(i: int) -> None:
        await strategy.decide(key, rate, backend, 1)

    async def decision_alone(i: int) -> None:
        await decision(request)

    async def hit(i: int) -> None:
        await bare.hit(request)

    apps = [
        ("no limiter", plain_app()),
        ("no-op (request)", dependency_app(noop)),
        (_WITH_RESPONSE, dependency_app(_noop_with_response)),
        (_HEADERS, dependency_app(_noop_with_headers)),
        (_DECISION, dependency_app(decision)),
        (
            _FUSED,
            dependency_app(fused_dependency("profile", _rate(strategy), "GET:/", strategy_class())),
        ),
        (_BARE, dependency_app(bare)),
        (_THROTTLE, dependency_app(throttle)),
    ]
    targets = [asgi_target(name, app, peers) for name, app in apps]
    targets += [
        Target("strategy.decide() alone", decide),
        Target("the store's decision alone", decision_alone),
        Target("throttle.hit() alone", hit),
    ]
    samples = await measure(targets, _BLOCK, 1, _REPETITIONS, 300, CPU_TIME)
    typical = samples.typical
    base, floor = typical["no limiter"], typical["no-op (request)"]
    with_response = typical[_WITH_RESPONSE]
    out = io.StringIO()
    out.write(
        f"{strategy_class.__name__} in memory, CPU time per request: median over "
        f"{_REPETITIONS} interleaved blocks of {_BLOCK}; differences are paired block by "
        "block; `x floor` = over no limiter / the no-op dependency's (the target: 1.4)."
        "\n\n| variant | us | over no limiter | over no-op dependency | x floor |\n"
        "|---|---|---|---|---|\n"
    )
    for name, values in typical.items():
        value = statistics.median(values) / 1000
        if name.endswith("alone"):
            out.write(f"| {name} | {value:.1f} | | | |\n")
            continue
        over_base = statistics.median(v - b for v, b in zip(values, base)) / 1000
        over_floor = statistics.median(v - f for v, f in zip(values, floor)) / 1000
        ratio = _x_floor(values, base, floor)
        out.write(f"| {name} | {value:.1f} | {over_base:.1f} | {over_floor:.1f} | {ratio:.2f} |\n")
    noop_overhead = _paired(floor, base)
    decision_us = _paired(typical[_DECISION], floor)
    headers = _paired(typical[_HEADERS], with_response)  # (the same signature, headers added)
    own_headers = _paired(typical[_THROTTLE], typical[_BARE])
    rest = _paired(typical[_BARE], with_response) - decision_us
    out.write(
        f"\nThe 1.4 target leaves the throttle {0.4 * noop_overhead:.1f} us over the no-op "
        f"dependency. Of that, the store's decision alone takes {decision_us:.1f} us "
        f"in a request (x floor {_x_floor(typical[_DECISION], base, floor):.2f}) and writing "
        f"two headers {headers:.1f} us (over the no-op taking the response too), before any "
        "key, identity or throttle code. The throttle's own rate-limit headers cost "
        f"{own_headers:.1f} us (the default IETF headers over `headers=None`); without them it "
        f"takes {rest:.1f} us over the no-op (request, response) and the store's decision: "
        "identity, key and throttle code. The same work written by hand for this one "
        "configuration (the client's key, the store's decision, the request's state, the two "
        "fields formatted; no rule, option or hook looked at) costs "
        f"{_paired(typical[_FUSED], floor):.1f} us over the no-op dependency (x floor "
        f"{_x_floor(typical[_FUSED], base, floor):.2f}): the least any code doing it costs "
        "here.\n"
    )
    return out.getvalue()


def _paired(values: list[float], base: list[float]) -> float:
    """Median over repetitions of `values - base`, in µs."""
    return statistics.median(v - b for v, b in zip(values, base)) / 1000


_MIDDLEWARE = {
    "bare": "bare app",
    "noop": "no-op middleware",
    "floor": "floor middleware (the store's decision, two constant headers)",
    "fused": "hand-fused middleware (the throttle's work by hand, `benchmarks.fused`)",
    "headers=None": "ThrottleMiddleware, headers=None",
    "throttled": "ThrottleMiddleware (IETF headers, the default)",
}
"""The middleware benchmark's apps (`middleware_overhead._app`), by layer."""


async def _middleware() -> str:
    """CPU time per request of the middleware benchmark's Starlette apps, over the no-op
    middleware: the breakdown of `ThrottleMiddleware`'s 3 µs target."""
    path, peers = middleware_overhead.PATH, clients(1)
    targets = [
        asgi_target(name, middleware_overhead._app(layer), peers, path)
        for layer, name in _MIDDLEWARE.items()
    ]
    samples = await measure(targets, _BLOCK, 1, _REPETITIONS, 300, CPU_TIME)
    statuses = {target.name: dict(target.statuses) for target in targets}
    if any(set(counts) - {200} for counts in statuses.values()):
        raise RuntimeError(f"the middleware apps must answer 200 only: {statuses}")
    typical = samples.typical
    noop_times = typical[_MIDDLEWARE["noop"]]
    out = io.StringIO()
    out.write(
        "ThrottleMiddleware (one in-memory FixedWindow `MiddlewareThrottle`) on a Starlette "
        f"app, CPU time per request: median over {_REPETITIONS} interleaved blocks of "
        f"{_BLOCK}, differences paired block by block (the target: at most "
        f"{middleware_overhead.TARGET_US:g} us over the no-op middleware).\n\n"
        "| variant | us | over no-op middleware |\n|---|---|---|\n"
    )
    for name, values in typical.items():
        value = statistics.median(values) / 1000
        out.write(f"| {name} | {value:.1f} | {_paired(values, noop_times):.2f} |\n")
    over = {layer: _paired(typical[name], noop_times) for layer, name in _MIDDLEWARE.items()}
    out.write(
        f"\nOf ThrottleMiddleware's {over['throttled']:.2f} us over the no-op middleware, its "
        f"rate-limit headers take {over['throttled'] - over['headers=None']:.2f} us (over "
        f"`headers=None`), and without them it takes {over['headers=None']:.2f} us, against "
        f"{over['floor']:.2f} us for the floor middleware (the store's decision and two "
        "constant headers): rule matching, identity, key and throttle code are the rest. The "
        "throttle's whole work written by hand for this one configuration (`benchmarks.fused`) "
        f"costs {over['fused']:.2f} us: the least any code doing it costs here.\n"
    )
    return out.getvalue()


_DECISION = "no-op (request) + the store's decision"
_WITH_RESPONSE = "no-op (request, response)"
_HEADERS = "no-op (request, response) + 2 headers"
_FUSED = "hand-fused (the throttle's work by hand, `benchmarks.fused`)"
_BARE = "throttle, headers=None"
_THROTTLE = "throttle (IETF headers, the default)"


def _x_floor(values: list[float], base: list[float], floor: list[float]) -> float:
    """Median over repetitions of (values - base) / (floor - base); NaN when the floor was
    never above the base (a run too short to tell)."""
    ratios = [(v - b) / (f - b) for v, b, f in zip(values, base, floor) if f > b]
    return statistics.median(ratios) if ratios else math.nan


async def _profiled(targets: list[Target]) -> list[pstats.Stats]:
    """Profile each target over `_REQUESTS` requests, in alternating chunks (drift hits all)."""
    profilers = [cProfile.Profile() for _ in targets]
    for target in targets:
        await run_block(target, 500, 1)
    gc.disable()
    try:
        for _ in range(_ROUNDS):
            for target, profiler in zip(targets, profilers):
                profiler.enable()
                await run_block(target, _CHUNK, 1)
                profiler.disable()
    finally:
        gc.enable()
    return [pstats.Stats(profiler) for profiler in profilers]


def _where(key: tuple[str, int, str]) -> str:
    path, line, name = key
    for marker in ("site-packages/", "/src/", "/lib/python"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{line}({name})" if line else name


def _own_times(stats: pstats.Stats) -> dict[Any, tuple[float, int]]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    return {key: (value[2], value[1]) for key, value in raw.items()}


async def _cprofile(strategy_class: type) -> str:
    """The functions whose own time grew most, throttle vs no-op dependency, per request."""
    peers = clients(1)
    throttled, floor = await _profiled(
        [
            asgi_target("throttle", dependency_app(_throttle(strategy_class())), peers),
            asgi_target("noop", dependency_app(noop), peers),
        ]
    )
    with_throttle, with_noop = _own_times(throttled), _own_times(floor)
    total = sum(t for t, _ in with_throttle.values()) - sum(t for t, _ in with_noop.values())
    rows = []
    for key, (own, calls) in with_throttle.items():
        base_own, base_calls = with_noop.get(key, (0.0, 0))
        rows.append((own - base_own, (calls - base_calls) / _REQUESTS, key))
    rows.sort(key=lambda row: row[0], reverse=True)
    out = io.StringIO()
    out.write(
        f"cProfile, {_REQUESTS:,} requests each: {total / _REQUESTS * 1e6:.1f} us of extra own "
        "time per request, throttle vs no-op dependency (cProfile inflates small calls: read "
        "the shares).\n\n| extra us/request | share | extra calls/request | function |\n"
        "|---|---|---|---|\n"
    )
    for extra, per_request, key in rows[:_TOP]:
        out.write(
            f"| {extra / _REQUESTS * 1e6:.2f} | {extra / total:.0%} | {per_request:g} "
            f"| `{_where(key)}` |\n"
        )
    return out.getvalue()


async def profile(strategy_name: str) -> str:
    """The ablation table, the middleware's, then the cProfile difference, for one built-in
    strategy (the middleware's throttle is FixedWindow, as in its benchmark)."""
    strategies = {cls.__name__: cls for cls in BUILTIN_STRATEGIES}
    if strategy_name not in strategies:
        raise SystemExit(f"--profile {strategy_name!r}: use one of {', '.join(strategies)}")
    strategy_class = strategies[strategy_name]
    return "\n".join(
        [await _ablation(strategy_class), await _middleware(), await _cprofile(strategy_class)]
    )
