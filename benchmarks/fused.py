"""The hand-fused floors of issue 16's in-memory targets: one throttle's whole work, by hand.

For the benchmark's one configuration (an in-memory `FixedWindow`, the peer as the client,
a bucket per route, the default IETF headers, nothing else set), a throttled request must
do this much whatever the code: find the client's key (remembered per peer), make the
store's decision (the in-memory backend's own in-place step, as the throttle makes it), note
in the request's state that it was admitted and what it took (what `refund` and
`is_throttled` read), and put the two rate-limit fields on the response. `fused_dependency`
and `fused_middleware` do exactly that, written out for this configuration alone: no rule,
option, hook, observer or error policy is looked at. What they cost over a no-op is the
least any code doing the throttle's work can cost on this store and this machine; a target
below it cannot be met by the throttle's general path, nor by a second path fused for the
common case (which still has to check that the case applies).

`tests/test_benchmarks_fused.py` checks that each answers the same headers as the throttle
for the same requests, and counts each client apart.
"""

from __future__ import annotations

from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from traffik import InMemoryBackend, Rate
from traffik.config import THROTTLED_STATE_KEY
from traffik.decision import Decision
from traffik.header_merge import merge_headers
from traffik.identity import peer_part
from traffik.outcomes import CHARGES_KEY
from traffik.strategies import FixedWindow
from traffik.strategies.steps import in_place_kind

__all__ = ["Fused", "fused_dependency", "fused_middleware"]


class Fused:
    """One throttle's store, key and headers for the fused floors: the uid names the policy
    in the headers, as the throttle's do."""

    def __init__(
        self, uid: str, rate: str, route: str, backend: InMemoryBackend, strategy: Any = None
    ) -> None:
        parsed = Rate.parse(rate)
        strategy = FixedWindow() if strategy is None else strategy
        decide = backend.decider(strategy, parsed, 1, in_place_kind(strategy))
        if decide is None:
            raise RuntimeError(f"the in-memory backend does not decide {strategy!r} in place")
        self.decide: Callable[[str], Decision | None] = decide
        self.backend = backend
        self.rates = (parsed,)
        self.head, self.tail = f"{uid}:", f":{route}"
        self.keys: dict[Any, str] = {}
        self.policy = [
            (
                b"ratelimit-policy",
                b'"%s";q=%d;w=%d' % (uid.encode(), parsed.limit, parsed.expire // 1000),
            )
        ]
        self.field = b'"%s";r=%%d;t=%%d' % uid.encode()

    def key(self, scope: Scope) -> str:
        client = scope.get("client")
        host = client[0] if client else None
        key = self.keys.get(host)
        if key is None:
            key = self.keys[host] = self.head + peer_part(host or "") + self.tail
        return key

    async def admitted(self, scope: Scope) -> tuple[str, Decision, dict[str, Any]]:
        """The client's key, the store's decision (admitted: the floors measure nothing
        else), and the request's state, marked admitted."""
        key = self.key(scope)
        decision = self.decide(key)
        if decision is None:  # (the store opens on its first use)
            await self.backend.initialize()
            decision = self.decide(key)
            assert decision is not None
        if not decision.allowed:
            raise RuntimeError("the fused floors measure admitted requests only")
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        state[THROTTLED_STATE_KEY] = 0.0
        return key, decision, state

    def headers(self, decision: Decision) -> list[tuple[bytes, bytes]]:
        seconds = -(-decision.reset_ms // 1000)
        return [*self.policy, (b"ratelimit", self.field % (decision.remaining, seconds))]


def fused_dependency(uid: str, rate: str, route: str, strategy: Any = None) -> Callable[..., Any]:
    """A FastAPI dependency `(request, response)` doing the throttle's work for one route
    (the state a dependency throttle notes: admitted, and the units it took), deciding by
    `strategy` (default `FixedWindow`)."""
    fused = Fused(uid, rate, route, InMemoryBackend(namespace="fused"), strategy)
    charged = f"fused:{uid}"

    async def dependency(request: Request, response: Response) -> Request:
        _, decision, state = await fused.admitted(request.scope)
        state[charged] = 1
        response.raw_headers += fused.headers(decision)
        return request

    return dependency


def fused_middleware(uid: str, rate: str, route: str, prefix: str) -> Callable[[ASGIApp], ASGIApp]:
    """A pure ASGI middleware doing the throttle's work for HTTP requests under `prefix`
    (the state the middleware notes: admitted, and the charge `refund` gives back), its
    headers merged into the response's as `ThrottleMiddleware` merges them."""

    def middleware(app: ASGIApp) -> ASGIApp:
        fused = Fused(uid, rate, route, InMemoryBackend(namespace="fused"))

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or not scope["path"].startswith(prefix):
                await app(scope, receive, send)
                return
            key, decision, state = await fused.admitted(scope)
            state[CHARGES_KEY] = [(fused, fused.backend, key, fused.rates, 1, decision)]
            added = fused.headers(decision)

            def sending(message: Message) -> Any:
                if message["type"] == "http.response.start":
                    message = dict(message)
                    headers = list(message.get("headers", ()))
                    merge_headers(headers, added)
                    message["headers"] = headers
                return send(message)

            await app(scope, receive, sending)

        return guarded

    return middleware
