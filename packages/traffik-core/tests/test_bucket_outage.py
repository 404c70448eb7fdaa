"""A client's bucket while the store fails: `refund`, `reset`, `stat` and `check` follow the
throttle's `on_error` as a decision does, and a refund goes only to a store that took the hit."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, WebSocket
from starlette.testclient import TestClient

from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle
from traffik.backends.health import CircuitPolicy, CircuitState, StoreCircuit
from traffik.error_handlers import fallback
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError
from traffik.testing import FailingBackend, reset_client

pytestmark = pytest.mark.anyio

PEER = "127.0.0.1"  # (the client httpx's ASGITransport gives every request)
LIMIT = 5
DECIDING = {"evaluate", "increment_with_ttl"}  # (what a hit of any strategy here decides with)


def client_for(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def app_for(throttle: HTTPThrottle, backend: FailingBackend) -> FastAPI:
    """`GET /items?op=...`: a plain `Depends(throttle)` route whose endpoint runs one bucket
    operation on its own request, with every operation of `backend` failing when `down`."""
    app = FastAPI()

    @app.get("/items")
    async def items(
        op: str, down: bool = False, request: Request = Depends(throttle)
    ) -> dict[str, Any]:
        if down:
            backend.fail(BackendError("store down"))
        try:
            if op == "refund":
                return {"result": await throttle.refund(request)}
            if op == "stat":
                stat = await throttle.stat(request)
                return {"result": None if stat is None else stat.hits_remaining}
            if op == "check":
                return {"result": await throttle.check(request)}
            if op == "reset":
                return {"result": await throttle.reset(request)}
            return {"result": "hit"}
        finally:
            if down:
                backend.recover()

    return app


def policy(name: str) -> Any:
    """An `on_error` by name: a named policy, None (the backend's: "throttle") or a fallback."""
    if name == "fallback":
        return fallback(InMemoryBackend(namespace="spare"))
    if name == "per_process":
        return fallback(InMemoryBackend(namespace="spare"), per_process=0.5)
    return None if name == "default" else name


async def left(throttle: HTTPThrottle, backend: Any) -> Optional[float]:
    """The units the test client has left on `backend` for `GET /items`."""
    path = "/items" if throttle.per_route else None
    stat = await throttle.stat(PEER, path=path, backend=backend)
    return None if stat is None else stat.hits_remaining


# -- inside a request ------------------------------------------------------------------------

ANSWERS = {
    "refund": {"allow": None, "throttle": None, "default": None, "fallback": None},
    "stat": {"allow": None, "throttle": None, "default": None, "fallback": None},
    "check": {"allow": True, "throttle": False, "default": False, "fallback": True},
    "reset": {"allow": False, "throttle": False, "default": False, "fallback": False},
}


@pytest.mark.parametrize("op", sorted(ANSWERS))
@pytest.mark.parametrize("on_error", ["allow", "throttle", "default", "fallback"])
async def test_a_failing_operation_in_an_endpoint_answers_as_the_policy_says(
    op: str, on_error: str
) -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = HTTPThrottle(
        f"outage-{op}-{on_error}", f"{LIMIT}/min", backend=backend, on_error=policy(on_error)
    )
    async with backend, client_for(app_for(throttle, backend)) as client:
        assert (await client.get("/items", params={"op": "hit"})).status_code == 200
        response = await client.get("/items", params={"op": op, "down": True})
        assert response.status_code == 200, response.text
        assert response.json() == {"result": ANSWERS[op][on_error]}
        assert await left(throttle, backend) == LIMIT - 2  # nothing given back, nothing forgotten


@pytest.mark.parametrize("op", sorted(ANSWERS))
async def test_on_error_raise_raises_from_each_operation(op: str) -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = HTTPThrottle(
        f"outage-raise-{op}", f"{LIMIT}/min", backend=backend, on_error="raise", per_route=False
    )
    async with backend, client_for(app_for(throttle, backend)) as client:
        response = await client.get("/items", params={"op": op, "down": True})
        assert response.status_code == 500
        assert "BackendError" not in response.text
        with backend.failing(BackendError("store down")), pytest.raises(BackendError):
            await getattr(throttle, op)(PEER)


# -- called directly, the whole store down -------------------------------------------------------


@pytest.mark.parametrize("on_error", ["allow", "throttle", "fallback", "per_process"])
async def test_every_operation_on_an_identifier_survives_an_outage(on_error: str) -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = HTTPThrottle(
        f"direct-{on_error}",
        f"{LIMIT}/min",
        backend=backend,
        on_error=policy(on_error),
        per_route=False,
    )
    async with backend, client_for(app_for(throttle, backend)) as client:
        await client.get("/items", params={"op": "hit"})
        with backend.failing(BackendError("store down")):
            assert await throttle.refund(PEER) is None
            assert await throttle.stat(PEER) is None
            assert await throttle.reset(PEER) is False
            assert await reset_client(throttle, PEER) is False
            assert await throttle.test(PEER) is (on_error != "throttle")
        assert await left(throttle, backend) == LIMIT - 1


async def test_check_of_a_connection_answers_as_the_policy_decides() -> None:
    seen: dict[str, Any] = {}
    backend = FailingBackend(InMemoryBackend())
    throttles = {
        name: HTTPThrottle(f"check-{name}", f"{LIMIT}/min", backend=backend, on_error=name)
        for name in ("allow", "throttle")
    }
    app = FastAPI()

    @app.get("/c")
    async def c(request: Request) -> dict[str, bool]:
        with backend.failing():
            seen.update({name: await t.check(request, cost=1) for name, t in throttles.items()})
        return {}

    async with backend, client_for(app) as client:
        assert (await client.get("/c")).status_code == 200
    assert seen == {"allow": True, "throttle": False}


# -- what is logged, what always raises ----------------------------------------------------------


async def test_a_failing_operation_is_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = HTTPThrottle("logged-refund", f"{LIMIT}/min", backend=backend, on_error="allow")
    caplog.set_level(logging.WARNING, logger="traffik")
    async with backend:
        with backend.failing(BackendConnectionError("store down")):
            for _ in range(3):
                await throttle.refund(PEER, path="/items")
            await throttle.stat(PEER, path="/items")
    lines = [r.getMessage() for r in caplog.records if r.name == "traffik"]
    assert len(lines) == 2, lines
    refund, stat = lines
    assert "logged-refund" in refund and "refund" in refund and "store down" in refund
    assert "on_error='allow'" in refund and "nothing given back" in refund
    assert "stat" in stat
    for line in lines:  # the store that failed, and where to look
        assert repr(backend) in line and "check that the store answers" in line, line


async def test_a_bad_argument_raises_while_the_store_is_down() -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = HTTPThrottle("bad-args", f"{LIMIT}/min", backend=backend, on_error="allow")
    by_request = HTTPThrottle(
        "bad-args-callable", lambda c, ctx: "5/min", backend=backend, on_error="allow"
    )
    async with backend:
        with backend.failing(BackendError("store down")):
            with pytest.raises(ConfigurationError, match="cost=-1"):
                await throttle.refund(PEER, -1, path="/items")
            with pytest.raises(ConfigurationError, match="pass path="):
                await throttle.reset(PEER)
            with pytest.raises(ConfigurationError, match="pass the connection"):
                await by_request.stat(PEER, path="/items")


# -- where a refund goes after a failed decision -----------------------------------------------


@pytest.mark.parametrize("on_error", ["fallback", "per_process"])
async def test_a_refund_goes_to_the_fallback_that_admitted_the_hit(on_error: str) -> None:
    primary = FailingBackend(InMemoryBackend())
    spare = InMemoryBackend(namespace="spare")
    handler = fallback(spare, per_process=0.5 if on_error == "per_process" else None)
    throttle = HTTPThrottle(
        f"to-spare-{on_error}", f"{LIMIT * 2}/min", backend=primary, on_error=handler
    )
    async with primary, spare, client_for(app_for(throttle, primary)) as client:
        await client.get("/items", params={"op": "hit"})  # (the primary takes one)
        with primary.failing(operations=DECIDING):
            response = await client.get("/items", params={"op": "refund"})
            assert response.status_code == 200
        assert await left(throttle, primary) == LIMIT * 2 - 1  # given nothing it did not take
        assert await left(throttle, spare) == LIMIT * 2  # given back what it took


async def test_a_hit_no_store_took_gets_nothing_back() -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = HTTPThrottle("no-store", f"{LIMIT}/min", backend=backend, on_error="allow")
    async with backend, client_for(app_for(throttle, backend)) as client:
        await client.get("/items", params={"op": "hit"})
        with backend.failing(operations=DECIDING):  # (the refund itself would succeed)
            assert (await client.get("/items", params={"op": "refund"})).status_code == 200
        assert await left(throttle, backend) == LIMIT - 1
        response = await client.get("/items", params={"op": "refund"})  # (charged, given back)
        assert response.status_code == 200
        assert await left(throttle, backend) == LIMIT - 1


def test_a_websocket_message_the_policy_admitted_gets_nothing_back_and_the_next_does() -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = WebSocketThrottle("ws-outage", f"{LIMIT}/min", backend=backend, on_error="allow")
    app = FastAPI(lifespan=backend.lifespan)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        for _ in range(3):
            text = await websocket.receive_text()
            if text == "down":
                backend.fail(operations=DECIDING)
            await throttle.hit(websocket)
            backend.recover()
            if text != "keep":
                await throttle.refund(websocket)
            stat = await throttle.stat(websocket)
            await websocket.send_json(stat.hits_remaining if stat else None)

    with TestClient(app) as client, client.websocket_connect("/ws") as socket:
        socket.send_text("keep")
        assert socket.receive_json() == LIMIT - 1
        socket.send_text("down")
        assert socket.receive_json() == LIMIT - 1  # admitted by on_error: nothing to give back
        socket.send_text("up")
        assert socket.receive_json() == LIMIT - 1  # charged, then given back
        socket.close()


async def test_a_fallback_admission_refunded_in_the_endpoint_is_not_charged_to_the_store() -> None:
    """Four hits the fallback admits during an outage, three refunded by the endpoint: when the
    store's circuit closes, it is charged the one that stayed (it was charged all four)."""
    inner = InMemoryBackend(namespace="store")

    async def probe() -> None:
        return None

    inner.circuits = (StoreCircuit("store", probe, CircuitPolicy(failure_threshold=1)),)
    store = FailingBackend(inner)
    store.circuits = inner.circuits
    throttle = HTTPThrottle(
        "refunded-in-outage", "10/min", backend=store, on_error=policy("fallback"), per_route=False
    )
    async with client_for(app_for(throttle, store)) as client:
        with store.failing(BackendConnectionError("down"), operations=DECIDING):
            await client.get("/items", params={"op": "hit"})
            for _ in range(3):
                assert (await client.get("/items", params={"op": "refund"})).status_code == 200
        circuit = inner.circuits[0]
        circuit.trip(BackendConnectionError("down"))
        while circuit.state is not CircuitState.CLOSED:
            await asyncio.sleep(0.001)
        for _ in range(5):
            await asyncio.sleep(0)  # (the ledger's settling task)
        assert await left(throttle, inner) == 9
