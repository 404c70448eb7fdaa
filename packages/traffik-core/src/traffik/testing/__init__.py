"""Testing helpers for applications that use Traffik; needs nothing beyond traffik-core.

- `ManualClock`: time that moves only when a test says so.
- `fresh_backend()`: an empty, non-persistent `InMemoryBackend` on a `ManualClock`.

The pytest plugin (`traffik.testing.plugin`, loaded automatically once traffik-core is
installed) provides the `traffik_clock` and `traffik_backend` fixtures; the backend
conformance suite is `traffik.testing.conformance`. Only those two modules import pytest.
"""

from __future__ import annotations

from traffik.clock import ManualClock
from traffik.testing.backend import fresh_backend

__all__ = ["ManualClock", "fresh_backend"]
