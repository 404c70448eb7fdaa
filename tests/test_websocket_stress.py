"""WebSockets under stress: per-message limits with many messages in flight, a client that
leaves while the throttle decides, handshake denials through FastAPI and Starlette, a
handler that raises, and throttles used on a route of the other kind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Optional

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.exceptions import WebSocketException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from traffik import (
    HTTPThrottle,
    InMemoryBackend,
    ManualClock,
    ThrottleMiddleware,
    WebSocketThrottle,
    is_throttled,
    throttled,
)
from traffik.backends.base import ThrottleBackend
from traffik.exceptions import ConfigurationError
from traffik.fastapi import throttled as fastapi_throttled

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend(make_backend: Callable[..., ThrottleBackend]) -> AsyncIterator[ThrottleBackend]:
    backend = make_backend(clock=ManualClock(1.7e9))
    async with backend():
        yield backend


class Peer:
    """The server's side of one WebSocket, driven by the test: what the client sends goes
    to `incoming`, what the app sends is kept in `sent`. `hold` makes the app's sends of
    text frames wait until it is set (a slow network); `gone` makes them fail as a server
    fails a send to a client that left (an `OSError`)."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.sent: list[dict[str, Any]] = []
        self.hold: Optional[asyncio.Event] = None
        self.gone = False

    scope: ClassVar[dict[str, Any]] = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [],
        "client": ("1.2.3.4", 5000),
        "server": ("t", 80),
        "subprotocols": [],
        "asgi": {"version": "3.0"},
    }

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            if self.gone:
                raise OSError("the client left")
            if self.hold is not None:
                await self.hold.wait()
        self.sent.append(message)

    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send" and "text" in m]

    def say(self, *texts: str) -> None:
        for text in texts:
            self.incoming.put_nowait({"type": "websocket.receive", "text": text})

    def leave(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1001})

    async def run(self, app: Any) -> None:
        await app(dict(self.scope, state={}), self.receive, self.send)


# -- per-message limits, many messages in flight ------------------------------------------------


async def test_messages_decided_at_once_admit_what_the_limit_allows(
    backend: ThrottleBackend,
) -> None:
    """Forty messages handled at once, each in a task of its own: exactly the budget is
    processed, and every other message got one `rate_limit` frame."""
    messages = WebSocketThrottle("msgs", rate="10/h", backend=backend)
    processed: list[str] = []

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()

        async def handle(text: str) -> None:
            await messages.hit(websocket)
            if not is_throttled(websocket):
                processed.append(text)

        tasks = []
        try:
            while True:
                tasks.append(asyncio.ensure_future(handle(await websocket.receive_text())))
        except WebSocketDisconnect:
            await asyncio.gather(*tasks)

    peer = Peer()
    peer.say(*(str(n) for n in range(40)))
    peer.leave()
    await peer.run(Starlette(routes=[WebSocketRoute("/ws", chat)]))
    refusals = [text for text in peer.texts() if '"rate_limit"' in text]
    assert len(processed) == 10 and len(refusals) == 30


async def test_a_refused_message_stays_refused_while_another_is_admitted() -> None:
    """A message refused (its `rate_limit` frame slow to send) while another message is
    admitted: each task must see its own message's answer in `is_throttled`."""
    messages = WebSocketThrottle("costly", rate="5/min", backend=InMemoryBackend())
    processed: list[str] = []
    second_done = asyncio.Event()

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()

        async def handle(text: str) -> None:
            await messages.hit(websocket, cost=len(text))
            if not is_throttled(websocket):
                processed.append(text)

        first = asyncio.ensure_future(handle(await websocket.receive_text()))
        await handle(await websocket.receive_text())
        second_done.set()
        await first

    peer = Peer()
    peer.hold = asyncio.Event()
    peer.say("a costly message", "ok")  # 16 units (more than 5: refused), then 2
    running = asyncio.ensure_future(peer.run(Starlette(routes=[WebSocketRoute("/ws", chat)])))
    try:
        await asyncio.wait_for(second_done.wait(), 10)  # (a bound: never hang the run)
    finally:
        peer.hold.set()
    await running
    assert processed == ["ok"]


# -- a client that leaves while the throttle decides ----------------------------------------------


