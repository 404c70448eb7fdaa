"""The built wheels keep DESIGN §1's promises: a dependency-free core, plugins found by entry point."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PACKAGES = Path(__file__).resolve().parents[1] / "packages"

CORE_MODULES = (
    "traffik",
    "traffik.rates",
    "traffik.strategies",
    "traffik.backends",
    "traffik.backends.inmemory",
    "traffik.exceptions",
    "traffik.error_handlers",
)


def run(*args: str | Path) -> str:
    """Run a command; on failure, fail the test with everything it printed."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result.stdout


class Venv:
    """A fresh virtualenv made with the interpreter that runs the tests."""

    def __init__(self, path: Path) -> None:
        run(sys.executable, "-m", "venv", path)
        self.python = path / "bin" / "python"

    def pip(self, *args: str | Path) -> str:
        return run(self.python, "-m", "pip", "--disable-pip-version-check", "--no-input", *args)

    def script(self, code: str) -> str:
        return run(self.python, "-c", textwrap.dedent(code))

    def distributions(self) -> set[str]:
        listed = json.loads(self.pip("list", "--format=json"))
        return {entry["name"].lower() for entry in listed} - {"pip", "setuptools"}


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    builder = Venv(tmp_path_factory.mktemp("builder"))
    builder.pip(
        "wheel",
        "--no-deps",
        "--wheel-dir",
        out,
        *(PACKAGES / n for n in ("traffik-core", "traffik-redis")),
    )
    return {
        name: next(out.glob(f"{name.replace('-', '_')}-*.whl"))
        for name in ("traffik-core", "traffik-redis")
    }


@pytest.fixture(scope="module")
def core_only(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Venv:
    venv = Venv(tmp_path_factory.mktemp("core-only"))
    venv.pip("install", "--no-index", wheels["traffik-core"])
    return venv


@pytest.fixture(scope="module")
def redis_without_client(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Venv:
    venv = Venv(tmp_path_factory.mktemp("redis-without-client"))
    venv.pip("install", "--no-index", "--no-deps", wheels["traffik-core"], wheels["traffik-redis"])
    return venv


def test_plugin_wheel_ships_only_its_leaf_package(wheels: dict[str, Path]) -> None:
    source = PACKAGES / "traffik-redis" / "src"
    expected = {
        path.relative_to(source).as_posix()
        for path in source.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(wheels["traffik-redis"]) as wheel:
        shipped = {n for n in wheel.namelist() if not n.startswith("traffik_redis-")}
    assert shipped == expected
    assert all(name.startswith("traffik/backends/redis/") for name in shipped)


def test_core_installs_nothing_else(core_only: Venv) -> None:
    assert core_only.distributions() == {"traffik-core"}


def test_core_imports_only_the_standard_library(core_only: Venv) -> None:
    foreign = core_only.script(
        f"""
        import importlib, json, sys, sysconfig

        stdlib_dirs = tuple({{sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")}})
        before = set(sys.modules)
        for name in {CORE_MODULES!r}:
            importlib.import_module(name)

        def is_stdlib(name):
            if hasattr(sys, "stdlib_module_names"):
                return name.partition(".")[0] in sys.stdlib_module_names
            origin = getattr(sys.modules[name], "__file__", None)  # Python 3.9
            return origin is None or (
                origin.startswith(stdlib_dirs) and "site-packages" not in origin
            )

        print(json.dumps(sorted(
            name for name in set(sys.modules) - before
            if not (name == "traffik" or name.startswith("traffik.") or is_stdlib(name))
        )))
        """
    )
    assert json.loads(foreign) == []


def test_core_registers_the_memory_backend(core_only: Venv) -> None:
    name = core_only.script(
        """
        import traffik.backends
        print(type(traffik.backends.from_url("memory://")).__name__)
        """
    )
    assert name.strip() == "InMemoryBackend"


def test_missing_plugin_says_what_to_install(core_only: Venv) -> None:
    message = core_only.script(
        """
        from traffik.backends import get_backend_class
        try:
            get_backend_class("redis")
        except Exception as exc:
            print(exc)
        else:
            print("no error")
        """
    )
    assert "pip install traffik-redis" in message


def test_plugin_without_its_client_library_names_both(redis_without_client: Venv) -> None:
    assert redis_without_client.distributions() == {"traffik-core", "traffik-redis"}
    result = json.loads(
        redis_without_client.script(
            """
            import json
            from traffik.backends import available, get_backend_class
            try:
                get_backend_class("redis")
            except Exception as exc:
                message = str(exc)
            else:
                message = "no error"
            print(json.dumps({"available": sorted(available()), "message": message}))
            """
        )
    )
    assert "redis" in result["available"]
    message = result["message"]
    assert "traffik-redis" in message
    client_library = ("No module named 'redis'", "redis-py", "pip install redis")
    assert any(name in message for name in client_library), message


def test_plugin_with_its_client_library_loads(
    wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    venv = Venv(tmp_path_factory.mktemp("redis"))
    venv.pip("install", "--no-deps", wheels["traffik-core"], wheels["traffik-redis"])
    venv.pip("install", redis_requirement())
    name = venv.script(
        """
        from traffik.backends import get_backend_class
        print(get_backend_class("redis").__name__)
        """
    )
    assert name.strip() == "RedisBackend"


def redis_requirement() -> str:
    """The redis-py this suite runs with: already in the pip cache and resolved for this Python."""
    try:
        return f"redis=={importlib.metadata.version('redis')}"
    except importlib.metadata.PackageNotFoundError:
        return "redis>=5"


def test_the_compat_job_runs_on_the_declared_minimums() -> None:
    # `make test-starlette-compat` (in CI) runs the Starlette-facing tests on the oldest
    # releases traffik-core's pyproject declares: a minimum raised or lowered in one place
    # only would leave the other untested. (Older releases fail: Starlette 0.40 does not
    # answer a WebSocket handshake a throttle refuses, 0.41 breaks traffik 1.2's positional
    # `Middleware(ThrottleMiddleware, ...)`, opentelemetry-api before 1.30 rejects the
    # histogram's bucket advice.)
    pyproject = (PACKAGES / "traffik-core" / "pyproject.toml").read_text()
    extras = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    declared = dict(re.findall(r'"([a-z-]+)>=([\d.]+)"', extras))
    makefile = (PACKAGES.parent / "Makefile").read_text()
    line = next(line for line in makefile.splitlines() if line.startswith("COMPAT_DEPS :="))
    pinned = dict(re.findall(r'"([a-z-]+)==([\d.]+)\.\*"', line))
    for name in ("starlette", "prometheus-client", "opentelemetry-api"):
        assert pinned[name] == declared[name], (name, pinned, declared)
