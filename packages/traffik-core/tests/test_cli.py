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
