"""Testing helpers for applications that use Traffik; needs nothing beyond traffik-core.

- `ManualClock`: time that moves only when a test says so.
- `fresh_backend()`: an empty, non-persistent `InMemoryBackend` on a `ManualClock`.
- `throttle_disabled(*throttles)` and `override_rate(throttle, rate)`: context managers that
  switch throttles off or change a rate for one block, then restore them.
- `await reset_client(throttle, client, path=..., method=...)`: forget one client's budget.
- `FailingBackend(backend)`: a backend that fails on demand (`with backend.failing(error):`),
  to test what a throttle's `on_error` does.

The pytest plugin (`traffik.testing.plugin`, loaded automatically once traffik-core is
installed) provides the `traffik_clock` and `traffik_backend` fixtures; the backend
conformance suite is `traffik.testing.conformance`. Only the plugin and the conformance suite
(`traffik.testing.conformance` and the mixins it is made of) import pytest.
"""

from __future__ import annotations

from traffik.clock import ManualClock
from traffik.testing.backend import fresh_backend
from traffik.testing.failing import FailingBackend
from traffik.testing.throttles import override_rate, reset_client, throttle_disabled

__all__ = [
    "FailingBackend",
    "ManualClock",
    "fresh_backend",
    "override_rate",
    "reset_client",
    "throttle_disabled",
]
