"""`QuietLog`: one line per kind of event per interval, with the count of those left out; a
store's failures are one kind, whichever throttle met them."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle, InMemoryBackend
from traffik.exceptions import BackendError, ConnectionThrottled
from traffik.logs import QuietLog
from traffik.rules import Bypass
from traffik.testing import FailingBackend


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    quiet = QuietLog(logging.getLogger("traffik.test"), interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="traffik.test"):
        written = [quiet.log(logging.WARNING, "down", "store %s down", "redis") for _ in range(500)]
        quiet.log(logging.WARNING, "other", "another kind")
        clock.now = 10.0
        quiet.log(logging.WARNING, "down", "store %s down", "redis")
    assert written.count(True) == 1
    assert [r.getMessage() for r in caplog.records if r.name == "traffik.test"] == [
        "store redis down",
        "another kind",
        "store redis down (499 more like it since the last such line, 10s ago)",
    ]


def test_the_count_left_out_says_over_how_long(caplog: pytest.LogCaptureFixture) -> None:
    """The events left out happened since the line before, however long ago that was: an
    outage of 10 s, then one failure an hour later, is not 3 failures in the last 10 s."""
    clock = Clock()
    quiet = QuietLog(logging.getLogger("traffik.test"), interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="traffik.test"):
        for now in (0.0, 4.0, 8.0, 9.0):
            clock.now = now
            quiet.log(logging.WARNING, "down", "store down")
        clock.now = 3600.0
        quiet.log(logging.WARNING, "down", "store down")
    assert [r.getMessage() for r in caplog.records if r.name == "traffik.test"] == [
        "store down",
        "store down (3 more like it since the last such line, 3600s ago)",
    ]


def test_it_remembers_a_bounded_number_of_kinds() -> None:
    quiet = QuietLog(logging.getLogger("traffik.test"), clock=Clock())
    for kind in range(5000):
        quiet.log(logging.DEBUG, kind, "event")
    assert len(quiet._seen) <= 1024


def test_a_line_says_from_how_many_sources_the_left_out_came(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    quiet = QuietLog(
        logging.getLogger("traffik.test"), interval=10, clock=clock, sources="throttles"
    )
    with caplog.at_level(logging.WARNING, logger="traffik.test"):
        for uid in ("a", "b", "c", "a"):
            quiet.log(logging.WARNING, "down", "store down", source=uid)
        clock.now = 10.0
        quiet.log(logging.WARNING, "down", "store down", source="a")
        for _ in range(2):
            quiet.log(logging.WARNING, "down", "store down", source="b")
        clock.now = 20.0
        quiet.log(logging.WARNING, "down", "store down", source="c")
    assert [r.getMessage() for r in caplog.records if r.name == "traffik.test"] == [
        "store down",
        "store down (3 more like it, from 3 throttles, since the last such line, 10s ago)",
        "store down (2 more like it since the last such line, 10s ago)",  # (one source: b)
    ]


# -- failures of a store: one line per store, not per throttle --------------------------------


def _request() -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("1.2.3.4", 1)}
    )


def _failure_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "could not" in r.getMessage()]


@pytest.mark.anyio
async def test_throttles_failing_on_one_store_write_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """100 throttles on one failing store wrote 100 lines per interval (the limit was per
    throttle uid), decisions and `stat` alike; a second store's failure still has a line."""
    backend, other = FailingBackend(InMemoryBackend()), FailingBackend(InMemoryBackend())
    throttles = [
        HTTPThrottle(f"logs:many-{i}", rate="10/min", backend=backend, on_error="allow")
        for i in range(100)
    ]
    lone = HTTPThrottle("logs:other-store", rate="10/min", backend=other, on_error="allow")
    caplog.set_level(logging.WARNING, logger="traffik")
    with backend.failing(BackendError("store down")), other.failing(BackendError("down too")):
        for _ in range(3):
            for throttle in (*throttles, lone):
                await throttle.hit(_request())
                assert await throttle.stat(_request()) is None
    lines = _failure_lines(caplog)
    assert len(lines) == 4, lines  # decisions and stat, on each store
    assert sum("store down" in line for line in lines) == 2
    assert sum("down too" in line for line in lines) == 2


