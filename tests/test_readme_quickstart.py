"""The README's quickstart works as written: its `pip install` line, from the built wheels, in a
fresh virtualenv, then its first Python snippet, serving the 429 it promises."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def packaging_helpers() -> ModuleType:
    """tests/test_packaging.py, for its `Venv` (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "traffik_packaging_helpers", ROOT / "tests" / "test_packaging.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quickstart() -> tuple[list[str], str]:
    """The requirements of the README's first `pip install` line and its first Python block."""
    text = README.read_text()
    snippet = re.search(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)
    assert snippet, "README.md has no ```python block"
    before = text[: snippet.start()]
    line = re.search(r"^pip install (.+?)(?:\s+#.*)?$", before, flags=re.MULTILINE)
    assert line, "README.md: no `pip install` line before the first Python block"
    return shlex.split(line.group(1)), snippet.group(1)


# Drives the app through raw ASGI calls, so the venv needs nothing the README did not install.
DRIVER = """
import asyncio, json
from quickstart import app

async def get(path):
    messages = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"test")], "client": ("203.0.113.7", 1234),
             "server": ("test", 80)}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers

async def main():
    answers = [await get("/items") for _ in range(101)]
    print(json.dumps({"statuses": [s for s, _ in answers], "last": answers[-1][1]}))

asyncio.run(main())
"""


def test_the_readme_quickstart_runs_from_the_wheels(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    helpers = packaging_helpers()
    requirements, snippet = quickstart()
    assert requirements, "the README's pip install line names nothing"
    wheels = tmp_path_factory.mktemp("wheels")
    builder = helpers.Venv(tmp_path_factory.mktemp("builder"))
    builder.pip(
        "wheel",
        "--no-deps",
        "--wheel-dir",
        wheels,
        *(ROOT / "packages" / name for name in ("traffik-core", "traffik-fastapi")),
    )
    venv = helpers.Venv(tmp_path_factory.mktemp("reader"))
    # Our distributions come from the wheels just built; their dependencies from the index.
    venv.pip("install", "--find-links", wheels, *requirements)
    installed = venv.distributions()
    assert {"traffik-core", "traffik-fastapi", "fastapi", "starlette"} <= installed
    # From the wheels of this tree, not a release of the same name on the index.
    shipped = venv.script(
        "import traffik.throttles; print(open(traffik.throttles.__file__).read())"
    )
    source = ROOT / "packages" / "traffik-core" / "src" / "traffik" / "throttles" / "__init__.py"
    assert shipped == source.read_text() + "\n"

    app_dir = tmp_path_factory.mktemp("app")
    (app_dir / "quickstart.py").write_text(snippet)
    (app_dir / "driver.py").write_text(DRIVER)
    # Run as a file, the driver finds quickstart.py beside it.
    answers = json.loads(helpers.run(venv.python, app_dir / "driver.py"))
    assert answers["statuses"] == [200] * 100 + [429]
    assert answers["last"]["retry-after"] == "60"
