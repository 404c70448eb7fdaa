"""Users' code under `mypy --strict`: `tests/typing/user_app.py` (every form the docs teach)
checks clean, and every line of `tests/typing/wrong_uses.py` marked `# error` is rejected."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="the typing tests run mypy")

pytestmark = pytest.mark.slow  # a mypy run takes seconds

TYPING = Path(__file__).resolve().parent / "typing"


def mypy_errors(tmp_path: Path, module: Path) -> dict[int, list[str]]:
    """`mypy --strict` on `module` as a user runs it (no settings of this repository):
    `{line: [error messages]}`."""
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            str(module),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 2: mypy itself failed
    errors: dict[int, list[str]] = {}
    for line in result.stdout.splitlines():
        found = re.match(rf"{re.escape(str(module))}:(\d+): error: (.*)", line)
        if found:
            errors.setdefault(int(found[1]), []).append(found[2])
    return errors


def test_the_user_app_checks_clean(tmp_path: Path) -> None:
    assert mypy_errors(tmp_path, TYPING / "user_app.py") == {}


def test_every_wrong_use_is_rejected(tmp_path: Path) -> None:
    module = TYPING / "wrong_uses.py"
    lines = module.read_text().splitlines()
    marked = {number for number, line in enumerate(lines, 1) if line.endswith("# error")}
    assert len(marked) >= 10
    errors = mypy_errors(tmp_path, module)
    assert sorted(marked - errors.keys()) == [], "wrong uses the checker let through"
    assert {n: errors[n] for n in errors.keys() - marked} == {}, "errors on correct lines"
