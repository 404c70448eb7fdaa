"""A process serving clients that vary everything they send stays bounded, on every store.

Each test sends 10^4 to 10^5 distinct client inputs (IPv4 and IPv6 peers, API keys, paths,
methods, query strings, headers, hosts, tenants, WebSocket messages), some cancelled or
disconnected, some against a failing store, then asserts that every structure the process
keeps for them holds at most its bound, and that no task is left pending. The bounds are
listed in docs/deployment.md ("What grows with traffic").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Host, Mount, Route

from traffik import HTTPThrottle, InMemoryBackend, buckets, identity, keyparts, refusals, together
from traffik.backends.base import ThrottleBackend
from traffik.identity import remote_address
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware, glob
from traffik.quotas import QuotaContext
from traffik.throttle_keys import KEY_CACHE_SIZE

pytestmark = pytest.mark.anyio

METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")


def _peer(n: int) -> str:
    """The `n`th client's address: IPv4 and IPv6 in turn, sixteen IPv6 addresses in each
    /64 network (one client, counted as one, with many addresses)."""
    if n % 2:
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    return f"2001:db8:{n >> 5 & 0xFFFF:x}:{n >> 21:x}::{n >> 1 & 15:x}"


def _scope(n: int, path: str, method: str = "GET", kind: str = "http") -> dict[str, Any]:
    """The `n`th request, as distinct as a client makes it: its address, query, API key,
    host, and a header of its own."""
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": f"q={n}&page={n % 97}".encode(),
        "headers": [
            (b"host", f"h{n}.example".encode()),
            (b"x-api-key", f"key:{n}/{{tag}}".encode() + b"k" * (n % 7 * 40)),
            (b"x-forwarded-for", f"{_peer(n * 31)}, {_peer(n)}".encode()),
            (b"x-plan", str(n % 500 + 1).encode()),
            (f"x-extra-{n % 50}".encode(), b"v" * (n % 300)),
        ],
        "client": (_peer(n), 40000 + n % 20000),
        "server": ("testserver", 80),
    }


async def _call(app: Any, scope: dict[str, Any], disconnect: bool = False) -> None:
    """`app` serving `scope` to the end (a client gone before its body when `disconnect`:
    an endpoint that reads it fails, as it does under a server)."""

    async def receive() -> dict[str, Any]:
        if disconnect:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    with contextlib.suppress(ClientDisconnect):
        await app(scope, receive, send)


def _method(n: int) -> str:
    return METHODS[n % len(METHODS)] if n % 5 else f"M{n}"  # (one in five invented)


def _throttled_app(backend: ThrottleBackend) -> tuple[Any, list[HTTPThrottle]]:
    """An app with FastAPI routes, a mount with a tenant parameter, a host with a parameter
    and a middleware throttle, and its throttles: per peer, per forwarded address, per API
    key (as the client sends it), with a rate and a cost the client picks."""
    by_peer = HTTPThrottle("bm:peer", "1000/min", backend=backend)
    forwarded = HTTPThrottle(
        "bm:forwarded", "1000/min", backend=backend, identifier=remote_address(["10.0.0.0/8"])
    )
    by_key = HTTPThrottle(
        "bm:key", "1000/min", backend=backend, identifier=lambda r: r.headers["x-api-key"]
    )
    by_plan = HTTPThrottle(
        "bm:plan",
        lambda r, ctx: f"{r.headers['x-plan']}/min",
        backend=backend,
        cost=lambda r, ctx: int(r.headers["x-plan"]) % 3 + 1,
    )
    anywhere = HTTPThrottle(
        "bm:any", "1000/min", backend=backend, charge_when=lambda outcome: outcome.status_code < 500
    )
    tenant = HTTPThrottle("bm:tenant", "1000/min", backend=backend)
    mounted = HTTPThrottle("bm:mounted", "1000/min", backend=backend)  # (with `anywhere`: as one)

    async def document(request: Request) -> PlainTextResponse:
        await tenant.hit(request)
        return PlainTextResponse("doc")

    api = FastAPI()

    @api.api_route(
        "/items/{item}", methods=list(METHODS), dependencies=[Depends(by_peer), Depends(forwarded)]
    )
    async def item(item: str, request: Request) -> dict[str, str]:
        return {"item": item, "body": (await request.body()).decode()}

    @api.get("/plans/{plan}", dependencies=[Depends(by_key), Depends(by_plan)])
    async def plan(plan: str, request: Request) -> dict[str, str]:
        async with by_peer.quota(request) as quota:  # (a child left open is the parent's)
            quota(cost=1).nested(apply_on_exit=False)(cost=1)
            await quota.nested().cancel()
        return {"plan": plan}

    docs = [Route("/docs/{doc}", document)]
    app = Starlette(
        routes=[
            Mount("/api", app=api),
            Mount("/t/{tenant}", routes=docs),
            Host("{sub}.example", app=Starlette(routes=docs)),
        ]
    )
    guarded = ThrottleMiddleware(
        app,
        [
            MiddlewareThrottle(anywhere, path=glob("/**")),
            MiddlewareThrottle(mounted, path=glob("/t/**")),
        ],
    )
    return guarded, [by_peer, forwarded, by_key, by_plan, anywhere, tenant, mounted]


def _requests(count: int, seed: int) -> Iterator[tuple[dict[str, Any], bool]]:
    """`count` distinct requests over every route (a tenant and a host each), some to a
    path no route has, one in nine from a client that disconnects at once."""
    draw = random.Random(seed)
    for n in range(seed * count, (seed + 1) * count):
        word = f"{draw.getrandbits(40):x}"
        path = (f"/api/items/{word}", f"/api/plans/{word}", f"/t/{word}/docs/{n}", f"/docs/{word}")[
            n % 4
        ]
        method = _method(n) if n % 4 in (0, 3) else "GET"
        yield _scope(n, path, method), n % 9 == 0


def _process_caches() -> dict[str, tuple[int, int]]:
    """The per-process caches keyed by client input: name -> (size, bound)."""
    variants = max((len(entry[1]) for entry in buckets._PARTS.values()), default=0)
    prefixes = max((len(table) for _, table in buckets._PREFIXES.values()), default=0)
    return {
        "peer key parts": (len(identity._PEER_PARTS), identity._PEER_PARTS_MAX),
        "grouped IPv6 hosts": (len(identity._GROUPED), identity._GROUPED_MAX),
        "escaped texts": (len(keyparts._ESCAPED), keyparts._ESCAPED_MAX),
        "route parts": (len(buckets._PARTS), buckets._PARTS_MAX),
        "route parts per mount path": (variants, buckets._PARTS_MAX),
        "mount prefixes per router": (prefixes, buckets._PREFIXES_MAX),
        "groups' steps": (len(together._plans), together.PLANS_KEPT),
    }


def _throttle_caches(throttle: HTTPThrottle) -> dict[str, tuple[int, int]]:
    """A throttle's caches (and its `remote_address` identifier's): name -> (size, bound)."""
    sizes = {
        f"{throttle.uid} keys": (len(throttle._keys), KEY_CACHE_SIZE),
        f"{throttle.uid} key ends": (len(throttle._ends), KEY_CACHE_SIZE),
        f"{throttle.uid} checked rates": (len(throttle._checked_rates), 64),
        f"{throttle.uid} header plans": (len(throttle.__dict__.get("_plans", ())), 64),
    }
    for cell in getattr(throttle.identifier, "__closure__", None) or ():
        known = getattr(cell.cell_contents, "_known", None)
        if known is not None:
            sizes[f"{throttle.uid} identities"] = (len(known), cell.cell_contents.KNOWN_MAX)
    return sizes


def _over(sizes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {name: (size, bound) for name, (size, bound) in sizes.items() if size > bound}


async def _settled(baseline: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """The tasks besides `baseline` still pending once the steps a cancelled caller left
    have had a moment to end."""
    for _ in range(500):
        left = asyncio.all_tasks() - baseline
        if not left:
            break
        await asyncio.sleep(0.01)
    return asyncio.all_tasks() - baseline


def _live(kind: type) -> list[Any]:
    """Every live object of `kind` in the process."""
    gc.collect()
    return [found for found in gc.get_objects() if isinstance(found, kind)]


def _idle_structures() -> dict[str, list[int]]:
    """What only lives while something is in flight, and what is remembered per kind of
    event: name -> the size of each live one made in this event loop's test (lanes, lock
    tables and steps left behind by a cancelled caller are empty when idle; quiet logs hold
    at most `_KINDS`)."""
    from traffik.backends import store_locks
    from traffik.backends.lanes import Lanes
    from traffik.backends.locks import LocalLockTable
    from traffik.logs import QuietLog

    loop = asyncio.get_running_loop()
    return {
        "lanes": [len(lanes) for lanes in _new(Lanes)],
        "local locks": [len(table) for table in _new(LocalLockTable)],
        "steps of cancelled callers": [
            len([step for step in store_locks._running if step.get_loop() is loop])
        ],
        "quiet log kinds": [len(log._seen) for log in _live(QuietLog)],
    }


_EARLIER: set[int] = set()
"""The objects alive before the test began (`_made_here`)."""


def _new(kind: type) -> list[Any]:
    """The live objects of `kind` this test made."""
    return [found for found in _live(kind) if id(found) not in _EARLIER]


@pytest.fixture(autouse=True)
def _made_here() -> None:
    """Leave out of `_new` what other tests left alive (a backend of another module, whose
    event loop closed with a round in flight; a request a module keeps)."""
    _EARLIER.clear()
    _EARLIER.update(id(found) for found in _live(object))


async def _hit(throttle: HTTPThrottle, scope: dict[str, Any]) -> None:
    try:
        await throttle.hit(Request(scope))
    except Exception as exc:
        if getattr(exc, "status_code", None) != 429:
            raise


async def test_a_flood_of_distinct_requests_keeps_every_cache_of_the_process_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (the flood's mounted paths come from 750 networks: fewer than the groups' steps kept)
    monkeypatch.setattr(together, "PLANS_KEPT", 256)
    backend = InMemoryBackend(namespace="bounded", max_keys=2000)
    app, throttles = _throttled_app(backend)
    baseline = asyncio.all_tasks()
    for scope, disconnect in _requests(24_000, seed=1):
        await _call(app, scope, disconnect)
    sizes = _process_caches()
    for throttle in throttles:
        sizes.update(_throttle_caches(throttle))
    sizes["in-memory store keys"] = (len(backend._data), backend.max_keys)
    assert _over(sizes) == {}
    assert sizes["bm:peer keys"][0] > 0 and sizes["peer key parts"][0] > 0  # (they were used)
    assert sizes["bm:forwarded identities"][0] > 0
    assert sizes["groups' steps"][0] > 0
    assert await _settled(baseline) == set()
    assert _new(QuotaContext) == [] and _new(HTTPConnection) == []  # (no request is kept)


async def test_refused_cancelled_and_coalesced_hits_leave_bounded_state_on_every_store(
    make_backend: Callable[..., ThrottleBackend],
) -> None:
    """8 000 clients hit twice at once (coalesced where the store coalesces), one hit in
    five cancelled mid-flight: refusals are remembered up to their bound, a shadow
    throttle logs a bounded number of kinds, and nothing in flight is left behind."""
    from traffik.logs import _KINDS
    from traffik.strategies import TokenBucket

    class Doubled(TokenBucket):  # (a user's strategy: Redis decides it under locks)
        def transition(self, state: Any, now: int, rate: Any, cost: int) -> Any:
            return super().transition(state, now, rate, 2 * cost)

    backend = make_backend()
    enforced = HTTPThrottle("bm:refused", "1/min", backend=backend)
    state = HTTPThrottle("bm:state", "1/min", backend=backend, strategy=TokenBucket())
    shadow = HTTPThrottle("bm:shadow", "1/min", backend=backend, shadow=True)
    locked = HTTPThrottle("bm:locked", "2/min", backend=backend, strategy=Doubled())
    baseline = asyncio.all_tasks()
    for start in range(0, 8_000, 50):
        hits = [
            asyncio.ensure_future(_hit(throttle, _scope(n, "/r")))
            for n in range(start, start + 50)
            for throttle in (enforced, enforced, state, state, shadow, shadow)
            + ((locked, locked) if n % 8 == 0 else ())
        ]
        await asyncio.sleep(0)
        for index in range(0, len(hits), 5):
            hits[index].cancel()
        await asyncio.gather(*hits, return_exceptions=True)
    assert await _settled(baseline) == set()
    idle = _idle_structures()
    assert set(idle["lanes"] + idle["local locks"] + idle["steps of cancelled callers"]) <= {0}
    assert max(idle["quiet log kinds"]) <= _KINDS
    turns = getattr(backend, "_turns", None)  # (who waits for a lock of the store)
    held = getattr(backend, "_holdings", None) or getattr(backend, "_held", None)
    assert not held and not (turns._locks if turns is not None else ())
    if backend.refusals is not None:
        assert 0 < len(backend.refusals) <= refusals.DEFAULT_MAX_KEYS
    else:
        assert len(backend._data) <= backend.max_keys  # type: ignore[attr-defined]
    await backend.close()


def _down(kind: str) -> ThrottleBackend:
    """A network store nothing answers for (a port nothing listens on), whose circuit opens
    at its first failure."""
    from traffik.backends.health import CircuitPolicy
    from traffik.testing.servers import free_port

    policy = CircuitPolicy(failure_threshold=1, quiet_period=0)
    if kind == "redis":
        from traffik.backends.redis import RedisBackend

        return RedisBackend(f"redis://127.0.0.1:{free_port()}/0", namespace="down", circuit=policy)
    from traffik.backends.memcached import MemcachedBackend

    return MemcachedBackend(f"memcached://127.0.0.1:{free_port()}", circuit=policy)


@pytest.mark.parametrize("kind", ["redis", "memcached"])
async def test_fallbacks_built_per_request_during_an_outage_leave_nothing_behind(
    kind: str,
) -> None:
    """Throttles built per request (a user's own limit), each with its own `on_error`
    handler, while the store is down: its circuits keep one recovery listener, and what the
    fallback admitted is owed in one ledger, the spare's, however many handlers there were."""
    from traffik.error_handlers import failover, fallback
    from traffik.reconcile import Ledger

    store = _down(kind)
    spare = InMemoryBackend(namespace="spare", max_keys=1000)
    for n in range(10_000):
        handler = failover(spare) if n % 2 else fallback(spare)
        throttle = HTTPThrottle("bm:per-user", "5/min", backend=store, on_error=handler)
        await _hit(throttle, _scope(n, "/r"))
    assert [len(circuit._listeners) for circuit in store.circuits] == [1] * len(store.circuits)
    ledgers = _new(Ledger)
    assert len(ledgers) == 1
    assert 5_000 < ledgers[0].owed(store) <= 10_000  # (an IPv6 /64 is one client)
    await store.close()


async def test_a_failing_store_under_every_policy_keeps_its_logs_and_fallback_bounded() -> None:
    from traffik.error_handlers import failover, fallback
    from traffik.exceptions import BackendError
    from traffik.logs import _KINDS
    from traffik.testing import FailingBackend

    store = FailingBackend(InMemoryBackend(namespace="failing"))
    spare = InMemoryBackend(namespace="spare", max_keys=1000)
    policies = ["allow", "throttle", fallback(spare), failover(spare, retry_delay=0)]
    throttles = [
        HTTPThrottle(f"bm:fail:{index}", "5/min", backend=store, on_error=policy)
        for index, policy in enumerate(policies)
    ]
    baseline = asyncio.all_tasks()
    with store.failing(BackendError("the store is down")):
        for n in range(4_000):
            for throttle in throttles:
                await _hit(throttle, _scope(n, f"/r/{n}", _method(n)))
    assert await _settled(baseline) == set()
    assert max(_idle_structures()["quiet log kinds"]) <= _KINDS
    assert len(spare._data) <= spare.max_keys


async def _socket(app: Any, n: int, messages: int) -> None:
    """A WebSocket client that sends `messages` messages, then leaves."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    for index in range(messages):
        inbox.put_nowait({"type": "websocket.receive", "text": f"m{index}"})
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
    scope = {**_scope(n, "/ws", kind="websocket"), "subprotocols": []}

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(scope, inbox.get, send)


async def test_a_websocket_keeps_bounded_bookkeeping_over_many_messages() -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from traffik import WebSocketThrottle
    from traffik.outcomes import CHARGES_KEY, NOTED_IN_KEY, REFUNDED_KEY

    backend = InMemoryBackend(namespace="ws", max_keys=1000)
    counted = WebSocketThrottle("bm:ws", "5/s", backend=backend, charge_when=lambda o: True)
    plain = WebSocketThrottle("bm:ws-plain", "50/s", backend=backend)
    scopes: list[dict[str, Any]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        scopes.append(websocket.scope)
        try:
            while True:
                await websocket.receive_text()
                await counted.hit(websocket)
                await plain.hit(websocket)
                async with counted.quota(websocket) as quota:
                    quota(cost=1)
                if len(scopes) % 2:
                    await counted.refund(websocket)
        except WebSocketDisconnect:
            pass  # the client left

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    baseline = asyncio.all_tasks()
    await _socket(app, 0, 10_000)
    await asyncio.gather(*(_socket(app, n, 20) for n in range(1, 1_001)))
    assert await _settled(baseline) == set()
    assert _new(WebSocket) == []
    for scope in scopes:
        for key in (CHARGES_KEY, NOTED_IN_KEY, REFUNDED_KEY):
            assert len(scope["state"].get(key) or ()) <= 2, key
    assert set(_idle_structures()["lanes"]) <= {0}


def _label_values(registry: Any, reader: Any) -> set[str]:
    """Every label value of the Prometheus samples and OpenTelemetry data points so far (a
    histogram's bucket bounds aside)."""
    data = reader.get_metrics_data()
    points = [
        point.attributes
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
    samples = [sample.labels for family in registry.collect() for sample in family.samples]
    return {str(value) for labels in points + samples for name, value in labels.items()} - {
        value for labels in samples for name, value in labels.items() if name == "le"
    }


async def test_metrics_are_labelled_by_throttle_outcome_and_class_never_by_client_input() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry

    from traffik.events import OUTCOMES
    from traffik.exceptions import BackendError
    from traffik.metrics import opentelemetry, prometheus
    from traffik.testing import FailingBackend

    backend = FailingBackend(InMemoryBackend(namespace="metrics", max_keys=1000))
    app, throttles = _throttled_app(backend)
    registry, reader = CollectorRegistry(), InMemoryMetricReader()
    prometheus.install(registry)
    opentelemetry.install(MeterProvider(metric_readers=[reader]), spans=False)
    try:
        for index, (scope, disconnect) in enumerate(_requests(10_000, seed=2)):
            blip = backend.failing(BackendError("a blip"), times=1)
            with blip if index % 3 == 0 else contextlib.nullcontext():
                await _call(app, scope, disconnect)
        values = _label_values(registry, reader)
    finally:
        prometheus.uninstall(registry)
        opentelemetry.uninstall()
    classes = {"FailingBackend", "BackendError"}
    assert values - {throttle.uid for throttle in throttles} - set(OUTCOMES) == classes