@pytest.mark.anyio
async def test_failures_of_each_throttles_own_code_keep_a_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An identifier that raises is the throttle's code, not the store: each its line."""

    def broken(connection: Any) -> str:
        raise KeyError("x-user")

    backend = InMemoryBackend()
    throttles = [
        HTTPThrottle(f"logs:code-{i}", rate="10/min", backend=backend, identifier=broken)
        for i in range(3)
    ]
    caplog.set_level(logging.WARNING, logger="traffik")
    for throttle in throttles:
        with pytest.raises(ConnectionThrottled):
            await throttle.hit(_request())
    assert len(_failure_lines(caplog)) == 3


def test_a_line_written_carries_its_traceback_those_left_out_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    quiet = QuietLog(logging.getLogger("traffik.test"), interval=10, clock=clock)
    with caplog.at_level(logging.ERROR, logger="traffik.test"):
        for now in (0.0, 1.0, 10.0):
            clock.now = now
            try:
                raise KeyError("x-internal")
            except KeyError:
                quiet.log(logging.ERROR, "rule", "rule failed", exc_info=True)
    records = [r for r in caplog.records if r.name == "traffik.test"]
    assert len(records) == 2
    assert all(r.exc_info is not None and r.exc_info[0] is KeyError for r in records)


@pytest.mark.anyio
async def test_a_rule_that_raises_is_logged_once_per_interval_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A predicate that fails on what a client sends (a header it lacks) wrote an ERROR
    with a traceback per request; the throttle still applies to every one (fail closed)."""
    internal = Bypass(predicate=lambda request: request.headers["x-internal"] == "1")
    throttle = HTTPThrottle(
        "logs:rule", rate="100/min", backend=InMemoryBackend(), rules=[internal]
    )
    caplog.set_level(logging.INFO, logger="traffik")
    for _ in range(50):
        await throttle.hit(_request())
    stat = await throttle.stat(_request())
    assert stat is not None and stat.hits_remaining == 50  # every request counted
    records = [r for r in caplog.records if r.name == "traffik"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.ERROR and records[0].exc_info is not None
    assert "KeyError: 'x-internal'" in records[0].getMessage()
    assert "the throttle applies" in records[0].getMessage()


def test_an_object_s_key_in_a_kind_is_never_a_later_object_s() -> None:
    """A store collected, and a new one made (maybe at the same address, so with the same
    `id`): the new one's failures are a kind of their own, never left out as the old one's."""
    import gc

    from traffik.logs import object_key

    store = InMemoryBackend(namespace="first")
    key = object_key(store)
    assert key == object_key(store) and hash(key) == hash(object_key(store))
    kinds = {(key, BackendError): "seen"}
    del store
    gc.collect()
    later = InMemoryBackend(namespace="later")
    assert object_key(later) != key
    assert (object_key(later), BackendError) not in kinds
    assert object_key(7) == id(7)  # (no weak reference to an int: its `id`)


def test_a_kind_left_by_a_collected_store_is_not_that_of_a_new_one_at_its_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What made a test's first failure go unlogged when an earlier test's store had been
    collected: a new store at the same address. Its failure is written at once."""
    from traffik.logs import object_key

    class Store:
        """A store's stand-in, small enough that CPython gives its address to the next one."""

    quiet = QuietLog(logging.getLogger("traffik.test"), interval=10, clock=Clock())
    store = Store()
    address = id(store)
    with caplog.at_level(logging.WARNING, logger="traffik.test"):
        assert quiet.log(logging.WARNING, (object_key(store), BackendError), "first down")
        del store
        made = [Store()]
        while id(made[-1]) != address and len(made) < 1000:  # (kept: each takes a new slot)
            made.append(Store())
        later = made[-1]
        if id(later) != address:
            pytest.skip("this interpreter gave no new store the collected one's address")
        assert quiet.log(logging.WARNING, (object_key(later), BackendError), "later down")
    assert [r.getMessage() for r in caplog.records] == ["first down", "later down"]
