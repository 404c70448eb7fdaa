"""A test written as a user writes it passes against the built wheel of traffik-core.

The wheel is built and installed into a fresh virtualenv with Starlette, FastAPI, httpx,
pytest and anyio from the index (the versions this suite runs with, so pip's cache serves
them). The user's first test module uses nothing of ours but the plugin's fixtures, which
pytest loads through the `pytest11` entry point, and `from traffik import HTTPThrottle`; a
second one uses the helpers of `traffik.testing`, to show they ship in the wheel.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CORE = Path(__file__).resolve().parents[1] / "packages" / "traffik-core"
FROM_THE_INDEX = {
    "starlette": "starlette>=0.42",
    "fastapi": "fastapi>=0.128.2",
    "httpx": "httpx>=0.27",
    "pytest": "pytest>=8",
    "anyio": "anyio>=4",
}

USER_TEST = """
import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.testclient import TestClient

from traffik import HTTPThrottle


@pytest.fixture
def app(traffik_backend):
    throttle = HTTPThrottle("api:items", rate="2/min", backend=traffik_backend)
    app = FastAPI(lifespan=traffik_backend.lifespan)

    @app.get("/items")
    async def items(request: Request = Depends(throttle)):
        return {"items": [1, 2, 3]}

    return app


@pytest.mark.anyio
async def test_limit_then_next_window(app, traffik_clock):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert [(await client.get("/items")).status_code for _ in range(3)] == [200, 200, 429]
        traffik_clock.advance(60)
        assert (await client.get("/items")).status_code == 200


def test_every_test_starts_with_an_empty_backend(app):
    with TestClient(app) as client:
        assert [client.get("/items").status_code for _ in range(3)] == [200, 200, 429]
"""


USER_KIT_TEST = """
import httpx
import pytest
from fastapi import Depends, FastAPI

from traffik import HTTPThrottle
from traffik.testing import fresh_backend, override_rate, reset_client, throttle_disabled


@pytest.mark.anyio
async def test_the_kit_ships_in_the_wheel():
    throttle = HTTPThrottle("api:kit", rate="1/min", backend=fresh_backend())
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(throttle)])
    async def items():
        return {"items": []}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with throttle_disabled(throttle), override_rate(throttle, "5/min"):
            assert [(await client.get("/items")).status_code for _ in range(3)] == [200] * 3
        assert [(await client.get("/items")).status_code for _ in range(2)] == [200, 429]
        assert await reset_client(throttle, "127.0.0.1", path="/items")
        assert (await client.get("/items")).status_code == 200
"""


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; on failure, fail the test with everything it printed."""
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result.stdout


def requirement(name: str) -> str:
    """`name==<the version running this suite>`, already in pip's cache; else a range."""
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return FROM_THE_INDEX[name]


@pytest.fixture(scope="module")
def user_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the traffik-core wheel and the user's test dependencies."""
    venv = tmp_path_factory.mktemp("user-venv")
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    pip = (python, "-m", "pip", "--disable-pip-version-check", "--no-input")
    wheels = tmp_path_factory.mktemp("wheels")
    run(*pip, "wheel", "--no-deps", "--wheel-dir", wheels, CORE)
    (wheel,) = wheels.glob("traffik_core-*.whl")
    run(*pip, "install", wheel, *(requirement(name) for name in FROM_THE_INDEX))
    return python


def user_env() -> dict[str, str]:
    """This environment without what would point pytest or Python back at this repository."""
    dropped = ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    return env


def test_traffik_comes_from_the_wheel(user_python: Path) -> None:
    location = run(user_python, "-c", "import traffik.testing.plugin as p; print(p.__file__)")
    assert "site-packages" in location and str(CORE) not in location


def test_a_user_test_passes_with_the_plugin_fixtures(user_python: Path, tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_limits.py").write_text(textwrap.dedent(USER_TEST))
    (tmp_path / "test_kit.py").write_text(textwrap.dedent(USER_KIT_TEST))
    output = run(
        user_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=tmp_path, env=user_env()
    )
    assert "3 passed" in output, output
