"""A refund whose caller is cancelled (a client that left, a `wait_for` around it) still lands,
on every item: `refund_all`, begun, runs to its end, as `evaluate_all` does. A decision of
several rates (`evaluate_all`) cancelled before it sent anything takes nothing; once begun, it
charges every rate.

The cancellation points are made with the servers themselves: a frozen node (`pause()`) holds
the commands sent to it unanswered while the caller is cancelled, and answers them once thawed;
and a connection held by an operation that waits for an event (the only fault injected).
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
from traffik.strategies.steps import Item, gives_back, is_counter, items

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


# -- a decision of several rates, cancelled before it sent anything, or after --

STEPPED = REFUNDING  # (every built-in strategy: each decides as an item of a step)
BEFORE_SENDING = ["waiting-for-a-connection", "waiting-for-the-generation"]


def _stepping_backend(server: Any, waits: str) -> MemcachedBackend:
    """One connection, held by another command while the server is frozen (a connection to
    wait for); or the namespace generation read before every operation (a read to wait for)."""
    if waits == "waiting-for-a-connection":
        return MemcachedBackend(server.url, namespace="cancel", pool_size=1, generation_refresh=60)
    return MemcachedBackend(server.url, namespace="cancel", generation_refresh=0)


@pytest.mark.parametrize("waits", BEFORE_SENDING)
@pytest.mark.parametrize("cls", STEPPED, ids=[cls.__name__ for cls in STEPPED])
async def test_a_step_of_several_rates_cancelled_before_it_sent_anything_takes_nothing(
    memcached_server: Any, cls: type[Strategy], waits: str
) -> None:
    """Two rates decided as one step, its caller cancelled while the step waits before its
    first command (for the one connection, which another command holds on the frozen server;
    or for the namespace generation's read): the cancellation reaches the caller at once, and
    once the server answers, the step has charged neither rate (it never began)."""
    backend = _stepping_backend(memcached_server, waits)
    try:
        its = items(cls(), "client", RATES, 1, backend)
        whole = await _left(backend, its)
        with _frozen(memcached_server):
            holder = asyncio.ensure_future(backend.get("another key"))
            await asyncio.sleep(SENT)  # (holds the connection, or is the generation's read)
            await _cancelled_after_sending(backend.evaluate_all(its))  # (it waits: sent nothing)
        await holder
        await asyncio.sleep(SENT * 4)  # a step left running would be over by now
        assert await _left(backend, its) == whole
    finally:
        await backend.close()


@pytest.mark.parametrize("cls", STEPPED, ids=[cls.__name__ for cls in STEPPED])
async def test_a_step_of_several_rates_cancelled_once_it_began_charges_every_rate(
    memcached_server: Any, cls: type[Strategy]
) -> None:
    """Two rates decided as one step, its caller cancelled once the first rate's command
    was sent (the frozen server holds it unanswered): the step runs to its end, so both
    rates are charged, not the first only."""
    backend = _backend(memcached_server)
    try:
        its = items(cls(), "client", RATES, 1, backend)
        whole = await _left(backend, its)
        with _frozen(memcached_server):
            await _cancelled_after_sending(backend.evaluate_all(its))
        await _settles_at(backend, its, [left - 1 for left in whole])
    finally:
        await backend.close()


COALESCED = [cls for cls in STEPPED if not is_counter(cls())]


@pytest.mark.parametrize("cls", COALESCED, ids=[cls.__name__ for cls in COALESCED])
async def test_a_step_cancelled_in_the_round_of_another_hit_before_it_is_sent_takes_nothing(
    memcached_server: Any, cls: type[Strategy]
) -> None:
    """The step's first rate is coalesced with a lone hit on the same key in flight (the
    frozen server holds it): the step waits for the next round. The server answers, and
    that round takes the step's hit, then waits for the one connection, which an operation
    holds (fault injection). The caller is cancelled then: once the connection is free, the
    round leaves the hit out (it never began), and only the lone hit is charged, on the
    first rate, not the step's on either."""
    backend = _stepping_backend(memcached_server, "waiting-for-a-connection")
    try:
        its = items(cls(), "client", RATES, 1, backend)
        whole = await _left(backend, its)
        node = backend._ring.pick(its[0].key)
        free = asyncio.Event()
        with _frozen(memcached_server):
            lone = asyncio.ensure_future(backend.evaluate_all(its[:1]))
            await asyncio.sleep(SENT)  # sent, unanswered: its round holds the connection
            holder = asyncio.ensure_future(node.run(lambda client, conn: free.wait(), "test"))
            step = asyncio.ensure_future(backend.evaluate_all(its))
            await asyncio.sleep(SENT)  # the step's hit is queued for the next round
        assert (await lone).allowed  # the next round (the step's hit) now waits for `holder`
        await asyncio.sleep(SENT)
        step.cancel()
        await asyncio.wait_for(asyncio.gather(step, return_exceptions=True), 0.1)
        assert step.cancelled()
        free.set()
        await holder
        await asyncio.sleep(SENT * 4)  # a round or step left running would be over by now
        assert await _left(backend, its) == [whole[0] - 1, whole[1]]
    finally:
        await backend.close()
