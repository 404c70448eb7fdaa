"""spec/core.md, audited claim by claim: what no other test of its area pinned down.

Locks (§4.2) refuse settings that break mutual exclusion; discovery (§8) builds by name or
URL; strategy state (§2.1) round-trips through any store that keeps strings.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from traffik.backends import available, create_backend, get_backend_class
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import BackendNotFoundError, ConfigurationError, LockAcquisitionError
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES
from traffik.strategies.state import decode_state, encode_state

pytestmark = pytest.mark.anyio


# -- §4.2 backend.lock() ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"ttl": 0}, "backend.lock('job'): ttl=0 must be a finite number of seconds > 0"),
        ({"ttl": -1}, "ttl=-1 must be a finite number of seconds > 0"),
        ({"ttl": "soon"}, "ttl='soon' is not a number of seconds"),
        ({"blocking_timeout": -1}, "blocking_timeout=-1 must be a finite number"),
        ({"blocking_timeout": "x"}, "blocking_timeout='x' is not a number"),
    ],
)
async def test_lock_refuses_a_ttl_or_wait_that_breaks_it(options: dict, fragment: str) -> None:
    """A TTL of 0 or less expired as the lock was taken: every task got in at once and
    their releases failed; a wrong type failed with a bare `TypeError`."""
    backend = InMemoryBackend(namespace="locks")
    with pytest.raises(ConfigurationError) as info:
        backend.lock("job", **options)
    assert fragment in str(info.value)


async def test_lock_checks_a_default_changed_after_construction() -> None:
    backend = InMemoryBackend(namespace="locks")
    backend.lock_ttl = -5  # the attribute stays writable, as in traffik 1.2
    with pytest.raises(ConfigurationError, match="ttl=-5"):
        backend.lock("job")


async def test_a_lock_with_a_ttl_excludes_other_tasks() -> None:
    backend = InMemoryBackend(namespace="locks", lock_ttl=5)
    inside = peak = 0

    async def work() -> None:
        nonlocal inside, peak
        async with backend.lock("job"):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(work() for _ in range(5)))
    assert peak == 1


async def test_lock_blocking_timeout_is_honoured_across_tasks() -> None:
    """§5.2 [BUG]: the in-memory lock ignored `blocking_timeout` and waited forever."""
    backend = InMemoryBackend(namespace="locks")
    held, done = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with backend.lock("job"):
            held.set()
            await done.wait()

    holder = asyncio.create_task(hold())
    await held.wait()
    started = time.monotonic()
    with pytest.raises(LockAcquisitionError, match=r"within 0\.1s"):
        async with backend.lock("job", blocking_timeout=0.1):
            pass
    assert time.monotonic() - started < 1
    with pytest.raises(LockAcquisitionError, match="without blocking"):
        async with backend.lock("job", blocking=False):
            pass
    done.set()
    await holder


async def test_many_distinct_lock_names_at_once() -> None:
    """§5.1 [BUG]: more than 512 distinct names in flight raised `LockPoolError`."""
    backend = InMemoryBackend(namespace="locks")
    gate = asyncio.Event()

    async def hold(i: int) -> None:
        async with backend.lock(f"client-{i}"):
            await gate.wait()

    tasks = [asyncio.create_task(hold(i)) for i in range(700)]
    await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(*tasks) == [None] * 700


# -- §8 discovery -----------------------------------------------------------------------------


def test_create_backend_by_name_or_url() -> None:
    by_name = create_backend("InMemory", namespace="by-name")
    by_url = create_backend("memory://by-url")
    assert isinstance(by_name, InMemoryBackend) and by_name.namespace == "by-name"
    assert isinstance(by_url, InMemoryBackend) and by_url.namespace == "by-url"
    assert get_backend_class("MEMORY") is InMemoryBackend
    assert available()["inmemory"] == "traffik.backends.inmemory:InMemoryBackend"


def test_an_unknown_backend_lists_the_installed_ones() -> None:
    with pytest.raises(BackendNotFoundError) as info:
        create_backend("nosuch")
    assert "'nosuch'" in str(info.value) and "inmemory" in str(info.value)
    assert isinstance(info.value, ConfigurationError)


# -- §2.1 strategy state ----------------------------------------------------------------------


def test_state_is_text_of_whole_numbers_and_corrupt_state_is_none() -> None:
    """§2.1 [DECIDE]: comma-separated whole numbers, not native-endian `struct` bytes."""
    state = [1_700_000_000_123, -4, 0, 2**53 - 1]
    assert encode_state(state) == "1700000000123,-4,0,9007199254740991"
    assert decode_state(encode_state(state)) == state
    assert decode_state(b"5,6") == [5, 6]  # a client without decode_responses
    assert decode_state("") == []
    for corrupt in ("\x00\x01", "1.5,2", "nan", "1,,2"):
        assert decode_state(corrupt) is None


@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=lambda s: s.__name__)
async def test_corrupt_state_starts_a_fresh_key(strategy: type) -> None:
    backend = InMemoryBackend(namespace="corrupt")
    rate = Rate.parse("2/min")
    key = backend.get_key("client") + strategy.suffix
    await backend.set(key, "\x00garbage\xff")
    waits = [await strategy()("client", rate, backend, 1) for _ in range(3)]
    assert waits[:2] == [0, 0] and waits[2] > 0


# -- §2.1 a strategy is any `async (key, rate, backend, cost) -> wait_ms` ----------------------


def connection() -> object:
    from starlette.requests import Request

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("1.2.3.4", 1)}
    return Request(scope)


async def outcome(wait: object) -> object:
    from traffik import HTTPThrottle
    from traffik.exceptions import ConnectionThrottled
    from traffik.registry import ThrottleRegistry

    calls = []

    async def strategy(key, rate, backend, cost):  # type: ignore[no-untyped-def]
        calls.append((key, rate, backend, cost))
        return wait

    throttle = HTTPThrottle(
        "audit:plain",
        "2/min",
        backend=InMemoryBackend(namespace="plain"),
        strategy=strategy,
        registry=ThrottleRegistry(),
    )
    try:
        await throttle.hit(connection())
    except ConnectionThrottled as refused:
        return refused.headers["Retry-After"]
    finally:
        assert len(calls) == 1 and calls[0][1] == Rate.parse("2/min") and calls[0][3] == 1
    return "allowed"


@pytest.mark.parametrize(
    ("wait", "answer"),
    [(0, "allowed"), (0.0, "allowed"), (-5, "allowed"), (1500.5, "2"), (60_000, "60")],
)
async def test_a_plain_function_strategy(wait: float, answer: str) -> None:
    assert await outcome(wait) == answer


async def test_a_strategy_returning_no_number_is_a_configuration_error() -> None:
    """It used to reach `on_error` as a bare `ValueError` and throttle every request."""
    with pytest.raises(ConfigurationError) as info:
        await outcome("soon")
    assert "returned 'soon' (str); return a wait in milliseconds" in str(info.value)
