"""`python -m traffik`: its help, its errors, and a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

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
