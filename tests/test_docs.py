"""Every page of docs/: its Python blocks, run as the one test module they read as.

Each page becomes `test_<page>.py` in one directory, and one pytest process runs them all
(a process per page would spend most of its time importing FastAPI); each page's verdict is
read from that run's JUnit report.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from traffik.strategies import BUILTIN_STRATEGIES

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Pages of prose and tables only: the API reference (generated from docstrings), the
# benchmark figures and the changelog.
PROSE_ONLY = {"benchmarks.md", "changelog.md"}
PAGES = sorted(
    page
    for page in DOCS.rglob("*.md")
    if page.relative_to(DOCS).parts[0] != "reference" and page.name not in PROSE_ONLY
)
PYTEST_INI = """\
[pytest]
addopts = -p no:asyncio -p no:randomly -p no:cacheprovider
filterwarnings =
    error
    ignore:Using `httpx` with `starlette.testclient` is deprecated:UserWarning
"""


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.DOTALL | re.MULTILINE)


def module_name(page: Path) -> str:
    """`concepts/rates.md` -> `test_concepts_rates`; `migration-from-traffik-1.2` too."""
    return "test_" + re.sub(r"\W", "_", page.relative_to(DOCS).with_suffix("").as_posix())


def test_every_page_has_examples() -> None:
    assert PAGES, "docs/ has no pages"
    assert [page.name for page in PAGES if not python_blocks(page)] == []


@pytest.fixture(scope="session")
def docs_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[str]], str]:
    """Run every page once; `({module: [failure texts]}, the run's output)`."""
    root = tmp_path_factory.mktemp("docs")
    (root / "pytest.ini").write_text(PYTEST_INI)
    for page in PAGES:
        (root / f"{module_name(page)}.py").write_text("\n\n".join(python_blocks(page)))
    result = subprocess.run(
        # A page that fails to import fails alone.
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--junitxml=report.xml",
            "--continue-on-collection-errors",
        ],
        capture_output=True,
        text=True,
        cwd=root,
    )
    output = f"{result.stdout}\n{result.stderr}"
    verdicts: dict[str, list[str]] = {}
    for case in ET.parse(root / "report.xml").iter("testcase"):
        # A test's classname is its module; a module that fails to import is named by `name`.
        module = (case.get("classname") or case.get("name") or "").split(".")[-1]
        failures = [
            f"{case.get('name')}: {problem.get('message', '')}\n{problem.text or ''}"
            for problem in (*case.iter("failure"), *case.iter("error"))
        ]
        verdicts.setdefault(module, []).extend(failures)
    return verdicts, output


@pytest.mark.parametrize("page", PAGES, ids=[module_name(page)[5:] for page in PAGES])
def test_the_examples_pass(page: Path, docs_run: tuple[dict[str, list[str]], str]) -> None:
    verdicts, output = docs_run
    module = module_name(page)
    if module not in verdicts:
        pytest.fail(f"{page.name}: no test ran\n{output}", pytrace=False)
    if verdicts[module]:
        pytest.fail(f"{page.name} failed:\n" + "\n".join(verdicts[module]), pytrace=False)


def test_strategy_timelines_draw_every_builtin_strategy(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "strategy_timelines", DOCS / "gen" / "strategy_timelines.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generator  # its dataclass looks its module up
    spec.loader.exec_module(generator)
    generator.main(str(tmp_path))
    expected = {f"{strategy.__name__}.svg" for strategy in BUILTIN_STRATEGIES}
    assert {path.name for path in tmp_path.iterdir()} == expected
    for name in expected:
        figure = ET.parse(tmp_path / name).getroot()
        marks = [el for el in figure.iter() if el.tag.endswith(("circle", "path"))]
        assert len(marks) == len(generator.REQUESTS), name  # one mark per request
    page = (DOCS / "concepts" / "strategies.md").read_text()
    assert all(f"img/strategies/{name}" in page for name in expected)
