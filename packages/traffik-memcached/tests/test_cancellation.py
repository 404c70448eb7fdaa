"""A refund whose caller is cancelled (a client that left, a `wait_for` around it) still lands,
on every item: `refund_all`, begun, runs to its end, as `evaluate_all` does.

The cancellation points are made with the servers themselves: a frozen node (`pause()`) holds
the commands sent to it unanswered while the caller is cancelled, and answers them once thawed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle, MiddlewareThrottle, ThrottleMiddleware, throttled
from traffik.backends.memcached import MemcachedBackend
from traffik.rates import parse_rates
from traffik.strategies import BUILTIN_STRATEGIES, Strategy
from traffik.strategies.steps import Item, gives_back, items

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]

RATES = parse_rates("10/hour;20/day")
REFUNDING = [cls for cls in BUILTIN_STRATEGIES if gives_back(cls())]
SENT = 0.05
"""Seconds for the commands of a step to reach the servers (a live one answers meanwhile)."""
LANDED = 2.0
"""Seconds within which what goes on in the background after a cancellation is over."""


def _backend(*servers: Any) -> MemcachedBackend:
    nodes = ",".join(f"127.0.0.1:{server.port}" for server in servers)
    return MemcachedBackend(f"memcached://{nodes}", namespace="cancel")


def _server_of(backend: MemcachedBackend, servers: Any, key: str) -> Any:
    """The server the node holding `key` runs on."""
    name = backend._ring.pick(key).name
    return next(server for server in servers if name.endswith(f":{server.port}"))


def _split(backend: MemcachedBackend, strategy: Strategy, servers: Any) -> tuple[str, list[Item]]:
    """A client whose two rates live on different servers, and its items."""
    for n in range(100):
        client = f"client{n}"
        its = items(strategy, client, RATES, 1, backend)
        if _server_of(backend, servers, its[0].key) is not _server_of(backend, servers, its[1].key):
            return client, its
    raise AssertionError("no client of 100 has its rates on two servers")


@contextlib.contextmanager
def _frozen(server: Any) -> Iterator[None]:
    server.pause()
    try:
        yield
    finally:
        server.resume()


async def _cancelled_after_sending(step: Any) -> None:
    """Run `step`, cancel it once its commands were sent, and see the cancellation reach the
    caller at once."""
    task = asyncio.ensure_future(step)
    await asyncio.sleep(SENT)
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 0.1)
    assert task.cancelled()


async def _left(backend: MemcachedBackend, its: list[Item]) -> list[int]:
    """The units each item has left, after one more hit."""
    decision = await backend.evaluate_all(its, commit=False)
    return [part.remaining for part in getattr(decision, "parts", (decision,))]


async def _settles_at(backend: MemcachedBackend, its: list[Item], expected: list[int]) -> None:
    """Wait until `its` are left with `expected` units (what the background step leaves)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LANDED
    left = await _left(backend, its)
    while left != expected and loop.time() < deadline:
        await asyncio.sleep(0.02)
        left = await _left(backend, its)
    assert left == expected


@pytest.mark.parametrize("cls", REFUNDING, ids=[cls.__name__ for cls in REFUNDING])
async def test_a_refund_cancelled_part_way_gives_back_on_every_item(
    start_memcached: Callable[[], Any], cls: type[Strategy]
) -> None:
    """Two rates on two servers, the second frozen: the first rate's refund is done and the
    second's sent when the caller is cancelled. Once the second server answers, both rates
    have their unit back, not the first one only."""
    servers = (start_memcached(), start_memcached())
    backend = _backend(*servers)
    try:
        _, its = _split(backend, cls(), servers)
        whole = await _left(backend, its)
        assert (await backend.evaluate_all(its)).allowed
        with _frozen(_server_of(backend, servers, its[1].key)):
            await _cancelled_after_sending(backend.refund_all(its))
        await _settles_at(backend, its, whole)
    finally:
        await backend.close()


@pytest.mark.parametrize("cls", REFUNDING, ids=[cls.__name__ for cls in REFUNDING])
async def test_a_refund_cancelled_before_the_store_answers_still_lands(
    memcached_server: Any, cls: type[Strategy]
) -> None:
    """One rate: the refund's first command is sent, unanswered, when its caller is
    cancelled. It still gives the unit back, as on Redis and SQLite."""
    backend = _backend(memcached_server)
    try:
        its = items(cls(), "client", RATES[:1], 1, backend)
        whole = await _left(backend, its)
        assert (await backend.evaluate_all(its)).allowed
        with _frozen(memcached_server):
            await _cancelled_after_sending(backend.refund_all(its))
        await _settles_at(backend, its, whole)
    finally:
        await backend.close()


def _request(client: str) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "root_path": "",
        "headers": [],
        "client": (client, 1000),
        "app": None,
    }
    return Request(scope)


async def test_a_cancelled_refund_of_a_request_is_given_back_once(memcached_server: Any) -> None:
    """`throttle.refund(request)` cancelled while the store holds its command: the request
    is marked as given back (a second `refund` gives nothing), and so it is."""
    backend = _backend(memcached_server)
    throttle = HTTPThrottle("refund", rate="10/hour", backend=backend)
    try:
        request = _request("10.0.0.1")
        await throttle.hit(request)
        with _frozen(memcached_server):
            await _cancelled_after_sending(throttle.refund(request))
        await throttle.refund(request)  # the endpoint tries again: nothing more to give back
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LANDED
        while (stat := await throttle.stat(_request("10.0.0.1"))).hits_remaining != 10:
            assert loop.time() < deadline, stat
            await asyncio.sleep(0.02)
    finally:
        await backend.close()


@pytest.mark.parametrize("where", ["decorator", "middleware"])
async def test_a_charge_when_give_back_cancelled_part_way_lands_on_every_rate(
    start_memcached: Callable[[], Any], where: str
) -> None:
    """A `charge_when` throttle with two rates on two servers: the request succeeds (so its
    charge is given back) and its client leaves while the second server, frozen by the
    endpoint, holds the give-back. Once it answers, both rates have their unit back."""
    servers = (start_memcached(), start_memcached())
    backend = _backend(*servers)
    throttle = HTTPThrottle(
        "settled",
        rate=RATES,
        backend=backend,
        per_route=False,
        charge_when=lambda outcome: outcome.status_code >= 400,
    )
    client = ""
    for n in range(100):
        its = throttle.items(throttle.key_for(None, f"10.0.0.{n}", {}), RATES, 1, backend)
        if _server_of(backend, servers, its[0].key) is not _server_of(backend, servers, its[1].key):
            client = f"10.0.0.{n}"
            break
    frozen = _server_of(backend, servers, its[1].key)

    async def endpoint(request: Request) -> PlainTextResponse:
        frozen.pause()  # the give-back after this response waits on the second rate
        return PlainTextResponse("ok")

    if where == "decorator":
        app = Starlette(routes=[Route("/x", throttled(throttle)(endpoint))])
    else:
        app = Starlette(
            routes=[Route("/x", endpoint)],
            middleware=[
                Middleware(
                    ThrottleMiddleware,
                    middleware_throttles=[MiddlewareThrottle(throttle, path="/x")],
                )
            ],
        )
    transport = httpx.ASGITransport(app=app, client=(client, 1000))
    try:
        whole = await _left(backend, its)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            try:
                await _cancelled_after_sending(http.get("/x"))
            finally:
                frozen.resume()
        await _settles_at(backend, its, whole)
    finally:
        await backend.close()
