"""docker-compose.yml, docker-test.sh and the runner's Dockerfile say what the seed page promises.

Docker itself does not run here, so the compose file is read with PyYAML (a test dependency)
and checked for the services and settings the workflow needs; `docker compose config` (or
the standalone `docker-compose config`) validates it against the Compose schema too when
either is installed. The script is run for its `--help` and checked by `shellcheck`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCRIPT = ROOT / "docker-test.sh"
COMMANDS = ("test", "test-fast", "test-matrix", "dev")
MATRIX = ("3.9", "3.10", "3.11", "3.12", "3.13")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(compose, dict)
    found: dict[str, Any] = compose["services"]
    return found


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_compose_file_passes_compose_config() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "image", "port", "probe"),
    [
        ("redis", "redis:7-alpine", 6379, "redis-cli ping"),
        ("memcached", "memcached:1.6-alpine", 11211, "nc 127.0.0.1 11211"),
    ],
)
def test_servers_have_healthchecks_and_loopback_ports(
    services: dict[str, Any], name: str, image: str, port: int, probe: str
) -> None:
    service = services[name]
    assert service["image"] == image
    assert probe in " ".join(service["healthcheck"]["test"][1:])
    (published,) = service["ports"]
    assert re.fullmatch(rf"127\.0\.0\.1:\$\{{\w+:-{port}\}}:{port}", published), published


@pytest.mark.parametrize("name", ["tests", "dev"])
def test_runners_wait_for_healthy_servers_and_know_their_urls(
    services: dict[str, Any], name: str
) -> None:
    runner = services[name]
    assert runner["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "memcached": {"condition": "service_healthy"},
    }
    assert runner["environment"] == {
        "TRAFFIK_REDIS_URL": "redis://redis:6379/0",
        "TRAFFIK_MEMCACHED_URL": "memcached://memcached:11211",
    }
    build = runner["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert "PYTHON_VERSION" in build["args"]


def test_dev_is_a_shell_on_the_working_tree(services: dict[str, Any]) -> None:
    dev = services["dev"]
    assert dev["command"] == ["bash"] and dev["stdin_open"] and dev["tty"]
    assert ".:/traffik" in dev["volumes"]


def test_runner_image_has_make_the_servers_and_a_python_per_version() -> None:
    dockerfile = (ROOT / "docker" / "tests.Dockerfile").read_text()
    assert "ARG PYTHON_VERSION" in dockerfile
    assert "FROM python:${PYTHON_VERSION}-slim" in dockerfile
    for package in ("make", "redis-server", "memcached"):
        assert re.search(rf"apt-get install[^\n]*\b{package}\b", dockerfile), package
    assert "make install" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_script_help_lists_the_four_commands() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    )
    listed = re.findall(r"^  ([a-z-]+)\s", result.stdout, flags=re.MULTILINE)
    assert tuple(listed) == COMMANDS


def test_script_handles_each_command() -> None:
    script = SCRIPT.read_text()
    assert script.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in script
    assert SCRIPT.stat().st_mode & 0o111, "docker-test.sh is not executable"
    branches = re.findall(r"^  ([a-z-]+)\)$", script, flags=re.MULTILINE)
    assert tuple(branches) == COMMANDS
    fast = script[script.index("  test-fast)") : script.index("  test-matrix)")]
    assert "SKIP_REDIS_TESTS=true" in fast and "SKIP_MEMCACHED_TESTS=true" in fast
    assert f"MATRIX_PYTHONS=({' '.join(MATRIX)})" in script


def test_script_rejects_an_unknown_command() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "deploy"], capture_output=True, text=True)
    assert result.returncode == 2 and "test-matrix" in result.stderr


def test_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _run_script(
    tmp_path: Path, command: str, docker: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`docker-test.sh command` with `docker` (a bash body) as the only docker on PATH; the
    compose calls it received, one line each (`PYTHON_VERSION args...`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "docker"
    stub.write_text(f"#!/usr/bin/env bash\n{docker}\n")
    stub.chmod(0o755)
    log = tmp_path / "calls"
    log.touch()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(log), "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(SCRIPT), command],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return result, log.read_text().splitlines()


RECORDING_DOCKER = """\
[ "$1 $2" = "compose version" ] && exit 0
echo "${PYTHON_VERSION:-} ${*}" >> "$CALLS"
"""


@pytest.mark.parametrize("command", COMMANDS)
def test_script_without_compose_says_so_once(tmp_path: Path, command: str) -> None:
    result, _ = _run_script(tmp_path, command, "exit 1")
    assert result.returncode == 1
    assert result.stderr.count("needs Docker Compose") == 1, result.stderr
    assert "docker-compose" in result.stderr and "docker compose" in result.stderr


def test_script_test_runs_make_test_with_ci_then_stops_the_services(tmp_path: Path) -> None:
    result, calls = _run_script(tmp_path, "test", RECORDING_DOCKER)
    assert result.returncode == 0, result.stderr
    assert calls == [
        " compose build tests",
        " compose run --rm -T -e CI=true tests make test",
        " compose down --remove-orphans",
    ]


def test_script_test_fast_skips_the_servers_and_starts_none(tmp_path: Path) -> None:
    result, calls = _run_script(tmp_path, "test-fast", RECORDING_DOCKER)
    assert result.returncode == 0, result.stderr
    assert calls == [
        " compose build tests",
        " compose run --rm -T --no-deps -e SKIP_REDIS_TESTS=true -e SKIP_MEMCACHED_TESTS=true "
        "tests make test-fast",
    ]


def test_script_test_matrix_builds_and_runs_each_python(tmp_path: Path) -> None:
    result, calls = _run_script(tmp_path, "test-matrix", RECORDING_DOCKER)
    assert result.returncode == 0, result.stderr
    expected = []
    for version in MATRIX:
        expected += [
            f"{version} compose build tests",
            f"{version} compose run --rm -T -e CI=true tests make pytest",
        ]
    assert calls == [*expected, f"{MATRIX[-1]} compose down --remove-orphans"]
    assert f"passed under Python {' '.join(MATRIX)}" in result.stdout


def test_script_test_matrix_names_the_versions_that_failed(tmp_path: Path) -> None:
    failing_310 = RECORDING_DOCKER + 'if [ "$2 $PYTHON_VERSION" = "run 3.10" ]; then exit 1; fi\n'
    result, calls = _run_script(tmp_path, "test-matrix", failing_310)
    assert result.returncode == 1
    assert "test-matrix failed under Python 3.10" in result.stderr
    assert f"{MATRIX[-1]} compose run --rm -T -e CI=true tests make pytest" in calls


def test_dev_keeps_every_virtualenv_of_the_makefile_in_a_volume(services: dict[str, Any]) -> None:
    """The working tree is mounted from the host: a virtualenv the host made there (its
    interpreter is the host's) would shadow the container's, so each one the Makefile makes
    lives in a volume of its own."""
    makefile = (ROOT / "Makefile").read_text()
    venvs = re.findall(r"^\w*VENV := (\S+)$", makefile, flags=re.MULTILINE)
    assert ".venv" in venvs and len(venvs) >= 2, venvs
    mounted = {entry.split(":")[1] for entry in services["dev"]["volumes"]}
    assert {f"/traffik/{venv}" for venv in venvs} <= mounted
