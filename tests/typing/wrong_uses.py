"""Wrong uses of Traffik's API that a type checker must reject: each line marked
`# error` must be an error under `mypy --strict`, and no other line."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from traffik import HTTPThrottle, MiddlewareThrottle, ThrottleExceptionInfo, ThrottleMiddleware
from traffik.exceptions import ConnectionThrottled
from traffik.fastapi import throttled as fastapi_throttled
from traffik.headers import Header
from traffik.throttles import throttled

app = FastAPI()
api = HTTPThrottle("api", rate="100/min")


def sync_handler(request: Request, info: ThrottleExceptionInfo) -> float:
    return 0.0


async def homepage(request: Request) -> Response:
    return PlainTextResponse("hi")


async def search(q: str) -> list[str]:
    return [q]


HTTPThrottle("misspelt", rat="1/s")  # error
HTTPThrottle("number", rate=5)  # error
HTTPThrottle("policy", rate="1/s", on_error="ignore")  # error
HTTPThrottle("sync-handler", rate="1/s", on_error=sync_handler)  # error
HTTPThrottle("headers", rate="1/s", headers="ietf2")  # error
HTTPThrottle("method", rate="1/s", use_method="yes")  # error
MiddlewareThrottle(api, pathh="/api/")  # error
app.add_middleware(ThrottleMiddleware, middleware_throttle=[api])  # error
throttled("api")  # error

throttled_home = throttled(api)(homepage)
throttled_search = fastapi_throttled(api)(search)
home_result: int = throttled_search("q")  # error
home_text: str = throttled_home  # error


async def uses(request: Request) -> None:
    async with api.quota(request) as quota:
        quota.no_such_method()  # error
    stat = await api.stat(request)
    print(stat.hits_remaining)  # error


async def typed_answers(request: Request) -> None:
    wrong: int = await api(request)  # error
    print(wrong, ConnectionThrottled(429, "slow down").retry_afterr)  # error


misspelt_condition = Header.LIMIT(when="allways")  # error
