"""`fresh_backend`: an empty in-memory backend on a test clock, one per test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from traffik.backends.inmemory import InMemoryBackend
from traffik.clock import ManualClock

if TYPE_CHECKING:
    from traffik.clock import Clock

__all__ = ["fresh_backend"]


def fresh_backend(
    namespace: str = "test", *, clock: Clock | None = None, **options: Any
) -> InMemoryBackend:
    """A new, empty, non-persistent `InMemoryBackend` whose time is a `ManualClock`.

    The clock is `backend.clock` (or the one you pass); advance it to cross a window.
    Other `options` go to `InMemoryBackend` (`max_keys=`, `on_error=`, `identifier=`, ...).
    Nothing needs starting: the backend initialises itself on first use, so it works
    with httpx's `ASGITransport` and Starlette's `TestClient`, lifespan or not.
    """
    options.setdefault("persistent", False)
    return InMemoryBackend(
        namespace=namespace, clock=ManualClock() if clock is None else clock, **options
    )
