"""What is specific to `InMemoryBackend`: its bound on keys, its sweeping, and its lock-free step."""

from __future__ import annotations

import subprocess
import sys

import pytest

from traffik import InMemoryBackend, ManualClock, Rate
from traffik.exceptions import BackendCapacityError, BackendError, ConfigurationError
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


async def test_a_clock_set_back_does_not_put_off_sweeping() -> None:
    """The sweeps' schedule follows the clock: set back (an NTP step, a VM restored), the next
    pass is due at once, not once the clock is back where it was. A store refusing new keys
    makes room from the keys that expired since, and expired keys are swept by writes."""
    clock = ManualClock()
    backend = InMemoryBackend(clock=clock, max_keys=3, at_capacity="refuse", sweep_interval=5)
    for i in range(3):
        await backend.set(f"k{i}", "v", expire=1)
    clock.advance(2)
    await backend.set("kept", "v")  # (a full store's sweep: the next is due in a second)
    clock.set(clock() - 86_400)  # a day back
    await backend.set("a", "v", expire=1)
    await backend.set("b", "v", expire=1)
    clock.advance(2)
    await backend.set("new", "v")  # "a" and "b" have expired: room, not BackendCapacityError
    assert sorted(await backend.keys()) == ["kept", "new"]
    roomy = InMemoryBackend(clock=clock, sweep_interval=5)
    await roomy.set("first", "v")  # (the next pass is due in 5 s)
    clock.set(clock() - 86_400)
    for i in range(2000):
        await roomy.set(f"k{i}", "v", expire=1)
    clock.advance(10)
    for i in range(10):  # writes drive the sweep, a chunk at a time
        await roomy.set(f"fresh{i}", "v")
    assert len(roomy._data) == 11


async def test_refuse_policy_keeps_counting_old_keys_and_refuses_new_ones() -> None:
    clock = ManualClock()
    backend = InMemoryBackend(clock=clock, max_keys=3, at_capacity="refuse")
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


async def test_evict_policy_serves_new_clients_and_evicts_the_key_nearest_to_expiry() -> None:
    clock = ManualClock()
    backend = InMemoryBackend(clock=clock, max_keys=3)
    strategy = FixedWindow()
    assert await strategy("hourly", Rate.parse("5/hour"), backend) == 0
    assert await strategy("daily", Rate.parse("5/day"), backend) == 0
    assert await strategy("minute", Rate.parse("5/min"), backend) == 0
    assert await strategy("newcomer", Rate.parse("5/hour"), backend) == 0  # never refused
    left = {key.split(":")[1] for key in await backend.keys()}
    assert left == {"hourly", "daily", "newcomer"}  # the minute window was nearest to its end


async def test_a_flood_of_new_clients_mostly_evicts_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = InMemoryBackend(clock=ManualClock(), max_keys=100)
    strategy = TokenBucket()
    busy = Rate.parse("100/hour")
    for _ in range(50):  # a heavy user: its bucket is far from full, so it expires late
        await strategy("heavy", busy, backend)
    with caplog.at_level("WARNING", logger="traffik"):
        for n in range(5000):
            await strategy(f"flood-{n}", Rate.parse("100/hour"), backend)
    assert "inmemory:heavy:tb" in await backend.keys()
    assert (await strategy.get_stat("heavy", busy, backend)).hits_remaining == 50
    assert len(caplog.records) == 1  # no line per request at the cap


