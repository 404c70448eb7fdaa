"""The pytest plugin installed with traffik-core (entry point `pytest11: traffik`).

Fixtures:
- `traffik_clock`: a `ManualClock` for this test; move time with `traffik_clock.advance(seconds)`.
- `traffik_backend`: a fresh, non-persistent `InMemoryBackend` that follows `traffik_clock`;
  pass it as `backend=` to throttles or use it as the app's lifespan backend.
"""

from __future__ import annotations

import pytest

from traffik.backends.inmemory import InMemoryBackend
from traffik.clock import ManualClock

__all__ = ["traffik_backend", "traffik_clock"]


@pytest.fixture
def traffik_clock() -> ManualClock:
    """A test clock that only moves when the test advances it."""
    return ManualClock()


@pytest.fixture
def traffik_backend(traffik_clock: ManualClock) -> InMemoryBackend:
    """A fresh in-memory backend on `traffik_clock`, empty for every test."""
    return InMemoryBackend(namespace="test", persistent=False, clock=traffik_clock)
