"""A raw asyncio HTTP/1.1 load generator: keep-alive connections, one request in flight each.

Each connection is an `asyncio.Protocol` that writes its next `GET /` from `data_received`
as soon as a response is complete, so a request costs the generator no task switch and far
less CPU than it costs the server. Responses must carry `Content-Length` (a FastAPI JSON
response does); pipelining is never used.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections import Counter
from functools import partial
from typing import Optional, cast

__all__ = ["REQUEST", "KeepAliveLoad", "installed", "new_loop"]

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: traffik-bench\r\n\r\n"


def installed(module: str) -> bool:
    """Whether `module` can be imported (uvloop, httptools)."""
    return importlib.util.find_spec(module) is not None


def new_loop() -> asyncio.AbstractEventLoop:
    """An event loop for the generator: uvloop's when installed, as the server's is."""
    if installed("uvloop"):
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class KeepAliveLoad:
    """`connections` keep-alive connections to `127.0.0.1:port`, each sending `REQUEST` again
    as soon as a response is complete, from `open` until `close`. Responses are counted, by
    status, while `counting` is true."""

    def __init__(self, port: int, connections: int) -> None:
        self.port = port
        self.connections = connections
        self.running = True
        self.counting = False
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        self._done: list[asyncio.Future[None]] = []
        self._transports: list[asyncio.BaseTransport] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.connections):
            done: asyncio.Future[None] = loop.create_future()
            self._done.append(done)
            transport, _ = await loop.create_connection(
                partial(_Connection, self, done), "127.0.0.1", self.port
            )
            self._transports.append(transport)

    async def close(self, timeout: float) -> None:
        """Stop sending, wait at most `timeout` seconds for the responses in flight, close."""
        self.running = False
        try:
            await asyncio.wait_for(asyncio.gather(*self._done), timeout)
        finally:
            for transport in self._transports:
                transport.close()


class _Connection(asyncio.Protocol):
    """One connection of a `KeepAliveLoad`; `done` is set when it stops, or fails."""

    def __init__(self, load: KeepAliveLoad, done: asyncio.Future[None]) -> None:
        self.load = load
        self.done = done
        self.buffer = bytearray()
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self._finish(RuntimeError(f"a response without Content-Length: {head[:200]!r}"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop > 0 else len(head)])
        total = end + 4 + length
        if len(buffer) < total:
            return
        if len(buffer) > total:
            self._finish(RuntimeError("more bytes than one response: the server pipelined"))
            return
        load = self.load
        if load.counting:
            load.requests += 1
            load.statuses[int(head[9:12])] += 1
        buffer.clear()
        if load.running and self.transport is not None:
            self.transport.write(REQUEST)
        else:
            self._finish(None)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._finish(exc or ConnectionError("the server closed a keep-alive connection"))

    def _finish(self, error: Optional[BaseException]) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)
        if self.transport is not None:
            self.transport.close()