def test_each_new_backend_warns_when_it_fills() -> None:
    # A backend built after another was freed often gets the freed one's id(): its first
    # "is full" warning must not be taken for a repeat of the old backend's. In a process of
    # its own, where nothing (pytest's log capture) keeps the freed backends alive.
    code = """if True:
        import asyncio, gc, logging
        from traffik import InMemoryBackend, ManualClock
        warned = []
        handler = logging.Handler()
        handler.emit = lambda record: warned.append(record.getMessage())
        logging.getLogger("traffik").addHandler(handler)
        async def fill_one_after_another():
            ids = set()
            made = 0
            # Whether the allocator hands a freed id() out again varies from run to run: go
            # on (within bounds) until it has done so a few times.
            while made < 20 or (made - len(ids) < 3 and made < 500):
                backend = InMemoryBackend(clock=ManualClock(), max_keys=1, namespace=f"n{made}")
                ids.add(id(backend))
                made += 1
                await backend.set("a", 1)
                await backend.set("b", 1)
                del backend
                gc.collect()
            print(made, len(ids), [line.split(" is full")[0] for line in warned])
        asyncio.run(fill_one_after_another())
    """
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    made, distinct_ids, warned = out.split(" ", 2)
    assert int(distinct_ids) < int(made)  # ids were reused, so the case was met
    expected = [f"InMemoryBackend(namespace='n{n}')" for n in range(int(made))]
    assert warned.strip() == str(expected)


async def test_a_byte_cap_counts_keys_and_states() -> None:
    backend = InMemoryBackend(clock=ManualClock(), max_bytes=4096, at_capacity="refuse")
    rate = Rate.parse("5/min")
    with pytest.raises(BackendCapacityError, match="max_bytes=4096"):
        for n in range(1000):
            await FixedWindow()("x" * 200 + str(n), rate, backend)
    assert 10 < len(await backend.keys()) < 20  # ~330 bytes per 200-character key


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
    with pytest.raises(ConfigurationError, match="max_bytes=10"):
        InMemoryBackend(max_bytes=10)
    with pytest.raises(ConfigurationError, match=r"at_capacity='drop'.*'evict'"):
        InMemoryBackend(at_capacity="drop")
    with pytest.raises(ConfigurationError, match="namespace=''"):
        InMemoryBackend(namespace="")
    with pytest.raises(ConfigurationError, match="on_error='ignore'"):
        InMemoryBackend(on_error="ignore")


# -- a subclass replacing the store's operations (traffik 1.2's test doubles) -----------------


class _Counting(InMemoryBackend):
    """Counts its primitives and fails on demand, as traffik 1.2 users wrote test doubles."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.calls: list[str] = []
        self.broken = False

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        self.calls.append("increment_with_ttl")
        if self.broken:
            raise BackendError("the double's store is down")
        return await super().increment_with_ttl(key, amount, ttl)

    async def get(self, key: str) -> str | None:
        self.calls.append("get")
        if self.broken:
            raise BackendError("the double's store is down")
        return await super().get(key)


@pytest.mark.parametrize("rate", ["2/min", "2/min;5/h"])
@pytest.mark.parametrize("strategy", [FixedWindow, TokenBucket])
async def test_a_subclass_s_own_operations_decide(strategy: type, rate: str) -> None:
    """A subclass that replaces `increment_with_ttl` or `get` is called on every hit, as the
    DESIGN says ("looked up on the backend instance when it runs"): the in-place steps,
    which would bypass it, are not made for it. Its answers decide, and its failures reach
    the throttle's `on_error`."""
    from starlette.requests import Request

    from traffik import HTTPThrottle, is_throttled

    def make_request() -> Request:
        return Request({"type": "http", "method": "GET", "path": "/", "headers": []})

    store = _Counting(namespace="double")
    failures: list[str] = []

    async def on_error(connection: object, info: dict[str, object]) -> int:
        failures.append(type(info["exception"]).__name__)
        return 0  # let through

    throttle = HTTPThrottle(
        f"double-{strategy.__name__}-{rate}",
        rate=rate,
        strategy=strategy(),
        backend=store,
        on_error=on_error,
        skip_handler=True,
    )
    admitted = []
    for _ in range(3):
        request = make_request()
        await throttle.hit(request)
        admitted.append(not is_throttled(request))
    assert admitted == [True, True, False]
    assert store.calls, "the subclass's operations were never called"
    store.broken = True
    calls = len(store.calls)
    await throttle.hit(make_request())
    assert len(store.calls) > calls and failures == ["BackendError"]
