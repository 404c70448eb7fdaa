"""An app started while memcached cannot be reached: what the operator reads says why.

Memcached opens its connections on first use, so a node that cannot be reached is found by
the start's readiness check, whose own error is only "does not answer". The node's circuit
keeps the store's error (a refused connection, an unexpected reply), and every answer given
at once while it is open names it, as do its log lines."""

from __future__ import annotations

import logging

import pytest

from traffik.backends.health import CircuitState
from traffik.backends.memcached import MemcachedBackend
from traffik.exceptions import CircuitOpenError
from traffik.rates import Rate
from traffik.strategies import FixedWindow
from traffik.testing.servers import free_port

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]

RATE = Rate.parse("1000/hour")


async def test_a_node_down_at_start_up_is_reported_with_the_stores_own_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    backend = MemcachedBackend(
        f"memcached://127.0.0.1:{port}",
        namespace="down-at-start",
        connect_timeout=0.3,
        command_timeout=0.3,
    )
    circuit = backend.circuits[0]
    try:
        with caplog.at_level(logging.WARNING, logger="traffik"):
            async with backend:
                assert circuit.state is not CircuitState.CLOSED
                with pytest.raises(CircuitOpenError) as caught:
                    await FixedWindow().decide("user", RATE, backend, 1)
        for text in (str(circuit.last_error), str(caught.value)):
            assert "refused" in text.lower() and f"127.0.0.1:{port}" in text, text
            assert "does not answer" not in text, text
        opened = [r.getMessage() for r in caplog.records if "in a row" in r.getMessage()]
        assert opened and "refused" in opened[0].lower(), opened
        assert "1 failures" not in caplog.text, caplog.text
        started = [r.getMessage() for r in caplog.records if "at start-up" in r.getMessage()]
        assert started and "refused" in started[0].lower(), started  # (the cause, at once)
    finally:
        await backend.close()
