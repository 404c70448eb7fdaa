"""`python -m traffik`: its help, its errors, and a real SQLite file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from traffik.cli import main
from traffik.testing.command_line import check_command_line, run_command_line


def test_help_names_the_commands() -> None:
    result = run_command_line("--help")
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("keys", "inspect", "reset"))


@pytest.mark.slow  # several `python -m traffik` processes
def test_keys_inspect_and_reset_on_a_sqlite_file(tmp_path: Path) -> None:
    check_command_line(f"sqlite:///{tmp_path / 'traffik.db'}")


@pytest.mark.slow  # three `python -m traffik` processes
def test_bad_arguments_are_exit_status_2_with_a_clear_message() -> None:
    unknown = run_command_line("keys", "nosuch://x")
    assert (
        unknown.returncode == 2 and "no Traffik backend is registered as 'nosuch'" in unknown.stderr
    )
    no_scheme = run_command_line("keys", "localhost:6379")
    assert no_scheme.returncode == 2 and "has no scheme" in no_scheme.stderr
    bad_command = run_command_line("explode", "memory://")
    assert bad_command.returncode == 2


@pytest.mark.slow  # several `python -m traffik` processes
def test_limit_must_be_a_whole_number_of_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'traffik.db'}"
    for bad in ("-1", "0", "many"):
        result = run_command_line("keys", url, "--limit", bad)
        assert result.returncode == 2, result.stderr
        assert f"{bad!r} is not a number of keys" in result.stderr and ">= 1" in result.stderr


@pytest.mark.slow  # several `python -m traffik` processes
def test_reset_removes_past_the_limit_and_keys_say_there_are_more(tmp_path: Path) -> None:
    import asyncio

    from traffik.backends import from_url
    from traffik.buckets import bucket_prefix

    url = f"sqlite:///{tmp_path / 'traffik.db'}"

    async def fill() -> None:
        backend = from_url(url, namespace="app")
        try:
            prefix = backend.get_key(bucket_prefix("api", None))
            for n in range(25):
                await backend.set(f"{prefix}{{c{n}}}:GET:/", "1", expire=600)
        finally:
            await backend.close()

    asyncio.run(fill())
    scope = ("--namespace", "app", "--throttle", "api", "--limit", "10")
    listed = run_command_line("keys", url, *scope)
    assert "10 key(s) (the first 10; raise --limit to see more)" in listed.stdout, listed.stdout
    reset = run_command_line("reset", url, *scope)
    assert reset.returncode == 0 and "removed 25 key(s)" in reset.stdout, reset.stdout
    assert "0 key(s)" in run_command_line("keys", url, *scope).stdout


def run_main(*argv: str) -> tuple[int, str, str]:
    """`main(argv)` in this process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    from traffik.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(list(argv), out=out)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("url", ["memory://", "inmemory://app", "sqlite:///:memory:"])
@pytest.mark.parametrize("command", [("keys",), ("inspect", "--throttle", "api")])
def test_a_store_only_one_process_sees_is_refused(url: str, command: tuple[str, ...]) -> None:
    """The command runs in a process of its own: it can never see an app's in-memory counters,
    so it must not report "0 key(s)" or "removed 0 key(s)" as if it had looked."""
    for argv in ((command[0], url, *command[1:]), ("reset", url, "--throttle", "api")):
        status, out, err = run_main(*argv)
        assert status == 2 and out == "", (argv, out)
        assert url in err and "in-memory" in err, err
        assert "sqlite:///" in err and "redis://" in err, err  # what would work


def test_a_missing_sqlite_file_is_named_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    for argv in (("keys",), ("reset", "--throttle", "api")):
        status, out, err = run_main(argv[0], f"sqlite:///{missing}", *argv[1:])
        assert status == 2 and out == "", out
        assert f"no SQLite file at {str(missing)!r}" in err, err
    assert list(tmp_path.iterdir()) == [], "the command created the file it was asked to read"


def test_a_relative_sqlite_path_names_the_directory_it_was_looked_for_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main("keys", "sqlite:///traffik.db")
    assert status == 2 and f"in {str(tmp_path)!r}" in err, err
    (tmp_path / "traffik.db").touch()  # an existing file is read (an empty one has no keys)
    status, out, _ = run_main("keys", "sqlite:///traffik.db")
    assert status == 0 and out.startswith("0 key(s)\n")


