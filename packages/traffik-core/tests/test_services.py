"""`traffik.backends.services`: what answers at an address, told from its reply to `version`."""

from __future__ import annotations

import asyncio

import pytest

from traffik.backends.services import HTTP, MEMCACHED, QUESTION, REDIS, identify, probe
from traffik.testing.servers import free_port


@pytest.mark.parametrize(
    ("reply", "found"),
    [
        (b"VERSION 1.6.21\r\n", MEMCACHED),
        (b"ERROR\r\n", MEMCACHED),
        (b"-ERR unknown command 'version', with args beginning with: \r\n", REDIS),
        (b"-NOAUTH Authentication required.\r\n", REDIS),
        (b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n", HTTP),
        (b'<!DOCTYPE HTML>\n<html lang="en">\n', HTTP),
        (b"", None),
        (b"\x15\x03\x01\x00\x02\x02\x32", None),
    ],
)
def test_a_reply_tells_the_server(reply: bytes, found: str | None) -> None:
    assert identify(reply) == found


@pytest.mark.anyio
async def test_probe_asks_and_reads_the_reply() -> None:
    asked: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readline())
        writer.write(b"-ERR unknown command 'version'\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await probe("127.0.0.1", port, 1.0) == REDIS
        assert asked == [QUESTION]
    finally:
        server.close()
        await server.wait_closed()
    assert await probe("127.0.0.1", free_port(), 1.0) is None  # nothing listens: unknown


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
