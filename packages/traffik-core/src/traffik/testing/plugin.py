"""The pytest plugin installed with traffik-core (entry point `pytest11: traffik`).

pytest loads it by itself once traffik-core is installed (`-p no:traffik` turns it off).
Fixtures, each new for every test:

- `traffik_clock`: a `ManualClock`; `traffik_clock.advance(60)` moves time a minute on.
- `traffik_backend`: an empty, non-persistent `InMemoryBackend` on `traffik_clock` (see
  `traffik.testing.fresh_backend`); pass it as `backend=` to throttles, or as the app's
  `lifespan=traffik_backend.lifespan`. It initialises itself on first use, so clients that
  skip the lifespan (httpx's `ASGITransport`, `TestClient` outside a `with`) work too.

```python
from traffik import HTTPThrottle

async def test_limit(traffik_backend, traffik_clock):
    throttle = HTTPThrottle("api", rate="2/min", backend=traffik_backend)
    ...  # two requests pass, the third gets 429
    traffik_clock.advance(60)  # a new window, without sleeping
```
"""

from __future__ import annotations

import pytest

from traffik.backends.inmemory import InMemoryBackend
from traffik.clock import ManualClock
from traffik.testing.backend import fresh_backend

__all__ = ["traffik_backend", "traffik_clock"]


@pytest.fixture
def traffik_clock() -> ManualClock:
    """A test clock that only moves when the test advances it."""
    return ManualClock()


@pytest.fixture
def traffik_backend(traffik_clock: ManualClock) -> InMemoryBackend:
    """A fresh in-memory backend on `traffik_clock`, empty for every test."""
    return fresh_backend(clock=traffik_clock)
