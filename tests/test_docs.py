"""Every page of docs/: its Python blocks, run as the one test module they read as."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
PYTEST_INI = """\
[pytest]
addopts = -p no:asyncio -p no:randomly -p no:cacheprovider
filterwarnings =
    error
    ignore:Using `httpx` with `starlette.testclient` is deprecated:UserWarning
"""


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_every_page_has_examples() -> None:
    assert PAGES, "docs/ has no pages"
    assert all(python_blocks(page) for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_the_examples_pass(page: Path, tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(PYTEST_INI)
    module = re.sub(r"\W", "_", page.stem)  # a module name: `migration-from-traffik-1.2` too
    (tmp_path / f"test_{module}.py").write_text("\n\n".join(python_blocks(page)))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"], capture_output=True, text=True, cwd=tmp_path
    )
    if result.returncode != 0:
        pytest.fail(f"{page.name} failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    assert re.search(r"^\d+ passed in", result.stdout, flags=re.MULTILINE), result.stdout
