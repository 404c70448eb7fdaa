"""Entering a backend whose store cannot be reached: started anyway (its circuits open, a warning
says so) unless `fail_fast`; a bad setting still fails the start. Leaving one: closed without
its reset (a warning says so), never failing the shutdown."""

from __future__ import annotations

import logging
import warnings

import pytest

from traffik import InMemoryBackend
from traffik.backends.health import CircuitPolicy, CircuitState, StoreCircuit
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError
from traffik.testing import FailingBackend

pytestmark = pytest.mark.anyio


def _unreachable(**options: object) -> FailingBackend:
    backend = FailingBackend(InMemoryBackend(namespace="down"))
    backend.fail(BackendConnectionError("connection refused"))
    for name, value in options.items():
        setattr(backend, name, value)
    return backend


async def test_an_unreachable_store_is_entered_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = _unreachable()

    async def probe() -> None:
        raise BackendConnectionError("still down")

    backend.circuits = (StoreCircuit("down", probe, CircuitPolicy(probe_interval=10.0)),)
    caplog.set_level(logging.WARNING, "traffik")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # leaving must not warn "closed inside its context"
        async with backend:
            assert backend.circuits[0].state is not CircuitState.CLOSED
            assert not backend.initialized
            assert any("cannot be reached at start-up" in r.getMessage() for r in caplog.records)
    assert backend.explicitly_closed
    assert backend.circuits[0].state is CircuitState.CLOSED  # stopped with the backend


async def test_fail_fast_raises_from_the_backend_or_the_context() -> None:
    with pytest.raises(BackendConnectionError, match="connection refused"):
        async with _unreachable(fail_fast=True):
            pass
    with pytest.raises(BackendConnectionError, match="connection refused"):
        async with _unreachable()(fail_fast=True):
            pass
    backend = _unreachable()
    with pytest.raises(BackendConnectionError):
        async with backend.lifespan(None, fail_fast=True):
            pass


@pytest.mark.parametrize("error", [BackendError("corrupt file"), ConfigurationError("bad")])
async def test_other_errors_still_fail_the_start(error: Exception) -> None:
    backend = FailingBackend(InMemoryBackend(namespace="bad"))
    backend.fail(error)
    with pytest.raises(type(error)):
        async with backend:
            pass


def test_fail_fast_is_a_backend_setting() -> None:
    assert InMemoryBackend().fail_fast is False
    assert InMemoryBackend(fail_fast=True).fail_fast is True


async def test_a_store_unreachable_at_shutdown_is_logged_once_and_closed_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A non-persistent backend whose store stopped answering before the app stops: the
    reset is left out (one warning names the store and its namespace), the backend is
    closed all the same, and the lifespan exits cleanly (no "Application shutdown failed")."""
    backend = FailingBackend(InMemoryBackend(namespace="gone"))
    caplog.set_level(logging.WARNING, "traffik")
    async with backend.lifespan(None):
        backend.fail(BackendConnectionError("SCAN timed out"), operations="clear")
    assert backend.explicitly_closed
    lines = [r.getMessage() for r in caplog.records if r.name == "traffik"]
    assert len(lines) == 1, lines
    assert "FailingBackend" in lines[0] and "'gone'" in lines[0], lines[0]
    assert "not reset" in lines[0] and "SCAN timed out" in lines[0], lines[0]


async def test_another_failure_to_reset_at_shutdown_is_raised_once_closed() -> None:
    backend = FailingBackend(InMemoryBackend(namespace="corrupt"))
    with pytest.raises(BackendError, match="corrupt file"):
        async with backend:
            backend.fail(BackendError("corrupt file"), operations="clear")
    assert backend.explicitly_closed
