"""The Python blocks of docs/testing.md, run as the one test module they read as."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "testing.md"
PYTEST_INI = """\
[pytest]
addopts = -p no:asyncio -p no:randomly -p no:cacheprovider
filterwarnings =
    error
    ignore:Using `httpx` with `starlette.testclient` is deprecated:UserWarning
"""


def test_the_examples_pass(tmp_path: Path) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.DOTALL | re.MULTILINE)
    assert len(blocks) >= 6, "docs/testing.md lost its examples"
    (tmp_path / "pytest.ini").write_text(PYTEST_INI)
    (tmp_path / "test_docs.py").write_text("\n\n".join(blocks))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"], capture_output=True, text=True, cwd=tmp_path
    )
    if result.returncode != 0:
        pytest.fail(f"the examples failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    assert re.search(r"^\d+ passed in", result.stdout, flags=re.MULTILINE), result.stdout
