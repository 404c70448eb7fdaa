"""What is specific to `InMemoryBackend`: its bound on keys, its sweeping, and its lock-free step."""

from __future__ import annotations

import pytest

from traffik import InMemoryBackend, ManualClock, Rate
from traffik.exceptions import BackendCapacityError, ConfigurationError
from traffik.strategies import FixedWindow, TokenBucket

pytestmark = pytest.mark.anyio


async def test_usable_without_initialise_and_reset_before_use_is_harmless() -> None:
    backend = InMemoryBackend(namespace="test", persistent=False)
    await backend.reset()
    assert await FixedWindow()("k", Rate.parse("1/min"), backend) == 0


async def test_expired_keys_are_swept_without_being_read() -> None:
    clock = ManualClock()
    backend = InMemoryBackend(clock=clock, sweep_interval=5)
    for i in range(2000):
        await backend.set(f"k{i}", "v", expire=1)
    clock.advance(10)
    for i in range(10):  # writes drive the sweep, a chunk at a time
        await backend.set(f"fresh{i}", "v")
    assert len(backend._data) == 10


async def test_full_store_refuses_new_keys_but_keeps_counting_old_ones() -> None:
    clock = ManualClock()
    backend = InMemoryBackend(clock=clock, max_keys=3)
    strategy, rate = FixedWindow(), Rate.parse("2/min")
    for client in ("a", "b", "c"):
        assert await strategy(client, rate, backend) == 0
    with pytest.raises(BackendCapacityError, match="max_keys=3"):
        await strategy("d", rate, backend)
    # "a" is not reset by the flood: its second hit counts, its third is rejected
    assert await strategy("a", rate, backend) == 0
    assert await strategy("a", rate, backend) > 0
    clock.advance(61)  # once keys expire, room returns
    assert await strategy("d", rate, backend) == 0


async def test_state_expires_when_it_no_longer_matters() -> None:
    clock = ManualClock()
    backend = InMemoryBackend(clock=clock)
    await TokenBucket()("k", Rate.parse("60/min"), backend)
    assert len(await backend.keys()) == 1
    clock.advance(1.001)  # the bucket is full again: its state is gone
    assert await backend.keys() == []


def test_bad_settings() -> None:
    with pytest.raises(ConfigurationError, match="max_keys=0"):
        InMemoryBackend(max_keys=0)
    with pytest.raises(ConfigurationError, match="namespace=''"):
        InMemoryBackend(namespace="")
    with pytest.raises(ConfigurationError, match="on_error='ignore'"):
        InMemoryBackend(on_error="ignore")
