"""What answers at a host and port, told from its reply to `version`: a bad setting, not an outage.

A URL naming the wrong port (memcached's in a Redis URL, a web server's) reaches a server that
answers in another protocol. The client library then reports a protocol error or a closed
connection, which reads like an outage: the app starts and its circuit probes for ever. A
backend that fails to open asks `probe` what answers there instead, and a server it recognises
(`REDIS`, `MEMCACHED`, `HTTP`) that is not its store is a `ConfigurationError` to raise.

The question is the line `version\\r\\n`: memcached answers `VERSION 1.6.21`, Redis an error
(`-ERR unknown command 'version'`), an HTTP server a 400 (`HTTP/1.1 400`, or an HTML page
alone for the HTTP/0.9 request the line looks like).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Optional

__all__ = ["HTTP", "MEMCACHED", "QUESTION", "REDIS", "identify", "probe"]

QUESTION = b"version\r\n"
"""The line sent to a server whose kind is asked."""
MEMCACHED = "a memcached server"
REDIS = "a Redis server"
HTTP = "an HTTP server"

_REPLY_BYTES = 512
"""The most of a reply read: its first line is enough."""


def identify(reply: bytes) -> Optional[str]:
    """Which server answered `reply` to `QUESTION` (`MEMCACHED`, `REDIS`, `HTTP`); None when
    the reply is empty or recognises none of them."""
    first = reply.lstrip().split(b"\n", 1)[0].rstrip(b"\r")
    if first.startswith(b"VERSION ") or first in (b"ERROR", b"ERROR Too many open connections"):
        return MEMCACHED
    if first.startswith((b"-ERR", b"-NOAUTH", b"-WRONGPASS", b"-DENIED", b"-LOADING")):
        return REDIS
    lowered = reply[:_REPLY_BYTES].lower()
    if first.startswith(b"HTTP/") or b"<html" in lowered or b"<!doctype html" in lowered:
        return HTTP
    return None


async def probe(host: str, port: int, timeout: float, *, path: str = "") -> Optional[str]:
    """Which server answers at `host`:`port` (or the Unix socket `path`), asked within `timeout`
    seconds (`identify`); None when none answers, or none that is recognised."""
    try:
        reply = await asyncio.wait_for(_ask(host, port, path), timeout)
    except (OSError, asyncio.TimeoutError, EOFError):
        return None
    return identify(reply)


async def _ask(host: str, port: int, path: str) -> bytes:
    """The first line (or first bytes) of the reply to `QUESTION`."""
    if path:
        reader, writer = await asyncio.open_unix_connection(path)
    else:
        reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(QUESTION)
        reply = b""
        while b"\n" not in reply and len(reply) < _REPLY_BYTES:
            chunk = await reader.read(_REPLY_BYTES)
            if not chunk:
                break
            reply += chunk
        return reply
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
