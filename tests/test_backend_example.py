"""The backend docs/concepts/backends.md shows how to write ("Writing a backend") passes the
conformance suite the page tells its reader to run on theirs."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from traffik.testing.conformance import BackendConformance

PAGE = Path(__file__).resolve().parents[1] / "docs" / "concepts" / "backends.md"


@functools.cache
def _documented_backend() -> Any:
    """`DictBackend`, from the page's Python blocks run as one module (as tests/test_docs.py
    runs them)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(), re.DOTALL | re.MULTILINE)
    namespace: dict[str, Any] = {"__name__": "backends_page"}
    exec(compile("\n".join(blocks), str(PAGE), "exec"), namespace)
    return namespace["DictBackend"]


class TestTheDocumentedBackend(BackendConformance):
    @pytest.fixture
    def make_backend(self) -> Callable[..., Any]:
        return _documented_backend()  # type: ignore[no-any-return]
