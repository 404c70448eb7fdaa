"""The shared backend conformance suite, run against `SQLiteBackend` on a file and in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from traffik.backends.sqlite import SQLiteBackend
from traffik.testing.conformance import BackendConformance, SharedStoreConformance


class TestSQLiteFileConformance(BackendConformance, SharedStoreConformance):
    exact_walks = 25  # every walk opens the file again; enough walks to cover each strategy

    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> Callable[..., SQLiteBackend]:
        url = f"sqlite:///{tmp_path / 'traffik.db'}"
        return lambda **options: SQLiteBackend(url, **options)


class TestSQLiteMemoryConformance(BackendConformance):
    exact_walks = 40

    @pytest.fixture
    def make_backend(self) -> Callable[..., SQLiteBackend]:
        return lambda **options: SQLiteBackend("sqlite:///:memory:", **options)
