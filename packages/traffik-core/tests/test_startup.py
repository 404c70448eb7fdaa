"""Entering a backend whose store cannot be reached: started anyway (its circuits open, a warning
says so) unless `fail_fast`; a bad setting still fails the start."""

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
