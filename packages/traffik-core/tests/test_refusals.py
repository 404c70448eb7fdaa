"""`RefusedClients`: a refusal is remembered on the backend's clock, and a clock set back forgets it."""

from __future__ import annotations

from traffik.decision import Decision
from traffik.refusals import REMEMBERED_MS, RefusedClients


def test_a_refusal_stands_until_its_wait_ends_and_no_longer_once_the_clock_went_back() -> None:
    refused = RefusedClients()
    rates, strategy = ("4/min",), object()
    refused.remember("k", rates, 1, Decision(False, 15_000, 0, 60_000, 4), 1_000_000, strategy)
    standing = refused.check("k", rates, 1, 1_000_500, strategy)
    assert standing is not None and standing.wait_ms == 14_500 and standing.reset_ms == 59_500
    # The clock stepped back 10 minutes: the wait left would be 615 s, which the store may not
    # say (it may admit the hit); the store is asked again.
    assert refused.check("k", rates, 1, 400_000, strategy) is None
    assert len(refused) == 0
    refused.remember("k", rates, 1, Decision(False, 15_000, 0, 60_000, 4), 1_000_000, strategy)
    assert refused.check("k", rates, 1, 1_015_000, strategy) is None  # its wait is over


def test_a_refusal_is_remembered_for_a_second_at_most() -> None:
    """Another process may give the client its budget back meanwhile (`python -m traffik
    reset`, a refund, `reset()`): past `REMEMBERED_MS` the store is asked again, so such a
    change reaches every process within a second, not at the end of a wait of an hour."""
    refused = RefusedClients()
    rates, strategy = ("30/h",), object()
    refused.remember("k", rates, 1, Decision(False, 3_600_000, 0, 3_600_000, 30), 0, strategy)
    standing = refused.check("k", rates, 1, REMEMBERED_MS - 1, strategy)
    assert standing is not None and standing.wait_ms == 3_600_000 - REMEMBERED_MS + 1
    assert refused.check("k", rates, 1, REMEMBERED_MS, strategy) is None
    assert len(refused) == 0
    assert REMEMBERED_MS <= 1_000


def test_a_refusal_of_a_cost_never_admitted_tells_its_whole_wait_each_time() -> None:
    # The store tells such a hit one period every time; remembered, it was told less by the
    # time since (9,999 ms where the store says 10,000).
    refused = RefusedClients()
    rates, strategy = ("1/10s",), object()
    never = Decision(False, 10_000, 0, 10_000, 1)
    refused.remember("k", rates, 5, never, 0, strategy, never=True)
    standing = refused.check("k", rates, 5, 1, strategy)
    assert standing is not None and (standing.wait_ms, standing.reset_ms) == (10_000, 10_000)
    assert standing is not never  # (a copy: the caller may note when it was asked)
