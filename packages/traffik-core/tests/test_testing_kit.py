"""`traffik.testing`: the fresh backend, the pytest plugin's fixtures, and the clock they share."""

from __future__ import annotations

import contextlib
import importlib.metadata
import subprocess
import sys
from fractions import Fraction
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.testclient import TestClient

from traffik import HTTPThrottle, InMemoryBackend, ManualClock
from traffik.clock import millis
from traffik.exceptions import BackendError
from traffik.strategies import GCRA, FixedWindow, TokenBucket
from traffik.testing import FailingBackend, fresh_backend


def make_app(throttle: HTTPThrottle, backend: InMemoryBackend) -> FastAPI:
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/items")
    async def items(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.mark.anyio
async def test_fresh_backend_is_empty_non_persistent_and_on_a_manual_clock() -> None:
    backend = fresh_backend(max_keys=10)
    assert isinstance(backend, InMemoryBackend) and isinstance(backend.clock, ManualClock)
    assert backend.namespace == "test" and not backend.persistent and backend.max_keys == 10
    await backend.set("k", "v", expire=60)
    assert await fresh_backend().get("k") is None
    backend.clock.advance(60)
    assert await backend.get("k") is None


def test_fresh_backend_takes_a_clock_and_a_namespace() -> None:
    clock = ManualClock(0.0)
    backend = fresh_backend("mine", clock=clock, persistent=True)
    assert backend.clock is clock and backend.namespace == "mine" and backend.persistent


def test_plugin_is_registered_and_loaded(pytestconfig: pytest.Config) -> None:
    entry_points = importlib.metadata.distribution("traffik-core").entry_points
    registered = {ep.name: ep.value for ep in entry_points if ep.group == "pytest11"}
    assert registered == {"traffik": "traffik.testing.plugin"}
    assert pytestconfig.pluginmanager.has_plugin("traffik")


def test_backend_fixture_runs_on_the_clock_fixture(
    traffik_backend: InMemoryBackend, traffik_clock: ManualClock
) -> None:
    assert traffik_backend.clock is traffik_clock
    assert not traffik_backend.persistent


@pytest.mark.anyio
@pytest.mark.parametrize("run", [1, 2])
async def test_backend_fixture_is_fresh_for_every_test(
    traffik_backend: InMemoryBackend, run: int
) -> None:
    assert await traffik_backend.keys() == []
    await traffik_backend.set("left-behind", str(run))


@pytest.mark.anyio
async def test_the_clock_crosses_a_window_without_a_lifespan(
    traffik_backend: InMemoryBackend, traffik_clock: ManualClock
) -> None:
    throttle = HTTPThrottle("kit:window", rate="2/min", backend=traffik_backend)
    transport = httpx.ASGITransport(app=make_app(throttle, traffik_backend))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert [(await client.get("/items")).status_code for _ in range(3)] == [200, 200, 429]
        traffik_clock.advance(59.999)
        assert (await client.get("/items")).status_code == 429
        traffik_clock.advance(ms=1)
        assert (await client.get("/items")).status_code == 200


def test_the_clock_crosses_a_window_under_testclient(
    traffik_backend: InMemoryBackend, traffik_clock: ManualClock
) -> None:
    throttle = HTTPThrottle("kit:sync", rate="1/s", backend=traffik_backend)
    with TestClient(make_app(throttle, traffik_backend)) as client:
        assert [client.get("/items").status_code for _ in range(2)] == [200, 429]
        traffik_clock.advance(1)
        assert client.get("/items").status_code == 200


def test_the_kit_imports_without_pytest_or_starlette() -> None:
    code = (
        "import sys\n"
        "sys.modules['pytest'] = sys.modules['starlette'] = None  # any import of them fails\n"
        "from traffik.testing import *\n"
        "print(fresh_backend().namespace)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "test"


# -- FailingBackend ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_failing_backend_counts_the_calls_that_pass_once_times_is_spent() -> None:
    backend = FailingBackend(fresh_backend())
    with backend.failing(BackendError("down"), times=2):
        for _ in range(5):
            with contextlib.suppress(BackendError):
                await backend.get("k")
    assert (backend.failures, backend.calls) == (2, 3)


@pytest.mark.anyio
async def test_failing_backend_raising_one_error_many_times_keeps_no_traceback_of_earlier_ones() -> (
    None
):
    # An instance raised again keeps the frames of every earlier raise in its traceback
    # (and their locals: the requests, throttles and handlers of a test's whole loop).
    backend = FailingBackend(fresh_backend())
    error = BackendError("down")
    throttle = HTTPThrottle("kit:raised", "5/min", backend=backend, on_error="allow")
    depths = []
    with backend.failing(error):
        for _ in range(200):
            await throttle.hit(Request({"type": "http", "client": ("10.0.0.1", 1)}))
            traceback, depth = error.__traceback__, 0
            while traceback is not None:
                traceback, depth = traceback.tb_next, depth + 1
            depths.append(depth)
    assert max(depths) == depths[0]


@pytest.mark.anyio
async def test_failing_backend_takes_one_operation_by_name() -> None:
    backend = FailingBackend(fresh_backend())
    with backend.failing(BackendError("down"), operations="get"):
        with pytest.raises(BackendError):
            await backend.get("k")
        await backend.set("k", "v")
    with pytest.raises(ValueError, match=r"unknown operations \['gett'\]"):
        backend.fail(operations="gett")


@pytest.mark.parametrize("error", ["oops", 42, None, str])
def test_failing_backend_refuses_what_is_no_exception(error: Any) -> None:
    backend = FailingBackend(fresh_backend())
    with pytest.raises(TypeError, match="an exception instance or class"):
        backend.fail(error)
    with pytest.raises(TypeError, match="must be an exception"), backend.failing(error):
        pass  # pragma: no cover


def several_rates_app(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.get("/items")
    async def items(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", [FixedWindow(), TokenBucket(), GCRA()], ids=repr)
async def test_failing_backend_passes_a_decision_of_several_rates_through_as_one_step(
    strategy: Any,
) -> None:
    """With several rates a throttle asks its backend for one all-or-nothing step
    (`evaluate_all`): the wrapper hands it to the wrapped backend as it is (one call), and
    `operations="evaluate"` fails it, as it fails a decision of one rate."""
    backend = FailingBackend(fresh_backend())
    throttle = HTTPThrottle(
        "kit:several", rate="2/min;5/h", backend=backend, strategy=strategy, on_error="throttle"
    )
    transport = httpx.ASGITransport(app=several_rates_app(throttle))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/items")).status_code == 200
        assert backend.calls == 1, "the decision was not the wrapped backend's one step"
        with backend.failing(BackendError("down"), operations="evaluate"):
            assert (await client.get("/items")).status_code == 429
        assert backend.failures == 1
        assert [(await client.get("/items")).status_code for _ in range(2)] == [200, 429]
    stat = await throttle.stat("127.0.0.1", path="/items")
    assert stat is not None and stat.hits_remaining == 0


@pytest.mark.anyio
async def test_failing_backend_lists_and_refunds_through_the_wrapped_backend() -> None:
    inner = fresh_backend()
    backend = FailingBackend(inner)
    throttle = HTTPThrottle("kit:refund", rate="1/min", backend=backend, per_route=False)
    request = Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("203.0.113.7", 1)}
    )
    await throttle.hit(request)
    prefix = inner.get_key("kit")
    assert await backend.scan(prefix) == await inner.scan(prefix) != []
    with backend.failing(BackendError("down"), operations="scan"), pytest.raises(BackendError):
        await backend.scan(prefix)
    await throttle.refund(request)
    stat = await throttle.stat("203.0.113.7")
    assert stat is not None and stat.hits_remaining == 1


# -- ManualClock ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.advance("60"),
        lambda c: c.advance(ms="5"),
        lambda c: c.advance(True),
        lambda c: c.advance(float("nan")),
        lambda c: c.advance(float("inf")),
        lambda c: c.set("1700000000"),
        lambda c: ManualClock("0"),
    ],
)
def test_manual_clock_refuses_what_is_no_number_of_seconds(call: Any) -> None:
    clock = ManualClock()
    with pytest.raises(TypeError, match="a finite number"):
        call(clock)
    assert clock() == 1_700_000_000.0


