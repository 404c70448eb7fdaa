"""The demo app in examples/app.py: each of its throttles answers 429 once its budget is spent."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from starlette.testclient import TestClient

from traffik import InMemoryBackend
from traffik.backends.sqlite import SQLiteBackend

DEMO = Path(__file__).resolve().parents[1] / "examples" / "app.py"


def load_demo() -> ModuleType:
    """A fresh copy of the demo module: its own app, backend and throttles."""
    spec = importlib.util.spec_from_file_location("traffik_demo_app", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def demo(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.delenv("TRAFFIK_BACKEND_URL", raising=False)
    return load_demo()


@pytest.fixture
async def client(demo: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    # httpx's transport does not run the lifespan, which opens the app's backend: run it here.
    async with demo.app.router.lifespan_context(demo.app):
        transport = httpx.ASGITransport(app=demo.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            yield client


async def statuses(client: httpx.AsyncClient, path: str, n: int) -> list[int]:
    return [(await client.get(path)).status_code for _ in range(n)]


@pytest.mark.anyio
async def test_items_allows_five_then_answers_429(client: httpx.AsyncClient) -> None:
    allowed = [await client.get("/items") for _ in range(5)]
    throttled = await client.get("/items")
    assert [r.status_code for r in allowed] == [200] * 5
    assert allowed[0].json() == {"items": [1, 2, 3]}
    assert allowed[-1].headers.get_list("ratelimit") == ['"items";r=0;t=10', '"site";r=95;t=60']
    assert throttled.status_code == 429
    assert throttled.json() == {"detail": "Too many requests. Retry in 10 seconds."}
    assert throttled.headers["retry-after"] == "10"


@pytest.mark.anyio
async def test_decorated_search_and_router_throttles(client: httpx.AsyncClient) -> None:
    first = await client.get("/search", params={"q": "traffik"})
    assert first.json() == {"query": "traffik"}
    assert first.headers["x-ratelimit-remaining"] == "2"
    assert await statuses(client, "/search", 3) == [200, 200, 429]
    assert await statuses(client, "/reports/daily", 3) == [200, 200, 429]
    assert await statuses(client, "/reports/weekly", 3) == [200, 200, 429]


@pytest.mark.anyio
async def test_site_limit_spares_the_health_check(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    assert "ratelimit" not in health.headers
    schema = (await client.get("/openapi.json")).json()
    assert "429" in schema["paths"]["/items"]["get"]["responses"]
    assert "429" in schema["paths"]["/search"]["get"]["responses"]
    assert "429" in schema["paths"]["/reports/daily"]["get"]["responses"]
    assert "429" not in schema["paths"]["/health"]["get"]["responses"]


def test_websocket_messages_over_the_limit_get_rate_limit_messages(demo: ModuleType) -> None:
    with TestClient(demo.app) as client, client.websocket_connect("/ws/echo") as websocket:
        for i in range(5):
            websocket.send_text(f"m{i}")
            assert websocket.receive_text() == f"echo: m{i}"
        websocket.send_text("one too many")
        assert websocket.receive_json() == {
            "type": "rate_limit",
            "error": "Too many messages",
            "retry_after": 10,
        }
        websocket.send_text("still open")
        assert websocket.receive_json()["type"] == "rate_limit"


def test_backend_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFIK_BACKEND_URL", "memory://")
    demo = load_demo()
    assert isinstance(demo.backend, InMemoryBackend)
    assert demo.backend.namespace == "traffik-demo"
    with TestClient(demo.app) as client:
        assert [client.get("/items").status_code for _ in range(6)] == [200] * 5 + [429]


def test_a_namespace_in_the_url_is_the_demos(monkeypatch: pytest.MonkeyPatch) -> None:
    # The README's one variable for everything: a URL's `?namespace=` names the demo's.
    monkeypatch.setenv("TRAFFIK_BACKEND_URL", "memory://?namespace=shop&max_keys=100")
    assert load_demo().backend.namespace == "shop"


def test_demo_workers_share_a_sqlite_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRAFFIK_BACKEND_URL", f"sqlite:///{tmp_path}/demo.db")
    first, second = load_demo(), load_demo()  # two workers of one app
    assert isinstance(first.backend, SQLiteBackend)
    assert first.backend.namespace == "traffik-demo" and first.backend.persistent
    with TestClient(first.app) as one, TestClient(second.app) as two:
        statuses = [(one if i % 2 else two).get("/items").status_code for i in range(6)]
    assert statuses == [200] * 5 + [429]
    restarted = load_demo()  # the file outlives the app: the budget is still spent
    with TestClient(restarted.app) as client:
        assert client.get("/items").status_code == 429


def test_make_demo_installs_what_serves_metrics() -> None:
    # The README says the demo serves /metrics: `make demo` must install prometheus-client
    # (the `prometheus` extra), or the route is never made and /metrics answers 404.
    makefile = (DEMO.parents[1] / "Makefile").read_text()
    lines = [line for line in makefile.splitlines() if line.startswith("DEMO_EDITABLES :=")]
    assert len(lines) == 1
    core = next(word for word in lines[0].split() if "packages/traffik-core" in word)
    extras = core.strip('"').partition("[")[2].rstrip("]").split(",")
    assert {"starlette", "prometheus"} <= set(extras)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("nosuch://x", "no Traffik backend is registered as 'nosuch'"),
        ("memory://?max_keys=abc", "it must be a whole number"),
        ("localhost:6379", "has no scheme"),
    ],
)
def test_a_bad_backend_url_stops_the_demo_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    monkeypatch.setenv("TRAFFIK_BACKEND_URL", url)
    with pytest.raises(SystemExit) as stopped:
        load_demo()
    message = str(stopped.value.code)
    assert message.startswith(f"TRAFFIK_BACKEND_URL={url!r}: ") and problem in message, message


def test_a_bad_backend_url_stops_the_demo_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRAFFIK_BACKEND_URL", "memory://app:s3cret@host?max_keys=abc")
    with pytest.raises(SystemExit) as stopped:
        load_demo()
    message = str(stopped.value.code)
    assert "s3cret" not in message and "app:***@host" in message, message


@pytest.mark.slow  # a uvicorn process
def test_uvicorn_reports_a_bad_backend_url_without_a_traceback() -> None:
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "examples.app:app", "--port", "0"],
        cwd=DEMO.parents[1],
        env={**os.environ, "TRAFFIK_BACKEND_URL": "nosuch://x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "TRAFFIK_BACKEND_URL='nosuch://x': no Traffik backend" in result.stderr
