"""`QuietLog`: one line per kind of event per interval, with the count of those left out."""

from __future__ import annotations

import logging

import pytest

from traffik.logs import QuietLog


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