def test_manual_clock_takes_any_real_number() -> None:
    clock = ManualClock(0)
    clock.advance(Fraction(1, 2), ms=Fraction(500))
    assert clock.ms() == 1000


@pytest.mark.parametrize(
    ("seconds", "expected_ms"),
    [
        (1_700_000_000.001, 1_700_000_000_001),
        (1_700_000_000.123, 1_700_000_000_123),
        (1_700_000_000.999, 1_700_000_000_999),
        (7_258_118_400.007, 7_258_118_400_007),  # 2200
        (Fraction(3_400_000_000_001, 2000), 1_700_000_000_000),  # 0.5 ms past: rounded down
    ],
)
def test_manual_clock_takes_seconds_as_written(seconds: Any, expected_ms: int) -> None:
    """A float's binary value may fall short of the decimal written (`1700000000.001` is 48 ns
    short of 1 ms past the second): the clock takes what was written, so `set`, the start
    and `advance` land on the millisecond meant, and `millis` of any other clock (read to the
    microsecond) agrees."""
    assert ManualClock(seconds).ms() == expected_ms
    clock = ManualClock(0)
    clock.set(seconds)
    assert clock.ms() == expected_ms
    clock = ManualClock(1_700_000_000)
    clock.advance(0.001)
    clock.advance(ms=0.001)
    assert clock.ms() == 1_700_000_000_001
    clock.advance(ms=0.999)  # (1 ms, 1 us and 999 us: 2 ms exactly)
    assert clock.ms() == 1_700_000_000_002
    assert millis(lambda: float(seconds))() == expected_ms
