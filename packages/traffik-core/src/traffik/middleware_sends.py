"""The `send`s `ThrottleMiddleware` hands the app: one adding the throttles' headers, one settling charges.

`HeaderSink` collects the rate-limit headers the throttles write for an admitted request and
adds them to the response's start; `Settling` settles the request's `charge_when` charges on
the status the response starts with.
"""

from __future__ import annotations

from collections.abc import Awaitable

from traffik import _starlette_missing

try:
    from starlette.datastructures import MutableHeaders
    from starlette.requests import HTTPConnection
    from starlette.types import Message, Send
except ImportError as exc:
    raise _starlette_missing("traffik.middleware_sends") from exc

from traffik.header_merge import merge_headers
from traffik.outcomes import Outcome, settle

__all__ = ["HeaderSink", "Settling"]


class Settling:
    """A `send` that settles the connection's charges (`charge_when`) on the status the
    response starts with, once it is sent: a stream is judged as it starts, not when it ends,
    and a failure after the start does not change the status the client got."""

    __slots__ = ("connection", "send", "started")

    def __init__(self, connection: HTTPConnection, send: Send) -> None:
        self.connection = connection
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        await self.send(message)
        if message["type"] == "http.response.start" and not self.started:
            self.started = True
            await settle(self.connection, Outcome(message["status"]))


class HeaderSink:
    """Where throttles write the headers of an admitted request (`raw_headers`, and `headers`
    for header values resolved per request), and the `send` that adds them to the response.

    One object per request: the throttle's `response`, then (its bound `send_with_headers`)
    the app's `send` when there are headers to add. Made without an `__init__` (a call of
    its own per request): `ThrottleMiddleware` sets both slots.
    """

    __slots__ = ("raw_headers", "send")

    raw_headers: list[tuple[bytes, bytes]]
    send: Send

    @property
    def headers(self) -> MutableHeaders:
        return MutableHeaders(raw=self.raw_headers)

    def send_with_headers(self, message: Message) -> Awaitable[None]:
        # A plain method handing back `send`'s awaitable: no coroutine of its own per
        # message. The start message is copied, not changed: the app may send it again. The
        # app's response may carry rate-limit headers of its own (a route's throttle, a
        # refusal's `Retry-After`): each field is sent once (`merge_headers`).
        if message["type"] == "http.response.start":
            message = dict(message)
            headers = list(message.get("headers", ()))
            merge_headers(headers, self.raw_headers)
            message["headers"] = headers
        return self.send(message)
