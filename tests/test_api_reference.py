"""The API reference (docs/reference/) covers every public name of every distribution.

A module is public when no part of its dotted name starts with `_`; its public names are its
`__all__`. Every public module needs a `::: module` directive, and, in the built site's
inventory (`objects.inv`), every public name needs an entry: under the module that exports
it, or wherever the same object is documented (a re-export such as `traffik.HTTPThrottle`
links to `traffik.throttles.HTTPThrottle`).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"
SITE_INVENTORY = ROOT / "site" / "objects.inv"


NOT_IMPORTABLE = {
    "traffik.backends.multiprocess",
    "traffik.backends.redis.coredis",
    "traffik.backends.memcached.emcache",
}
"""traffik 1.2's paths kept only to say what to use instead: importing them raises."""


def public_modules() -> list[str]:
    names = []
    for src in sorted(ROOT.glob("packages/*/src")):
        for path in sorted(src.rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            public = parts and not any(part.startswith("_") for part in parts)
            if public and name not in NOT_IMPORTABLE:
                names.append(name)
    return names


MODULES = public_modules()


def exported(module: ModuleType) -> list[str]:
    return list(getattr(module, "__all__", ()))


def directives() -> dict[str, str]:
    """`{module: page}` for every `::: module` directive of the reference."""
    found = {}
    for page in sorted(REFERENCE.glob("*.md")):
        for name in re.findall(r"^::: ([\w.]+)$", page.read_text(), flags=re.MULTILINE):
            found[name] = page.name
    return found


def test_every_public_module_has_a_directive() -> None:
    assert len(MODULES) > 50, MODULES
    missing = [name for name in MODULES if name not in directives()]
    assert missing == [], f"add `::: <module>` to a page of docs/reference/ for {missing}"


def test_every_directive_names_a_public_module() -> None:
    unknown = sorted(set(directives()) - set(MODULES))
    assert unknown == [], f"docs/reference/ documents modules that do not exist: {unknown}"


def test_the_traffik_page_lists_every_name_traffik_exports() -> None:
    import traffik

    page = (REFERENCE / "traffik.md").read_text()
    listed = set(re.findall(r"^\| \[`(\w+)`\]", page, flags=re.MULTILINE))
    assert sorted(set(traffik.__all__) - listed) == []


def inventory(path: Path) -> set[str]:
    """The object names of a Sphinx inventory (version 2: four header lines, then zlib)."""
    data = path.read_bytes()
    start = 0
    for _ in range(4):
        start = data.index(b"\n", start) + 1
    lines = zlib.decompress(data[start:]).decode().splitlines()
    return {line.split(" ", 1)[0] for line in lines}


def site_inventory(tmp_path: Path) -> set[str]:
    """site/objects.inv when it is newer than every input, else a build of the site."""
    inputs = [
        ROOT / "mkdocs.yml",
        *REFERENCE.glob("*.md"),
        *(p for src in ROOT.glob("packages/*/src") for p in src.rglob("*.py")),
    ]
    if SITE_INVENTORY.exists() and SITE_INVENTORY.stat().st_mtime >= max(
        p.stat().st_mtime for p in inputs
    ):
        return inventory(SITE_INVENTORY)
    pytest.importorskip("mkdocs", reason="the docs dependencies (make docs) are not installed")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build failed:\n{result.stdout}\n{result.stderr}"
    return inventory(site / "objects.inv")


@pytest.mark.slow
def test_every_public_name_has_an_entry(tmp_path: Path) -> None:
    documented = site_inventory(tmp_path)
    modules = {name: importlib.import_module(name) for name in MODULES}
    # Where each object is exported, by identity: a re-export counts where the object is
    # documented under any public name.
    homes: dict[int, set[str]] = {}
    for name, module in modules.items():
        for attr in exported(module):
            homes.setdefault(id(getattr(module, attr)), set()).add(f"{name}.{attr}")
    missing = [
        f"{name}.{attr}"
        for name, module in modules.items()
        for attr in exported(module)
        if not homes[id(getattr(module, attr))] & documented
    ]
    assert missing == [], f"public names with no entry in the API reference: {missing}"