@pytest.mark.parametrize("option", ["--throttle", "--client", "--namespace"])
def test_an_empty_name_is_refused(option: str) -> None:
    argv = ["keys", "redis://127.0.0.1:1/0", option, ""]
    if option == "--client":
        argv += ["--throttle", "api"]
    with pytest.raises(SystemExit) as exited:
        run_main(*argv)
    assert exited.value.code == 2


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("redis://user:s3cret@127.0.0.1:1/0", 1),  # unreachable: the store named, no password
        ("redis://127.0.0.1:1/0?password=s3cret", 1),
        ("redis://user:s3cret@127.0.0.1:1/zero", 2),  # a bad URL
        ("memcached://user:s3cret@127.0.0.1:1", 2),
        ("memory://user:s3cret@app", 2),  # a store private to one process
        ("user:s3cret@127.0.0.1:6379", 2),  # no scheme
    ],
)
def test_a_password_in_the_url_is_never_printed(url: str, status: int) -> None:
    pytest.importorskip("traffik.backends.redis")
    for argv in (("keys", url), ("inspect", url, "--throttle", "api")):
        got, out, err = run_main(*argv)
        assert got == status, err
        assert "s3cret" not in out + err and "***" in err, err


@pytest.mark.slow  # two `python -m traffik` processes
def test_an_ipv6_client_is_named_by_its_network_and_the_output_says_so(tmp_path: Path) -> None:
    """The default identity counts an IPv6 client by its /64: naming the address finds no key,
    and the output names the client to give instead."""
    import asyncio

    from starlette.requests import Request

    from traffik import HTTPThrottle
    from traffik.backends import from_url

    url = f"sqlite:///{tmp_path / 'traffik.db'}"

    async def hit() -> None:
        backend = from_url(url, namespace="app")
        try:
            throttle = HTTPThrottle("api", "5/min", backend=backend)
            scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
            await throttle.hit(Request({**scope, "client": ("2001:db8:1:2::7", 1)}))
        finally:
            await backend.close()

    asyncio.run(hit())
    named = ("--namespace", "app", "--throttle", "api", "--client")
    by_address = run_command_line("inspect", url, *named, "2001:db8:1:2::7")
    assert by_address.returncode == 0, by_address.stderr
    assert "0 key(s)" in by_address.stdout
    assert "try --client 2001:db8:1:2::/64" in by_address.stdout
    by_network = run_command_line("inspect", url, *named, "2001:db8:1:2::/64")
    assert "1 key(s)" in by_network.stdout and "try --client" not in by_network.stdout


@pytest.mark.slow  # three `python -m traffik` processes
def test_without_a_namespace_an_empty_answer_names_the_namespace_searched(tmp_path: Path) -> None:
    """An app's `namespace=` is not in its URL: a command without `--namespace` searches the
    backend's default, and when it finds nothing it says which one and what to pass (it
    printed `removed 0 key(s)` alone, which reads as done)."""
    import asyncio

    from traffik.backends import from_url
    from traffik.buckets import bucket_prefix

    url = f"sqlite:///{tmp_path / 'traffik.db'}"

    async def fill() -> None:
        backend = from_url(url, namespace="api")
        try:
            await backend.set(backend.get_key(bucket_prefix("items", None)) + "{c}:GET:/", "1")
        finally:
            await backend.close()

    asyncio.run(fill())
    for command in ("keys", "reset"):
        result = run_command_line(command, url, "--throttle", "items")
        assert result.returncode == 0, result.stderr
        assert "searched namespace 'sqlite'" in result.stdout
        assert "pass --namespace" in result.stdout
    found = run_command_line("keys", url, "--namespace", "api", "--throttle", "items")
    assert "1 key(s)" in found.stdout and "searched" not in found.stdout


def test_a_backend_that_cannot_list_keys_says_what_it_lacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every command lists keys by prefix: naming a client and a throttle cannot help a
    # backend without `scan`, so the message says what it needs instead.
    from traffik.backends import _plugins
    from traffik.backends.base import ThrottleBackend

    class NoScan(ThrottleBackend):
        pass

    module = type(sys)("traffik_test_noscan")
    module.NoScan = NoScan  # type: ignore[attr-defined]
    sys.modules["traffik_test_noscan"] = module
    plugins = _plugins.discover()
    plugins["noscan"] = _plugins.Plugin("noscan", "traffik_test_noscan:NoScan", "noscan-dist")
    try:
        for argv in (["keys"], ["inspect", "--throttle", "api", "--client", "1.2.3.4"]):
            assert main([argv[0], "noscan://x", *argv[1:]]) == 2
            error = capsys.readouterr().err
            assert "scan(prefix, limit)" in error and "name a client" not in error
    finally:
        del plugins["noscan"], sys.modules["traffik_test_noscan"]
