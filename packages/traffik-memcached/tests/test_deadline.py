"""The per-command deadline, including the small equivalent of `asyncio.timeout` used before 3.11."""

from __future__ import annotations

import asyncio

import pytest

from traffik.backends.memcached._deadline import _Deadline, deadline

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("make", [deadline, _Deadline], ids=["deadline", "backport"])
async def test_a_slow_block_times_out(make: type) -> None:
    with pytest.raises(asyncio.TimeoutError):
        async with make(0.01):
            await asyncio.sleep(5)


@pytest.mark.parametrize("make", [deadline, _Deadline], ids=["deadline", "backport"])
async def test_a_quick_block_is_untouched(make: type) -> None:
    async with make(5):
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)  # the cancelled timer never fires later


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    async def block() -> None:
        async with _Deadline(5):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(block())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
