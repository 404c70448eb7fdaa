"""The shared backend conformance suite, run against `InMemoryBackend`."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from traffik.backends.inmemory import InMemoryBackend
from traffik.testing.conformance import BackendConformance


class TestInMemoryConformance(BackendConformance):
    @pytest.fixture
    def make_backend(self) -> Callable[..., InMemoryBackend]:
        store: dict[str, InMemoryBackend] = {}

        def make(**options: Any) -> InMemoryBackend:
            return store.setdefault(options["namespace"], InMemoryBackend(**options))

        return make
