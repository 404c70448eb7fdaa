"""The backend docs/concepts/backends.md shows how to write ("Writing a backend") passes the
conformance suite the page tells its reader to run on theirs."""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.backends.locks import LocalLockTable
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


@functools.cache
def _backend_from_a_mixin() -> Any:
    """The same backend with every method of its own in a mixin before `ThrottleBackend`
    (`class MixedDictBackend(DictOperations, ThrottleBackend)`): the base must wrap what the
    class resolves (opening the store on first use, errors as `BackendError`, `clear`
    forgetting remembered refusals), wherever it is defined."""
    documented = _documented_backend()
    skipped = {"__module__", "__qualname__", "__dict__", "__weakref__", "__doc__", "__init__"}
    operations = {k: v for k, v in vars(documented).items() if k not in skipped}
    mixin = type("DictOperations", (), operations)

    def __init__(self: Any, namespace: str = "dict", **options: Any) -> None:
        # (the page's, whose `super()` names `DictBackend`)
        ThrottleBackend.__init__(self, None, namespace=namespace, **options)
        self.locks = LocalLockTable(time.monotonic)

    return type("MixedDictBackend", (mixin, ThrottleBackend), {"__init__": __init__})


class TestTheDocumentedBackendFromAMixin(BackendConformance):
    @pytest.fixture
    def make_backend(self) -> Callable[..., Any]:
        return _backend_from_a_mixin()  # type: ignore[no-any-return]


@pytest.mark.anyio
@pytest.mark.parametrize("made", [_documented_backend, _backend_from_a_mixin])
async def test_the_base_wraps_what_the_class_resolves(made: Callable[[], Any]) -> None:
    # From a mixin, none of it was wrapped: a first use before `initialize` raised the
    # store's AttributeError (no dict yet), not opening it; `initialize` ran once per
    # caller; `clear` kept the refusals.
    from traffik.exceptions import BackendError

    backend = made()(namespace="wrapped")
    assert await backend.get("k") is None  # (opened on its first use)
    await backend.set("k", "v")
    assert await backend.get("k") == "v"
    backend.connection = None  # (the client fails: its own error, made a BackendError)
    backend.initialize = lambda: None  # type: ignore[method-assign]
    with pytest.raises(BackendError):
        await backend.get("k")
    assert getattr(type(backend).clear, "forgets_refusals", False)