async def test_a_client_gone_while_its_message_is_refused_ends_the_endpoint_cleanly(
    backend: ThrottleBackend,
) -> None:
    """The `rate_limit` frame cannot be sent: the server reports the client gone, which
    Starlette raises as `WebSocketDisconnect` from `hit`, as from any send; the refused
    message took nothing."""
    messages = WebSocketThrottle("gone", rate="1/h", backend=backend)
    seen: list[Any] = []

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.receive_text()
                if seen:
                    peer.gone = True  # it leaves as its second message is decided
                await messages.hit(websocket)
                seen.append(is_throttled(websocket))
        except WebSocketDisconnect as left:
            seen.append(left.code)

    peer = Peer()
    peer.say("one", "two")
    await peer.run(Starlette(routes=[WebSocketRoute("/ws", chat)]))
    assert seen == [False, 1006]
    stat = await messages.stat("1.2.3.4", path="/ws")
    assert stat is not None and stat.hits_remaining == 0  # the first message's unit only


# -- the handshake, and a handler that raises -----------------------------------------------------


async def hello(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def handshake_app(where: str, throttle: WebSocketThrottle) -> Any:
    if where == "starlette-decorator":
        return Starlette(routes=[WebSocketRoute("/ws", throttled(throttle)(hello))])
    if where == "starlette-middleware":
        return Starlette(
            routes=[WebSocketRoute("/ws", hello)],
            middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle])],
        )
    app = FastAPI()
    if where == "fastapi-dependency":
        app.websocket("/ws", dependencies=[Depends(throttle)])(hello)
    elif where == "fastapi-decorator":
        app.websocket("/ws", dependencies=[fastapi_throttled(throttle)])(hello)
    else:
        app.add_middleware(ThrottleMiddleware, middleware_throttles=[throttle])
        app.websocket("/ws")(hello)
    return app


@pytest.mark.parametrize(
    "where",
    [
        "starlette-decorator",
        "starlette-middleware",
        "fastapi-dependency",
        "fastapi-decorator",
        "fastapi-middleware",
    ],
)
def test_a_refused_handshake_is_a_429_with_its_headers(where: str) -> None:
    throttle = WebSocketThrottle(f"hs-{where}", rate="1/min", backend=InMemoryBackend())
    client = TestClient(handshake_app(where, throttle))
    with client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "hello"
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
        pass  # pragma: no cover (denied)
    answer = denied.value
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "60"
    assert answer.headers["ratelimit-policy"] == f'"hs-{where}";q=1;w=60'
    assert "Retry in 60 seconds" in answer.text


def test_a_handler_that_closes_the_socket_on_a_refused_message() -> None:
    """A `handle_throttled` raising `WebSocketException` closes the socket with its code."""

    def close(connection: Any, wait_ms: float, throttle: Any, context: Any) -> None:
        raise WebSocketException(code=1008, reason="slow down")

    messages = WebSocketThrottle(
        "strict", rate="1/min", backend=InMemoryBackend(), handle_throttled=close
    )

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            text = await websocket.receive_text()
            await messages.hit(websocket)
            await websocket.send_text(text)

    client = TestClient(Starlette(routes=[WebSocketRoute("/ws", echo)]))
    with client.websocket_connect("/ws") as websocket:
        websocket.send_text("one")
        assert websocket.receive_text() == "one"
        websocket.send_text("two")
        with pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_text()
    assert (closed.value.code, closed.value.reason) == (1008, "slow down")


# -- a throttle on a route of the other kind ------------------------------------------------------


async def page(request: Request) -> PlainTextResponse:
    return PlainTextResponse("page")


@pytest.mark.parametrize("kind", ["http-on-websocket", "websocket-on-http"])
def test_the_starlette_decorator_refuses_a_throttle_of_the_other_kind(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`traffik.throttled(...)` with an `HTTPThrottle` on a WebSocket endpoint (or the other
    way round) counted the connection all the same, under the wrong kind's answers (a
    429 denial for every handshake, say): it names the route and the throttle to use."""
    backend = InMemoryBackend()
    if kind == "http-on-websocket":
        throttle: Any = HTTPThrottle("api", rate="1/min", backend=backend)
        app = Starlette(routes=[WebSocketRoute("/ws", throttled(throttle)(hello))])
        expected = (
            "HTTPThrottle('api', rate='1/min') is applied to the WebSocket route /ws: "
            "use a WebSocketThrottle there"
        )

        def connect() -> None:
            with TestClient(app).websocket_connect("/ws"):
                pass  # pragma: no cover (refused)

    else:
        throttle = WebSocketThrottle("chat", rate="1/min", backend=backend)
        app = Starlette(routes=[Route("/page", throttled(throttle)(page))])
        expected = (
            "WebSocketThrottle('chat', rate='1/min') is applied to the HTTP route GET /page: "
            "use an HTTPThrottle there"
        )

        def connect() -> None:
            TestClient(app).get("/page")

    with pytest.raises(ConfigurationError) as raised:
        connect()
    assert str(raised.value) == expected
    assert expected in caplog.text
